"""LinuxMachine against a fake procfs/sysfs tree: processes, identity, VMAs, pages, moves."""

from __future__ import annotations

import ctypes
import dataclasses
import errno
from pathlib import Path

import numpy as np
import pytest
from fake_linux import (
    ANON_LRU,
    PM_EXCLUSIVE,
    PM_FILE,
    PM_PRESENT,
    FakeLinux,
    kpf,
    smaps_entry,
    write_u64s,
)

from kscand.core.filters import page_skip_codes
from kscand.core.stats import PageSkip
from kscand.errors import ProcessGone, Unsupported
from kscand.live import LinuxMachine, ProcessSelection
from kscand.live.procfs import PF_KTHREAD
from kscand.machine import HPAGE_PMD_NR, NID_NONE, PAGE_SIZE, PageFlag, ProcessId, U64Array

BLOCK_PAGES = (128 << 20) >> 12
NODE1_PFN = 8 * BLOCK_PAGES  # first PFN of node 1 in FakeLinux.two_tier()
VMA = 0x10000000  # a 2 MiB-aligned anon VMA of 4 MiB
VMA_END = VMA + (4 << 20)
PID = 4242


class RecordingMover:
    """Stands in for move_pages(2): records calls, answers like the kernel would."""

    def __init__(self, gone: bool = False) -> None:
        self.calls: list[tuple[int, list[int], int | None]] = []
        self.gone = gone

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> np.ndarray:
        self.calls.append((pid, vaddrs.tolist(), nid))
        if self.gone:
            raise ProcessGone(f"move_pages(pid {pid}): no such process")
        return np.full(vaddrs.shape, nid, dtype=np.int32)

    def query(self, pid: int, vaddrs: U64Array) -> np.ndarray:
        self.calls.append((pid, vaddrs.tolist(), None))
        return np.full(vaddrs.shape, 1, dtype=np.int32)


@pytest.fixture
def fake(tmp_path: Path) -> FakeLinux:
    fake = FakeLinux(tmp_path)
    fake.two_tier()
    fake.enable_page_idle(max_pfn=NODE1_PFN + BLOCK_PAGES)
    fake.add_process(PID, "app", start_time=5000, smaps=smaps_entry(VMA, VMA_END))
    return fake


def machine_on(fake: FakeLinux, **kwargs: object) -> LinuxMachine:
    m = LinuxMachine(fake.procfs, fake.sysfs, self_pid=1, **kwargs)  # type: ignore[arg-type]
    m.mover = RecordingMover()  # type: ignore[assignment]
    return m


def anon_page(pfn: int) -> int:
    return PM_PRESENT | PM_EXCLUSIVE | pfn


# --- processes and identity ------------------------------------------------------------------


def test_processes_skip_kernel_threads_zombies_self_and_garbage(fake: FakeLinux) -> None:
    fake.add_process(2, "kthreadd", flags=PF_KTHREAD)
    fake.add_process(77, "zombie", state="Z")
    fake.add_process(1, "kscand")  # the daemon's own pid (self_pid=1)
    fake.add_process(900, "bad) stat")
    fake.write_proc("900/stat", "900 (bad) stat) S 1 2\n")  # too few fields
    fake.add_process(901, "ok (x) y", start_time=42)
    fake.write_proc("notapid/stat", "")
    with machine_on(fake) as m:
        assert m.processes() == [ProcessId(901, 42), ProcessId(PID, 5000)]


def test_selection_union_of_pids_comms_cgroups(fake: FakeLinux) -> None:
    fake.add_process(10, "redis-server", cgroup="/system.slice/redis.service")
    fake.add_process(11, "worker", cgroup="/batch.slice/job-1.scope")
    fake.add_process(12, "worker", cgroup="/batch.slicer")
    fake.add_process(13, "other")
    sel = ProcessSelection(
        pids=(13,), comm_patterns=("redis*",), cgroups=("/sys/fs/cgroup/batch.slice",)
    )
    with machine_on(fake, selection=sel) as m:
        assert [p.pid for p in m.processes()] == [10, 11, 13]
    with machine_on(fake, selection=ProcessSelection(pids=(13, 99999))) as m:
        assert [p.pid for p in m.processes()] == [13]


