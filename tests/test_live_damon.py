"""The DAMON access source against an emulated DAMON sysfs (tests/fake_damon.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_damon import FakeDamonKernel, FakeRegion
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, smaps_entry

import kscand.live.linux as live_linux
from kscand.errors import Unsupported
from kscand.live import LinuxMachine
from kscand.live.damon import ConsumedRanges, DamonSettings, DamonSource, Regions, regions_accessed
from kscand.machine import NID_NONE, PAGE_SIZE, PageBatch, ProcessId

BASE = 0x10000000
P1, P2, P3 = ProcessId(101, 1), ProcessId(102, 1), ProcessId(103, 1)


class FakeClock:
    def __init__(self) -> None:
        self.ns = 1_000_000_000

    def __call__(self) -> int:
        return self.ns

    def advance_ms(self, ms: int) -> None:
        self.ns += ms * 1_000_000


def pages(first: int, count: int) -> PageBatch:
    vaddr = (BASE + np.arange(first, first + count, dtype=np.uint64) * PAGE_SIZE).astype(np.uint64)
    n = vaddr.size
    return PageBatch(vaddr, np.zeros(n, np.uint64), np.full(n, NID_NONE, np.int32),
                     np.zeros(n, np.uint32))


@pytest.fixture
def kernel(tmp_path: Path) -> FakeDamonKernel:
    k = FakeDamonKernel(base=tmp_path / "kdamonds", live_pids={101, 102, 103})
    # P1: pages 0-15 hot, 16-31 cold, 32-47 hot.
    k.regions[101] = [
        FakeRegion(BASE, BASE + 16 * PAGE_SIZE, nr_accesses=5),
        FakeRegion(BASE + 16 * PAGE_SIZE, BASE + 32 * PAGE_SIZE, nr_accesses=4),  # < 5 of 20
        FakeRegion(BASE + 32 * PAGE_SIZE, BASE + 48 * PAGE_SIZE, nr_accesses=20),
    ]
    k.regions[102] = [FakeRegion(BASE, BASE + 64 * PAGE_SIZE, nr_accesses=12)]
    k.regions[103] = [FakeRegion(BASE, BASE + 64 * PAGE_SIZE, nr_accesses=8)]
    return k


def source(kernel: FakeDamonKernel, clock: FakeClock, **settings: int) -> DamonSource:
    return DamonSource(settings=DamonSettings(**settings), io=kernel, now_ns=clock)


def test_regions_accessed_lookup() -> None:
    regions = Regions(np.array([10, 30], np.uint64), np.array([20, 40], np.uint64),
                      np.array([1, 0], np.uint64))
    vaddr = np.array([5, 10, 19, 20, 30, 39, 45], dtype=np.uint64)
    assert regions_accessed(regions, vaddr).tolist() == [False, True, True, False, False, False,
                                                         False]
    counts = Regions(regions.start, regions.end, np.array([4, 5], np.uint64))
    assert regions_accessed(counts, vaddr, 5).tolist() == [False] * 4 + [True, True, False]


def test_access_threshold_is_a_share_of_the_samples() -> None:
    assert DamonSettings().min_nr_accesses == 5  # 25 % of 100 ms / 5 ms
    assert DamonSettings(aggr_us=1_000_000).min_nr_accesses == 50
    assert DamonSettings(min_access_share=0.0).min_nr_accesses == 1  # any access


def test_consumed_ranges_merge() -> None:
    consumed = ConsumedRanges()
    consumed.add(10, 20)
    consumed.add(30, 40)
    consumed.add(20, 30)
    assert (consumed.lo, consumed.hi) == ([10], [40])
    assert consumed.mask(np.array([9, 10, 39, 40], np.uint64)).tolist() == [False, True, True,
                                                                            False]


def test_pool_is_allocated_and_released(kernel: FakeDamonKernel) -> None:
    src = source(kernel, FakeClock(), max_kdamonds=3)
    assert kernel.read("nr_kdamonds") == "3"
    assert all(kernel.read(f"{i}/contexts/nr_contexts") == "1" for i in range(3))
    src.test_and_clear_young(P1, pages(0, 4))
    assert kernel.running() == ["0"]
    src.close()
    assert kernel.running() == []
    assert kernel.read("nr_kdamonds") == "0"


def test_kdamonds_of_another_tool_are_left_alone(kernel: FakeDamonKernel) -> None:
    kernel.write("nr_kdamonds", 1)
    kernel.writes.clear()
    with pytest.raises(Unsupported, match="another tool"):
        source(kernel, FakeClock())
    assert kernel.writes == []


def test_no_vaddr_operations(kernel: FakeDamonKernel) -> None:
    kernel.ops = "paddr"
    with pytest.raises(Unsupported, match="CONFIG_DAMON_VADDR"):
        source(kernel, FakeClock())
    assert kernel.read("nr_kdamonds") == "0"  # the pool was released


def test_young_from_regions_reported_once_per_snapshot(kernel: FakeDamonKernel) -> None:
    clock = FakeClock()
    src = source(kernel, clock)
    young = src.test_and_clear_young(P1, pages(0, 48))
    expect = [True] * 16 + [False] * 16 + [True] * 16
    assert young.tolist() == expect
    ctx = "0/contexts/0"
    assert kernel.read(f"{ctx}/targets/0/pid_target") == "101"
    assert kernel.read(f"{ctx}/operations") == "vaddr"
    assert kernel.read(f"{ctx}/schemes/0/access_pattern/nr_accesses/max") != "0"
    # Same snapshot again: the Accessed bits were "cleared" by the first call.
    clock.advance_ms(100)
    assert not src.test_and_clear_young(P1, pages(0, 48)).any()
    # After refresh_ms a new snapshot: accessed again.
    clock.advance_ms(1000)
    assert src.test_and_clear_young(P1, pages(0, 48)).tolist() == expect
    counters = src.counters()
    assert counters["snapshots"] == 2 and counters["snapshot_requests"] == 2
    assert counters["pages_tested"] == 3 * 48
    assert counters["pages_stale"] == 48  # the second call: judged on a reported snapshot
    assert counters["kdamonds_tracking"] == 1 and counters["snapshot_request_errors"] == 0


def test_snapshot_that_arrives_late(kernel: FakeDamonKernel) -> None:
    """The kernel fills tried_regions after the state write returned: read again, no re-request."""
    kernel.fill_lag_reads = 1
    clock = FakeClock()
    src = source(kernel, clock)
    assert not src.test_and_clear_young(P2, pages(0, 8)).any()  # requested, still empty
    clock.advance_ms(10)
    assert src.test_and_clear_young(P2, pages(0, 8)).all()  # appeared meanwhile
    requests = [w for w in kernel.writes if w[1] == "update_schemes_tried_regions"]
    assert len(requests) == 1


def test_pending_request_is_retried_after_a_while(kernel: FakeDamonKernel) -> None:
    kernel.fill_lag_reads = 1000  # the kernel never answers this request
    clock = FakeClock()
    src = source(kernel, clock)
    for _ in range(3):
        src.test_and_clear_young(P2, pages(0, 8))
        clock.advance_ms(1000)
    assert [w[1] for w in kernel.writes].count("update_schemes_tried_regions") == 1
    clock.advance_ms(5000)
    kernel.fill_lag_reads = 0
    assert src.test_and_clear_young(P2, pages(0, 8)).all()
    assert [w[1] for w in kernel.writes].count("update_schemes_tried_regions") == 2


def test_pool_full_then_slot_reused(kernel: FakeDamonKernel) -> None:
    clock = FakeClock()
    src = source(kernel, clock, max_kdamonds=2)
    src.test_and_clear_young(P1, pages(0, 4))
    src.test_and_clear_young(P2, pages(0, 4))
    assert not src.test_and_clear_young(P3, pages(0, 4)).any()
    assert src.nr_untracked == 1
    src.forget(P1)
    assert src.test_and_clear_young(P3, pages(0, 4)).all()
    assert sorted(p.pid for p in src.tracked()) == [102, 103]
    assert kernel.read("0/contexts/0/targets/0/pid_target") == "103"


def test_kdamond_of_an_exited_process_is_reclaimed(kernel: FakeDamonKernel) -> None:
    src = source(kernel, FakeClock(), max_kdamonds=1)
    src.test_and_clear_young(P1, pages(0, 4))
    kernel.kill(101)  # the kdamond stops by itself
    assert src.test_and_clear_young(P2, pages(0, 4)).all()
    assert [p.pid for p in src.tracked()] == [102]


def test_refused_process_is_not_retried(kernel: FakeDamonKernel) -> None:
    src = source(kernel, FakeClock())
    gone = ProcessId(999, 1)
    assert not src.test_and_clear_young(gone, pages(0, 4)).any()
    nr_writes = len(kernel.writes)
    assert not src.test_and_clear_young(gone, pages(0, 4)).any()
    assert len(kernel.writes) == nr_writes
    assert kernel.running() == []


def test_linux_machine_falls_back_to_damon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No page_idle, DAMON vaddr present: LinuxMachine says so and uses it; exit frees it."""
    fake = FakeLinux(tmp_path / "root")
    fake.two_tier()
    fake.add_process(101, "app", start_time=1, smaps=smaps_entry(BASE, BASE + (1 << 20)))
    fake.set_pagemap(101, {BASE + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (2_200_000 + i)
                           for i in range(48)})
    fake.set_kpages(range(2_200_000, 2_200_048), ANON_LRU)
    kernel = FakeDamonKernel(
        base=Path(fake.sysfs) / "kernel/mm/damon/admin/kdamonds",
        live_pids={101},
        regions={101: [FakeRegion(BASE, BASE + 48 * PAGE_SIZE, 14)]},
    )
    monkeypatch.setattr(live_linux, "DamonSource",
                        lambda sysfs: DamonSource(sysfs, io=kernel))
    with LinuxMachine(fake.procfs, fake.sysfs, self_pid=1) as m:
        assert m.access_source_name == "damon"
        assert "CONFIG_IDLE_PAGE_TRACKING" in m.access_source_reason
        assert "using DAMON" in m.access_source_reason
        proc = m.processes()[0]
        young = m.test_and_clear_young(proc, m.read_range(proc, BASE, BASE + 48 * PAGE_SIZE))
        assert young.all()
        assert kernel.running() == ["0"]
        fake.remove_process(101)
        m._proc_list_ns = 0
        assert m.processes() == []
        assert kernel.running() == []
    assert kernel.read("nr_kdamonds") == "0"
