"""The DAMON access source against an emulated DAMON sysfs (tests/fake_damon.py)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_damon import FakeDamonKernel, FakeRegion
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, smaps_entry

import kscand.live.linux as live_linux
from kscand.errors import AccessUnknown, Unsupported
from kscand.live import LinuxMachine
from kscand.live.damon import DamonSource
from kscand.live.damon_sysfs import ConsumedRanges, DamonSettings, Regions, regions_accessed
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


# Tests of what a snapshot says let a step wait for it as long as it takes (the event),
# up to this generous bound; the tests of the step's 100 ms budget use the default.
WAIT_FOR_SNAPSHOT_MS = 60_000


def source(kernel: FakeDamonKernel, clock: FakeClock, **settings: int) -> DamonSource:
    settings.setdefault("max_step_block_ms", WAIT_FOR_SNAPSHOT_MS)
    return DamonSource(settings=DamonSettings(**settings), io=kernel, now_ns=clock)


def wait_until(done: Callable[[], bool], timeout_s: float = 60.0) -> None:
    """Wait for an event (generous bound: a loaded machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout_s
    while not done():
        assert time.monotonic() < deadline, "event did not happen"
        time.sleep(0.005)


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
    # Same snapshot again: nothing new to say (not "not accessed": no observation).
    clock.advance_ms(100)
    with pytest.raises(AccessUnknown):
        src.test_and_clear_young(P1, pages(0, 48))
    # After refresh_ms a new snapshot: accessed again.
    clock.advance_ms(1000)
    assert src.test_and_clear_young(P1, pages(0, 48)).tolist() == expect
    counters = src.counters()
    assert counters["snapshots"] == 2 and counters["snapshot_requests"] == 2
    assert counters["pages_tested"] == 3 * 48
    assert counters["pages_stale"] == 48  # the second call: judged on a reported snapshot
    assert counters["kdamonds_tracking"] == 1 and counters["snapshot_request_errors"] == 0
    assert counters["batches_unknown"] == 1


def test_snapshot_that_arrives_late(kernel: FakeDamonKernel) -> None:
    """The kernel fills tried_regions after the state write returned: the requester
    re-reads them without asking again, and the step gets them."""
    kernel.fill_lag_reads = 1
    clock = FakeClock()
    src = source(kernel, clock)
    assert src.test_and_clear_young(P2, pages(0, 8)).all()
    requests = [w for w in kernel.writes if w[1] == "update_schemes_tried_regions"]
    assert len(requests) == 1
    assert src.counters()["snapshots"] == 1
    src.close()


def test_pending_request_is_retried_after_a_while(kernel: FakeDamonKernel) -> None:
    kernel.fill_lag_reads = 1000  # the kernel never answers this request
    clock = FakeClock()
    src = source(kernel, clock, max_step_block_ms=0)
    for _ in range(3):
        with pytest.raises(AccessUnknown):  # no snapshot yet
            src.test_and_clear_young(P2, pages(0, 8))
        clock.advance_ms(1000)
    wait_until(lambda: src.requester.nr_written == 1)
    assert [w[1] for w in kernel.writes].count("update_schemes_tried_regions") == 1
    clock.advance_ms(5000)  # PENDING_RETRY refresh periods: ask again
    kernel.fill_lag_reads = 0
    with pytest.raises(AccessUnknown):  # asked; no wait allowed
        src.test_and_clear_young(P2, pages(0, 8))
    wait_until(lambda: src.snapshots_ready() == 1)
    assert src.test_and_clear_young(P2, pages(0, 8)).all()
    assert [w[1] for w in kernel.writes].count("update_schemes_tried_regions") == 2
    assert src.counters()["snapshot_requests_expired"] == 1
    src.close()


def test_a_pending_request_cancelled_while_the_requester_waits_on_it(
    kernel: FakeDamonKernel,
) -> None:
    """The guest's DAMON run under load: the process of the one pending request exited
    (cancel()) while the requester polled for its regions; the requester thread died
    with StopIteration, and no snapshot came for anyone after that."""
    kernel.fill_lag_reads = 1_000_000  # the kernel never fills this request's regions
    clock = FakeClock()
    src = source(kernel, clock, max_step_block_ms=0)
    with pytest.raises(AccessUnknown):
        src.test_and_clear_young(P1, pages(0, 8))
    wait_until(lambda: src.requester.nr_written == 1)  # written: pending, polled
    src.forget(P1)
    time.sleep(5 * src.settings.pending_poll_ms / 1000)  # polls that find it gone
    assert src.requester.alive
    kernel.fill_lag_reads = 0
    with pytest.raises(AccessUnknown):
        src.test_and_clear_young(P2, pages(0, 8))
    wait_until(lambda: src.snapshots_ready() == 1)
    assert src.test_and_clear_young(P2, pages(0, 8)).all()
    src.close()


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


def test_kdamond_that_stops_while_we_turn_it_off_is_no_error(
    kernel: FakeDamonKernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The guest's DAMON e2e run: the target exited between the state read ("on") and
    the "off" write, the kernel answered EPERM and the step failed. Counted instead."""
    src = source(kernel, FakeClock(), max_kdamonds=1)
    src.test_and_clear_young(P1, pages(0, 4))
    kernel.kill(101)
    monkeypatch.setattr(src, "_state", lambda slot: "on")  # read just before the kill
    src.forget(P1)
    assert src.counters()["kdamond_stop_raced"] == 1
    assert src.tracked() == []
    monkeypatch.undo()
    assert src.test_and_clear_young(P2, pages(0, 4)).all()  # the slot is reused
    src.close()


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
    settings = DamonSettings(max_step_block_ms=WAIT_FOR_SNAPSHOT_MS)
    monkeypatch.setattr(live_linux, "DamonSource",
                        lambda sysfs: DamonSource(sysfs, settings, io=kernel))
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


# --- a slow kernel: the step never waits for it beyond its budget --------------------------

STEP_BUDGET_S = DamonSettings().max_step_block_ms / 1000
EPSILON_S = 2.0  # scheduling on a loaded machine; a blocked step would take the hour


def step(src: DamonSource, procs: tuple[ProcessId, ...]) -> tuple[float, list[bool | None]]:
    """One engine step's worth of calls: (seconds taken, any page young per process)."""
    t0 = time.monotonic()
    src.begin_step()
    young = [_any_young(src, p) for p in procs]
    return time.monotonic() - t0, young


def _any_young(src: DamonSource, proc: ProcessId) -> bool | None:
    """Whether any page of the batch is young; None when the source knows nothing new."""
    try:
        return bool(src.test_and_clear_young(proc, pages(0, 16)).any())
    except AccessUnknown:
        return None


def test_slow_kernel_never_blocks_a_step(kernel: FakeDamonKernel) -> None:
    """Updates take an hour until the test opens the gate: every step still ends
    within its 100 ms budget, the waits and the stale snapshots are counted, and
    the update writes all come from the requester thread, one kdamond at a time."""
    kernel.update_delay_s = 3600.0
    kernel.gate = threading.Event()
    clock = FakeClock()
    src = DamonSource(io=kernel, now_ns=clock)  # default budget: 100 ms a step
    procs = (P1, P2, P3)
    took: list[float] = []
    for _ in range(5):
        took_s, young = step(src, procs)
        took.append(took_s)
        assert took_s < STEP_BUDGET_S + EPSILON_S
        assert young == [None, None, None]  # no snapshot yet: no observation
    print(f"steps against a kernel taking an hour per update: max {max(took) * 1000:.0f} ms")
    c = src.counters()
    # Each step waited once (P1's request, in the kernel), then its budget was gone.
    assert (c["snapshot_waits"], c["snapshot_wait_timeouts"]) == (5, 5)
    assert c["snapshot_requests"] == 3 and c["snapshots"] == 0
    assert len(kernel.update_threads) == 1  # one command in the kernel at a time
    assert threading.get_ident() not in kernel.update_threads

    kernel.gate.set()  # the kernel catches up: all three snapshots arrive
    wait_until(lambda: src.snapshots_ready() == 3)
    took_s, young = step(src, procs)
    assert young == [True, True, True]
    kernel.gate.clear()  # slow again

    clock.advance_ms(1000)  # every snapshot is due for a refresh
    took_s, young = step(src, procs)
    assert took_s < STEP_BUDGET_S + EPSILON_S
    assert young == [None, None, None]  # the old snapshots, already reported
    c = src.counters()
    assert c["batches_on_stale_snapshot"] == 3
    assert c["snapshot_requests"] == 6 and c["snapshots"] == 3
    assert threading.get_ident() not in kernel.update_threads

    t0 = time.monotonic()
    src.close()  # the thread is in the kernel: turning the kdamond off ends the command
    assert not src.requester.alive
    assert time.monotonic() - t0 < EPSILON_S + 1.0
    assert src.counters()["requester_stop_timeouts"] == 0
    assert kernel.running() == [] and kernel.read("nr_kdamonds") == "0"


def test_busy_kernel_command_is_counted_and_retried(kernel: FakeDamonKernel) -> None:
    """Another tool's command holds the kernel's one request slot: -EBUSY is counted,
    the step goes on, and the next refresh asks again."""
    clock = FakeClock()
    src = source(kernel, clock, max_step_block_ms=0)
    kernel._cmd_kdamond = "other"
    with pytest.raises(AccessUnknown):
        src.test_and_clear_young(P1, pages(0, 4))
    wait_until(lambda: src.counters()["snapshot_request_errors"] == 1)
    kernel._cmd_kdamond = None
    clock.advance_ms(1000)
    with pytest.raises(AccessUnknown):
        src.test_and_clear_young(P1, pages(0, 4))
    wait_until(lambda: src.snapshots_ready() == 1)
    assert src.test_and_clear_young(P1, pages(0, 16)).all()
    assert src.counters()["snapshot_requests"] == 2
    src.close()


def test_close_twice_and_thread_ends_when_idle(kernel: FakeDamonKernel) -> None:
    src = source(kernel, FakeClock())
    src.test_and_clear_young(P1, pages(0, 4))
    src.close()
    src.close()
    assert not src.requester.alive