def test_process_list_is_cached_for_a_second(fake: FakeLinux) -> None:
    with machine_on(fake) as m:
        first = m.processes()
        fake.add_process(50, "late")
        assert m.processes() == first
        m._proc_list_ns = 0  # let the cache expire
        assert ProcessId(50, 1000) in m.processes()


def test_pid_reuse_is_process_gone(fake: FakeLinux) -> None:
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        assert m.is_alive(proc)
        fake.add_process(PID, "impostor", start_time=9999, smaps=smaps_entry(VMA, VMA_END))
        assert not m.is_alive(proc)
        with pytest.raises(ProcessGone):
            m.read_range(proc, VMA, VMA + PAGE_SIZE)
        with pytest.raises(ProcessGone):
            m.vmas(proc)
        with pytest.raises(ProcessGone):
            m.move_pages(proc, np.array([VMA], dtype=np.uint64), 0)
        assert m.mover.calls == []  # type: ignore[attr-defined]


def test_describe_gives_comm_and_cgroup_and_checks_identity(fake: FakeLinux) -> None:
    fake.add_process(PID + 1, "my (odd) name", start_time=7, cgroup="/system.slice/db.service",
                     smaps=smaps_entry(VMA, VMA_END))
    with machine_on(fake) as m:
        proc = m.process_id(PID + 1)
        info = m.describe(proc)
        assert info.comm == "my (odd) name" and info.cgroup == "/system.slice/db.service"
        fake.add_process(PID + 1, "impostor", start_time=8, smaps=smaps_entry(VMA, VMA_END))
        with pytest.raises(ProcessGone):
            m.describe(proc)


def test_vanished_process_is_process_gone(fake: FakeLinux) -> None:
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        fake.remove_process(PID)
        assert not m.is_alive(proc)
        for call in (lambda: m.vmas(proc), lambda: m.read_range(proc, VMA, VMA_END),
                     lambda: m.read_pages(proc, np.array([VMA], dtype=np.uint64))):
            with pytest.raises(ProcessGone):
                call()
        with pytest.raises(ProcessGone):
            m.process_id(PID)


def test_move_pages_checks_identity_and_maps_esrch(fake: FakeLinux) -> None:
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        vaddrs = np.array([VMA, VMA + PAGE_SIZE], dtype=np.uint64)
        assert m.move_pages(proc, vaddrs, 0).tolist() == [0, 0]
        m.mover = RecordingMover(gone=True)  # type: ignore[assignment]
        with pytest.raises(ProcessGone):
            m.move_pages(proc, vaddrs, 0)


# --- VMAs ------------------------------------------------------------------------------------


def test_vmas_use_smaps_flags_and_reread_on_change(fake: FakeLinux) -> None:
    fake.add_process(
        PID, start_time=5000,
        smaps=smaps_entry(VMA, VMA_END) + smaps_entry(VMA_END, VMA_END + 0x1000, "rw-s",
                                                       "rd wr sh io pf", inode=3, path="/dev/x"),
    )
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        vmas = m.vmas(proc)
        assert [v.start for v in vmas] == [VMA, VMA_END]
        assert "IO" in repr(vmas[1].flags)
        # A new mapping appears in maps: smaps is read again for its VmFlags.
        new = smaps_entry(0x20000000, 0x20001000, "rw-p", "rd wr mm")
        fake.write_proc(f"{PID}/smaps", (Path(fake.procfs) / str(PID) / "smaps").read_text() + new)
        fake.write_proc(f"{PID}/maps", (Path(fake.procfs) / str(PID) / "maps").read_text()
                        + new.splitlines()[0] + "\n")
        assert "MIXEDMAP" in repr(m.vmas(proc)[-1].flags)


# --- pages -----------------------------------------------------------------------------------


