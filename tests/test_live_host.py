"""LinuxMachine on this host's real /proc: the test allocates and touches its own buffers.

Cross-checks the vectorized reader against an independent, plain struct read
of /proc/self/pagemap, and move_pages(2) query mode against the PFN map.
Needs root (PFNs and /proc/kpageflags); skips otherwise, fails under CI=true.
"""

from __future__ import annotations

import mmap
import os
import struct
import subprocess
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import require

from kscand.core.filters import page_skip_codes, vma_skip_reason
from kscand.core.stats import PageSkip
from kscand.errors import ProcessGone
from kscand.live import LinuxMachine, ProcessSelection, probe
from kscand.machine import HPAGE_PMD_NR, PAGE_SIZE, PMD_SIZE, PageFlag, VmFlag

pytestmark = pytest.mark.live

NR_PAGES = 512


def plain_pagemap(pid: int | str, vaddr: int, nr_pages: int) -> list[tuple[bool, int]]:
    """(present, pfn) per page, read the simple way: one struct per entry."""
    out = []
    with open(f"/proc/{pid}/pagemap", "rb") as f:
        f.seek((vaddr // PAGE_SIZE) * 8)
        data = f.read(nr_pages * 8)
    for (entry,) in struct.iter_unpack("<Q", data):
        present = bool(entry >> 63 & 1)
        out.append((present, entry & ((1 << 55) - 1) if present else 0))
    return out


@pytest.fixture
def machine() -> Iterator[LinuxMachine]:
    require(os.geteuid() == 0, "needs root: pagemap hides PFNs and kpageflags is root-only")
    require(os.path.exists("/proc/kpageflags"), "kernel without CONFIG_PROC_PAGE_MONITOR")
    with LinuxMachine(selection=ProcessSelection(pids=(os.getpid(),)), self_pid=-1) as m:
        yield m


@pytest.fixture
def touched() -> Iterator[tuple[int, list[int]]]:
    """A private anonymous buffer of NR_PAGES pages; every third page left untouched."""
    buf = mmap.mmap(-1, NR_PAGES * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(buf, dtype=np.uint8)
    touched_idx = [i for i in range(NR_PAGES) if i % 3 != 1]
    for i in touched_idx:
        arr[i * PAGE_SIZE] = 1
    yield int(arr.ctypes.data), touched_idx
    del arr
    buf.close()


def test_reader_finds_exactly_the_touched_pages(
    machine: LinuxMachine, touched: tuple[int, list[int]]
) -> None:
    base, touched_idx = touched
    proc = machine.process_id(os.getpid())
    assert proc in machine.processes()
    batch = machine.read_range(proc, base, base + NR_PAGES * PAGE_SIZE)
    present = (batch.flags & PageFlag.PRESENT) != 0
    assert np.flatnonzero(present).tolist() == touched_idx
    plain = plain_pagemap("self", base, NR_PAGES)
    assert batch.pfn.tolist() == [pfn for _, pfn in plain]
    assert [p for p, _ in plain] == present.tolist()
    flags = batch.flags[present]
    assert ((flags & PageFlag.ANON) != 0).all()
    assert ((flags & (PageFlag.SHARED | PageFlag.ZONE_DEVICE | PageFlag.THP_TAIL)) == 0).all()
    assert (batch.nid[present] >= 0).all() and (batch.nid[~present] == -1).all()
    # read_pages at scattered addresses agrees with the range read.
    some = batch.vaddr[::7].copy()
    again = machine.read_pages(proc, some)
    assert again.pfn.tolist() == batch.pfn[::7].tolist()
    assert again.nid.tolist() == batch.nid[::7].tolist()


def test_move_pages_query_mode_agrees_with_the_pfn_map(
    machine: LinuxMachine, touched: tuple[int, list[int]]
) -> None:
    base, _ = touched
    proc = machine.process_id(os.getpid())
    batch = machine.read_range(proc, base, base + NR_PAGES * PAGE_SIZE)
    status = machine.query_nodes(proc, batch.vaddr)
    present = (batch.flags & PageFlag.PRESENT) != 0
    assert status[present].tolist() == batch.nid[present].tolist()
    assert (status[~present] < 0).all()  # -ENOENT / -EFAULT: not present
    nodes = machine.topology().nodes
    if len(nodes) == 1:  # this host: node 0 for every page
        assert (status[present] == nodes[0].nid).all()


def test_vma_of_the_buffer(machine: LinuxMachine, touched: tuple[int, list[int]]) -> None:
    base, _ = touched
    vmas = machine.vmas(machine.process_id(os.getpid()))
    assert vmas == sorted(vmas, key=lambda v: v.start)
    vma = next(v for v in vmas if v.start <= base < v.end)
    assert vma.flags & VmFlag.READ and vma.flags & VmFlag.WRITE
    assert not vma.flags & (VmFlag.FILE | VmFlag.SHARED)
    assert vma_skip_reason(vma) is None
    vdso = [v for v in vmas if v.name == "[vdso]"]
    assert all(vma_skip_reason(v) is not None for v in vdso)


def test_pages_shared_with_a_forked_child_are_shared(
    machine: LinuxMachine, touched: tuple[int, list[int]]
) -> None:
    base, touched_idx = touched
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # the child keeps the copy-on-write mapping until the parent is done
        os.close(write_fd)
        os.read(read_fd, 1)
        os._exit(0)
    os.close(read_fd)
    try:
        proc = machine.process_id(child)
        batch = machine.read_range(proc, base, base + NR_PAGES * PAGE_SIZE)
        codes = page_skip_codes(batch.flags)
        assert (codes[touched_idx] == PageSkip.SHARED).all()
    finally:
        os.write(write_fd, b"x")
        os.close(write_fd)
        os.waitpid(child, 0)


def test_thp_head_and_tails(machine: LinuxMachine) -> None:
    require(hasattr(mmap, "MADV_HUGEPAGE"), "no MADV_HUGEPAGE")
    require(os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"), "no THP")
    buf = mmap.mmap(-1, 3 * PMD_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(buf, dtype=np.uint8)
    start = (int(arr.ctypes.data) + PMD_SIZE - 1) & ~(PMD_SIZE - 1)
    offset = start - int(arr.ctypes.data)
    buf.madvise(mmap.MADV_HUGEPAGE, offset, PMD_SIZE)
    arr[offset : offset + PMD_SIZE : PAGE_SIZE] = 1
    try:
        proc = machine.process_id(os.getpid())
        batch = machine.read_range(proc, start, start + PMD_SIZE)
        require(batch.flags[0] & PageFlag.THP_HEAD,
                "the kernel gave no THP for an madvised aligned 2 MiB (THP disabled or no "
                "free huge page)")
        codes = page_skip_codes(batch.flags)
        assert codes[0] == PageSkip.ELIGIBLE_THP
        assert (codes[1:] == PageSkip.THP_TAIL).all()
        assert np.diff(batch.pfn.astype(np.int64)).tolist() == [1] * (HPAGE_PMD_NR - 1)
        assert batch.pfn[0] % HPAGE_PMD_NR == 0
    finally:
        del arr
        buf.close()


def test_exited_process_is_gone(machine: LinuxMachine) -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        for _ in range(100):  # wait for the exec so the identity is the final one
            if os.readlink(f"/proc/{child.pid}/exe").endswith("sleep"):
                break
            time.sleep(0.01)
        proc = machine.process_id(child.pid)
        assert machine.is_alive(proc)
        vmas = machine.vmas(proc)
        assert vmas
    finally:
        child.kill()
        child.wait()
    assert not machine.is_alive(proc)
    with pytest.raises(ProcessGone):
        machine.read_range(proc, vmas[0].start, vmas[0].start + PAGE_SIZE)
    with pytest.raises(ProcessGone):
        machine.move_pages(proc, np.array([vmas[0].start], dtype=np.uint64), 0)


def test_probe_says_why_promotion_cannot_happen_here() -> None:
    features = probe()
    if len(features.online_nodes) >= 2 and features.slow_tier_nodes and (
        features.has_page_idle or features.choose_access_source()[0] == "damon"
    ):
        pytest.skip("this host can promote; nothing to explain")
    reason = features.blocking_reason()
    assert reason is not None
    sentences = features.sentences()
    if len(features.online_nodes) < 2:
        assert any(s.startswith("only one NUMA node") and s.endswith("nothing to promote")
                   for s in sentences)
    if not features.has_page_idle:
        assert any("CONFIG_IDLE_PAGE_TRACKING" in s for s in sentences)