def test_read_range_decodes_pages(fake: FakeLinux) -> None:
    fake.set_pagemap(PID, {
        VMA: anon_page(100),  # node 0
        VMA + 1 * PAGE_SIZE: anon_page(NODE1_PFN + 5),  # node 1
        VMA + 2 * PAGE_SIZE: PM_PRESENT | (NODE1_PFN + 6),  # shared anon
        VMA + 4 * PAGE_SIZE: anon_page(1 << 40),  # past every memory block and kpageflags
    })
    fake.set_kpage(100, ANON_LRU)
    fake.set_kpage(NODE1_PFN + 5, ANON_LRU)
    fake.set_kpage(NODE1_PFN + 6, ANON_LRU, count=2)
    with machine_on(fake) as m:
        batch = m.read_range(m.process_id(PID), VMA, VMA + 8 * PAGE_SIZE)
    assert batch.vaddr.tolist() == [VMA + i * PAGE_SIZE for i in range(8)]
    assert batch.pfn.tolist() == [100, NODE1_PFN + 5, NODE1_PFN + 6, 0, 1 << 40, 0, 0, 0]
    assert batch.nid.tolist() == [0, 1, 1, NID_NONE, NID_NONE, NID_NONE, NID_NONE, NID_NONE]
    codes = page_skip_codes(batch.flags).tolist()
    assert codes == [PageSkip.ELIGIBLE, PageSkip.ELIGIBLE, PageSkip.SHARED, PageSkip.NOT_PRESENT,
                     PageSkip.ZONE_DEVICE] + [PageSkip.NOT_PRESENT] * 3


def test_kpagecount_is_read_only_where_it_decides(fake: FakeLinux) -> None:
    """SHARED for file pages comes from kpagecount; exclusive pages never need it."""
    fake.set_pagemap(PID, {
        VMA: PM_PRESENT | PM_FILE | 300,  # file page, not exclusive, mapped once
        VMA + PAGE_SIZE: PM_PRESENT | PM_FILE | 301,  # file page mapped by two processes
        VMA + 2 * PAGE_SIZE: PM_PRESENT | PM_FILE | PM_EXCLUSIVE | 302,  # single mapper
    })
    fake.set_kpage(300, kpf("LRU", "MMAP"), count=1)
    fake.set_kpage(301, kpf("LRU", "MMAP"), count=2)
    # An exclusive page cannot have another mapper: its kpagecount is not consulted.
    fake.set_kpage(302, kpf("LRU", "MMAP"), count=7)
    with machine_on(fake) as m:
        batch = m.read_range(m.process_id(PID), VMA, VMA + 3 * PAGE_SIZE)
    assert page_skip_codes(batch.flags).tolist() == [PageSkip.ELIGIBLE, PageSkip.SHARED,
                                                     PageSkip.ELIGIBLE]


def test_bogus_kpf_ksm_is_ignored_where_the_probe_found_it(fake: FakeLinux) -> None:
    """Kernels 6.9+ without the fix set KPF_KSM on every anon page: sharing then comes
    from PM_MMAP_EXCLUSIVE and kpagecount alone (a real KSM page is never exclusive)."""
    fake.set_pagemap(PID, {
        VMA: anon_page(100),  # exclusive anon page that the kernel calls KSM
        VMA + PAGE_SIZE: PM_PRESENT | 101,  # not exclusive: shared however KPF_KSM reads
    })
    fake.set_kpages([100, 101], ANON_LRU | kpf("KSM"))
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        trusted = m.read_range(proc, VMA, VMA + 2 * PAGE_SIZE)
        m.features = dataclasses.replace(m.features, kpf_ksm_reliable=False)
        ignored = m.read_range(proc, VMA, VMA + 2 * PAGE_SIZE)
    assert page_skip_codes(trusted.flags).tolist() == [PageSkip.SHARED, PageSkip.SHARED]
    assert page_skip_codes(ignored.flags).tolist() == [PageSkip.ELIGIBLE, PageSkip.SHARED]
    assert not ignored.flags[0] & PageFlag.KSM


def test_truncated_pagemap_means_not_present(fake: FakeLinux) -> None:
    fake.set_pagemap(PID, {VMA: anon_page(100)})  # the file ends after the first entry
    fake.set_kpage(100, ANON_LRU)
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        batch = m.read_range(proc, VMA, VMA_END)
        assert len(batch) == (VMA_END - VMA) // PAGE_SIZE
        present = (batch.flags & PageFlag.PRESENT) != 0
        assert np.flatnonzero(present).tolist() == [0]
        # A torn final entry (4 of 8 bytes) is dropped, not decoded.
        path = Path(fake.procfs) / str(PID) / "pagemap"
        path.write_bytes(path.read_bytes() + b"\xff\xff\xff\xff")
        torn = m.read_range(proc, VMA, VMA_END)
        assert np.flatnonzero(torn.flags & PageFlag.PRESENT).tolist() == [0]


def test_read_pages_scattered(fake: FakeLinux) -> None:
    pages = {VMA + i * PAGE_SIZE: anon_page(NODE1_PFN + i) for i in range(0, 1024, 3)}
    fake.set_pagemap(PID, pages)
    fake.set_kpages(range(NODE1_PFN, NODE1_PFN + 1024), ANON_LRU)
    want = np.array([VMA, VMA + 3 * PAGE_SIZE, VMA + 700 * PAGE_SIZE, VMA + 999 * PAGE_SIZE,
                     VMA + 1000 * PAGE_SIZE], dtype=np.uint64)
    with machine_on(fake) as m:
        batch = m.read_pages(m.process_id(PID), want)
    assert batch.pfn.tolist() == [NODE1_PFN, NODE1_PFN + 3, 0, NODE1_PFN + 999, 0]
    assert batch.nid.tolist() == [1, 1, NID_NONE, 1, NID_NONE]


def map_thp(fake: FakeLinux, vaddr: int, head_pfn: int) -> None:
    fake.set_pagemap(PID, {vaddr + i * PAGE_SIZE: anon_page(head_pfn + i)
                           for i in range(HPAGE_PMD_NR)})
    fake.set_kpage(head_pfn, ANON_LRU | kpf("THP", "COMPOUND_HEAD"))
    fake.set_kpages(range(head_pfn + 1, head_pfn + HPAGE_PMD_NR),
                    kpf("THP", "COMPOUND_TAIL", "ANON", "MMAP"))


def test_thp_head_and_tails(fake: FakeLinux) -> None:
    map_thp(fake, VMA, NODE1_PFN + 512)
    with machine_on(fake) as m:
        batch = m.read_range(m.process_id(PID), VMA, VMA + (2 << 20))
    codes = page_skip_codes(batch.flags)
    assert codes[0] == PageSkip.ELIGIBLE_THP and batch.flags[0] & PageFlag.THP_HEAD
    assert (codes[1:] == PageSkip.THP_TAIL).all()
    assert batch.pfn[0] == NODE1_PFN + 512


# --- page_idle -------------------------------------------------------------------------------


def test_page_idle_chosen_when_present(fake: FakeLinux) -> None:
    with machine_on(fake) as m:
        assert m.access_source_name == "page_idle"
        assert "page_idle" in m.access_source_reason


def test_test_and_clear_young_reads_and_writes_whole_words(fake: FakeLinux) -> None:
    # PFNs: two in word 10, one in word 11 (contiguous with 10), one in word 40 (a gap).
    pfns = [10 * 64 + 3, 10 * 64 + 63, 11 * 64, 40 * 64 + 7]
    fake.set_pagemap(PID, {VMA + i * PAGE_SIZE: anon_page(p) for i, p in enumerate(pfns)})
    fake.set_kpages(pfns, ANON_LRU)
    # Before: pfn 10*64+3 was marked idle and not touched since (bit 1); the others
    # read 0 (accessed). Unrelated bits in the same words must survive untouched.
    fake.set_bitmap_words({9: 0xAAAA, 10: (1 << 3) | (1 << 5), 11: 0, 12: 0x5555, 40: 1 << 8})
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        batch = m.read_range(proc, VMA, VMA + 4 * PAGE_SIZE)
        young = m.test_and_clear_young(proc, batch)
    assert young.tolist() == [False, True, True, True]
    words = fake.bitmap_words(0, 64)
    # Written words carry exactly the batch's bits (the kernel ignores 0 bits).
    assert words[10] == (1 << 3) | (1 << 63)
    assert words[11] == 1
    assert words[40] == 1 << 7
    # Words outside the batch were neither read-modified nor written.
    assert words[9] == 0xAAAA and words[12] == 0x5555
    assert all(w == 0 for i, w in enumerate(words) if i not in (9, 10, 11, 12, 40))


def test_page_idle_thp_uses_head_pfn_only(fake: FakeLinux) -> None:
    head = NODE1_PFN + 1024
    map_thp(fake, VMA, head)
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        batch = m.read_range(proc, VMA, VMA + (2 << 20))
        folios = batch.take(np.flatnonzero(page_skip_codes(batch.flags) <= PageSkip.ELIGIBLE_THP))
        assert len(folios) == 1
        assert m.test_and_clear_young(proc, folios).tolist() == [True]
    words = fake.bitmap_words(head // 64, HPAGE_PMD_NR // 64)
    assert words[0] == 1 << (head % 64)  # the head's bit alone
    assert all(w == 0 for w in words[1:])


def test_page_idle_past_max_pfn_is_not_written(fake: FakeLinux) -> None:
    max_pfn = NODE1_PFN + BLOCK_PAGES
    pfns = [64, max_pfn + 64]
    fake.set_pagemap(PID, {VMA: anon_page(pfns[0]), VMA + PAGE_SIZE: anon_page(pfns[1])})
    fake.set_kpages(pfns, ANON_LRU)
    bitmap = Path(fake.sysfs) / "kernel/mm/page_idle/bitmap"
    size = bitmap.stat().st_size
    with machine_on(fake) as m:
        proc = m.process_id(PID)
        batch = m.read_range(proc, VMA, VMA + 2 * PAGE_SIZE)
        assert m.test_and_clear_young(proc, batch).tolist() == [True, False]
        assert m.access_counters() == {"pages_tested": 2, "pages_past_bitmap": 1}
    assert bitmap.stat().st_size == size  # nothing written past the end


class StepClock:
    """A clock the test advances; the engine's per-process scan periods follow it."""

    def __init__(self) -> None:
        self.ns = 0

    def now_ns(self) -> int:
        return self.ns

    def sleep_ns(self, duration_ns: int) -> None:
        self.ns += max(duration_ns, 0)


def test_engine_promotes_hot_slow_pages_through_the_live_backend(fake: FakeLinux) -> None:
    """Two scans with the real engine: pages touched in both are moved to node 0."""
    from kscand.core.engine import Kscand
    from kscand.core.tunables import Tunables

    nr = 64
    pfns = [NODE1_PFN + 2 * i for i in range(nr)]  # every other PFN: several words, gaps
    fake.set_pagemap(PID, {VMA + i * PAGE_SIZE: anon_page(p) for i, p in enumerate(pfns)})
    fake.set_kpages(pfns, ANON_LRU)
    hot = set(range(0, nr, 4))  # a quarter of the pages stay hot
    clock = StepClock()
    with machine_on(fake, selection=ProcessSelection(pids=(PID,)), clock=clock) as m:
        engine = Kscand(m, Tunables())

        def step_until_scanned() -> None:
            before = engine.stats.total["nr_kscand_mm_scans"]
            for _ in range(200):  # the engine scans a process when its period has passed
                clock.sleep_ns(100_000_000)
                engine.step()
                if engine.stats.total["nr_kscand_mm_scans"] > before:
                    return
            raise AssertionError("the engine never scanned the process")

        step_until_scanned()  # first scan: never-marked pages read as accessed, marked idle
        assert m.mover.calls == []  # type: ignore[attr-defined]
        # The "hardware" sets Accessed bits: the kernel would report those pages non-idle.
        words: dict[int, int] = {}
        for i, pfn in enumerate(pfns):
            if i not in hot:
                words[pfn // 64] = words.get(pfn // 64, 0) | (1 << (pfn % 64))
        bitmap = Path(fake.sysfs) / "kernel/mm/page_idle/bitmap"
        write_u64s(bitmap, {w: words.get(w, 0) for w in {p // 64 for p in pfns}})
        step_until_scanned()
        calls = m.mover.calls  # type: ignore[attr-defined]
    moved = [v for _, vaddrs, nid in calls for v in vaddrs if nid == 0]
    assert moved == [VMA + i * PAGE_SIZE for i in sorted(hot)]


def test_no_access_source_says_why(fake: FakeLinux) -> None:
    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    with machine_on(fake) as m:
        assert m.access_source_name == "none"
        assert "CONFIG_IDLE_PAGE_TRACKING" in m.access_source_reason
        proc = m.process_id(PID)
        from kscand.errors import Unsupported

        with pytest.raises(Unsupported, match="CONFIG_IDLE_PAGE_TRACKING"):
            m.test_and_clear_young(proc, m.read_range(proc, VMA, VMA + PAGE_SIZE))


def test_errno_mapping_of_move_pages() -> None:
    from kscand.errors import AccessDenied
    from kscand.live.move import move_pages_error

    assert isinstance(move_pages_error(errno.ESRCH, 1, 0), ProcessGone)
    assert isinstance(move_pages_error(errno.EPERM, 1, 0), AccessDenied)
    assert isinstance(move_pages_error(errno.ENODEV, 1, 3), Unsupported)


class FakeMovePages:
    """move_pages(2) as do_pages_move() (mm/migrate.c) runs it for one target node: the
    batch is one run, migrated at the end; its statuses are stored only if every page
    moved. `enomem_at`: the target fills up at that page (the pages before it moved, the
    call fails with ENOMEM); `stuck`: pages that stay (the call returns their count)."""

    def __init__(self, nodes: dict[int, int], enomem_at: int | None = None,
                 stuck: frozenset[int] = frozenset(), gone: bool = False) -> None:
        self.nodes = nodes  # vaddr -> node
        self.enomem_at = enomem_at
        self.stuck = stuck
        self.gone = gone
        self.calls: list[str] = []

    def __call__(self, nr: int, pid: int, count: int, pages: int, nodes: int | None,
                 status: int, flags: int) -> int:
        vaddrs = list((ctypes.c_uint64 * count).from_address(pages))
        out = (ctypes.c_int * count).from_address(status)
        self.calls.append("query" if nodes is None else "move")
        if self.gone:
            ctypes.set_errno(errno.ESRCH)
            return -1
        if nodes is None:
            for i, vaddr in enumerate(vaddrs):
                out[i] = self.nodes.get(vaddr, -errno.ENOENT)
            return 0
        target = (ctypes.c_int * count).from_address(nodes)[0]
        for i, vaddr in enumerate(vaddrs):
            if self.enomem_at is not None and i >= self.enomem_at:
                ctypes.set_errno(errno.ENOMEM)
                return -1
            if vaddr in self.nodes and vaddr not in self.stuck:
                self.nodes[vaddr] = target
        if self.stuck:
            return len(self.stuck)
        for i in range(count):
            out[i] = target
        return 0


VADDRS = np.array([0x1000, 0x2000, 0x3000], dtype=np.uint64)


def _mover(kernel: FakeMovePages):  # type: ignore[no-untyped-def]
    from kscand.live.move import PageMover

    mover = PageMover()
    mover._call = kernel
    return mover


def test_move_pages_out_of_memory_mid_call_reports_what_did_move() -> None:
    """The target node fills up: the kernel returns -ENOMEM and stores no status, but the
    first page moved; a query tells it apart from the pages that failed."""
    kernel = FakeMovePages({0x1000: 1, 0x2000: 1, 0x3000: 1}, enomem_at=1)
    assert _mover(kernel).move(7, VADDRS, 0).tolist() == [0, -errno.ENOMEM, -errno.ENOMEM]
    assert kernel.calls == ["move", "query"]


def test_move_pages_partly_failed_reports_moved_and_stayed_pages() -> None:
    """A positive return (pages not migrated) stores no status for the run either."""
    kernel = FakeMovePages({0x1000: 1, 0x2000: 1}, stuck=frozenset({0x2000}))
    # 0x3000 is not mapped: the query says -ENOENT.
    assert _mover(kernel).move(7, VADDRS, 0).tolist() == [0, 1, -errno.ENOENT]


def test_move_pages_all_moved_needs_no_query_and_gone_process_is_named() -> None:
    kernel = FakeMovePages({0x1000: 1, 0x2000: 1, 0x3000: 1})
    mover = _mover(kernel)
    assert mover.move(7, VADDRS, 0).tolist() == [0, 0, 0]
    assert kernel.calls == ["move"]
    assert mover.query(7, VADDRS).tolist() == [0, 0, 0]
    kernel.gone = True
    with pytest.raises(ProcessGone):
        mover.move(7, VADDRS, 0)
    with pytest.raises(ProcessGone):
        mover.query(7, VADDRS)
