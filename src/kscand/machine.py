"""The Machine interface: the only seam between the kscand engine and the world.

The engine (scanner + migrator) calls nothing but what is defined here. Two
implementations exist: the live Linux machine (kscand.live), built on
/proc/PID/pagemap, /proc/kpageflags, the page_idle bitmap (or DAMON) and
move_pages(2); and the simulated machine (kscand.sim), built on numpy arrays.
The shapes below follow what those kernel interfaces actually return, so the
simulator cannot promise the engine anything Linux would not.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
PMD_SHIFT = 21
PMD_SIZE = 1 << PMD_SHIFT
HPAGE_PMD_NR = PMD_SIZE // PAGE_SIZE  # base pages in a PMD-mapped THP

U64Array = npt.NDArray[np.uint64]
U32Array = npt.NDArray[np.uint32]
I32Array = npt.NDArray[np.int32]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

NID_NONE = -1  # nid of a page that is not present


@dataclass(frozen=True, order=True, slots=True)
class ProcessId:
    """A process's stable identity: pid plus start time (pids are reused).

    start_time is in clock ticks since boot on Linux (field 22 of
    /proc/PID/stat); the simulator uses its own virtual ticks.
    """

    pid: int
    start_time: int

    def __str__(self) -> str:
        return f"{self.pid}@{self.start_time}"


class VmFlag(enum.IntFlag):
    """VMA flags, named after the kernel's VM_* bits and smaps' VmFlags."""

    READ = 1 << 0  # rd
    WRITE = 1 << 1  # wr
    EXEC = 1 << 2  # ex
    SHARED = 1 << 3  # sh
    IO = 1 << 4  # io: memory-mapped I/O
    PFNMAP = 1 << 5  # pf: pure PFN range
    MIXEDMAP = 1 << 6  # mm: mixed map
    HUGETLB = 1 << 7  # ht: hugetlbfs
    LOCKED = 1 << 8  # lo: mlock()ed
    HUGEPAGE = 1 << 9  # hg: MADV_HUGEPAGE
    FILE = 1 << 10  # backed by a file (maps' pathname is a file)
    DONTEXPAND = 1 << 11  # de
    SPECIAL = 1 << 12  # [vsyscall], [vvar], [vdso]-like special mappings


@dataclass(frozen=True, slots=True)
class Vma:
    """One virtual memory area [start, end) of a process."""

    start: int
    end: int
    flags: VmFlag
    name: str = ""

    @property
    def size_bytes(self) -> int:
        return self.end - self.start


class PageFlag(enum.IntFlag):
    """Per-page flags of a PageBatch, from pagemap + kpageflags + kpagecount."""

    PRESENT = 1 << 0  # pagemap bit 63
    SHARED = 1 << 1  # mapped by more than one process (kpagecount > 1, or not exclusive)
    UNEVICTABLE = 1 << 2  # KPF_UNEVICTABLE (mlocked, ramfs, ...)
    LRU = 1 << 3  # KPF_LRU
    THP_HEAD = 1 << 4  # head page of a transparent huge page (KPF_THP + COMPOUND_HEAD)
    THP_TAIL = 1 << 5  # tail page of a THP: belongs to the folio of its head
    HUGETLB = 1 << 6  # KPF_HUGE
    ZONE_DEVICE = 1 << 7  # device memory (KPF_NOPAGE / ZONE_DEVICE)
    KSM = 1 << 8  # KPF_KSM: merged, hence shared
    ZERO = 1 << 9  # the shared zero page
    ANON = 1 << 10  # KPF_ANON
    SWAPPED = 1 << 11  # pagemap bit 62


@dataclass(frozen=True, slots=True)
class PageBatch:
    """The pages of a run of virtual addresses, one entry per base page.

    All arrays have shape (n,). A THP shows as one THP_HEAD entry followed by
    tail entries; the engine treats it as one folio of HPAGE_PMD_NR pages.
    """

    vaddr: U64Array  # uint64: virtual address of each base page
    pfn: U64Array  # uint64: page frame number, 0 when not present
    nid: I32Array  # int32: NUMA node of the page, NID_NONE when not present
    flags: U32Array  # uint32: PageFlag bits

    def __len__(self) -> int:
        return int(self.vaddr.shape[0])

    def take(self, idx: npt.NDArray[np.intp]) -> PageBatch:
        """The sub-batch at indices idx."""
        return PageBatch(self.vaddr[idx], self.pfn[idx], self.nid[idx], self.flags[idx])


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One NUMA node: capacity, free memory, CPUs and memory tier."""

    nid: int
    capacity_pages: int
    free_pages: int
    has_cpu: bool
    tier: int  # memory tier id (abstract distance >> 7); lower is faster
    top_tier: bool
    # Free pages an allocation of user memory on this node may not take: the sum over
    # its zones of the high watermark (boost included) and the largest lowmem
    # protection (/proc/zoneinfo). Below it the kernel refuses migration targets
    # (ENOMEM) or wakes kswapd. 0 when unknown.
    wmark_pages: int = 0


@dataclass(frozen=True, slots=True)
class Topology:
    """The node topology as the engine sees it at one moment."""

    nodes: tuple[NodeInfo, ...]

    def node(self, nid: int) -> NodeInfo:
        for info in self.nodes:
            if info.nid == nid:
                return info
        raise KeyError(nid)

    @property
    def top_tier_nids(self) -> tuple[int, ...]:
        return tuple(n.nid for n in self.nodes if n.top_tier)

    @property
    def slow_tier_nids(self) -> tuple[int, ...]:
        return tuple(n.nid for n in self.nodes if not n.top_tier)

    def toptier_table(self) -> BoolArray:
        """bool array indexed by nid + 1 (index 0 is NID_NONE): is the node top tier."""
        size = max((n.nid for n in self.nodes), default=0) + 2
        table = np.zeros(size, dtype=np.bool_)
        for info in self.nodes:
            table[info.nid + 1] = info.top_tier
        return table


def top_tier_from_tiers(tier_of: dict[int, int], has_cpu: dict[int, bool]) -> set[int]:
    """The kernel's node_is_toptier(): nodes in the fastest tier holding a CPU node, or faster.

    See mm/memory-tiers.c: top_tier_adistance is the end of the first tier
    that contains a node with CPUs; every node at or below it is top tier.
    With no CPU node at all, every node is top tier (nothing to promote).
    """
    cpu_tiers = [tier_of[nid] for nid, cpu in has_cpu.items() if cpu and nid in tier_of]
    if not cpu_tiers:
        return set(tier_of)
    limit = min(cpu_tiers)
    return {nid for nid, tier in tier_of.items() if tier <= limit}


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """What a process is called: for status output and per-process config rules."""

    comm: str  # command name (/proc/PID/comm)
    cgroup: str  # cgroup v2 path ("/system.slice/x.service"), "" when unknown


class Clock(Protocol):
    """Monotonic time and an interruptible sleep (virtual in the simulator)."""

    def now_ns(self) -> int: ...

    def sleep_ns(self, duration_ns: int) -> None: ...


class Machine(Protocol):
    """What the kscand engine needs from a machine, live or simulated.

    Methods that take a ProcessId raise kscand.errors.ProcessGone when the
    process exited or its pid now names another process; the engine treats
    that as an ordinary outcome. Addresses passed in (vaddrs, a batch's
    vaddr) are page-aligned and strictly ascending: no duplicates.
    """

    @property
    def clock(self) -> Clock:
        """The machine's clock (virtual time in the simulator)."""
        ...

    def topology(self) -> Topology:
        """Nodes, tiers, capacity and free pages, now."""
        ...

    def processes(self) -> list[ProcessId]:
        """The processes to scan, now (never kernel threads or kscand itself)."""
        ...

    def is_alive(self, proc: ProcessId) -> bool:
        """Whether proc still names the same process (pid and start time match)."""
        ...

    def describe(self, proc: ProcessId) -> ProcessInfo:
        """The process's command name and cgroup."""
        ...

    def vmas(self, proc: ProcessId) -> list[Vma]:
        """The VMAs of proc, sorted by start address."""
        ...

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        """The pages of the page-aligned range [start, end) of proc.

        The engine only asks for ranges inside one VMA.
        """
        ...

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        """The pages at the given page-aligned addresses (sorted ascending)."""
        ...

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        """Accessed-bit test-and-clear for each page of the batch (heads for THPs).

        Returns bool (n,): True when the page was accessed since the previous
        clear. Afterwards the pages count as not accessed (page_idle: marked
        idle). The analog of the seed's folio_set_idle + clear_pte_refs.
        Raises AccessUnknown when the source has nothing new on the batch since it
        last answered for it (a DAMON snapshot already reported): no observation.
        """
        ...

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        """Move the pages at vaddrs to node nid, like move_pages(2) with MPOL_MF_MOVE.

        Returns int32 (n,): the node each page is on afterwards, or a negative
        errno (-ENOMEM target full, -EBUSY, -ENOENT not present, -EFAULT,
        -EACCES shared, ...). Raises ProcessGone when the process is gone
        (ESRCH).
        """
        ...


class MachineProxy:
    """A Machine that forwards every call to another one: the base of the decorators
    (the daemon's stop guard, `kscand scan`'s observer, test wrappers), which override
    only the calls they change."""

    def __init__(self, inner: Machine) -> None:
        self.inner = inner

    @property
    def clock(self) -> Clock:
        return self.inner.clock

    def topology(self) -> Topology:
        return self.inner.topology()

    def processes(self) -> list[ProcessId]:
        return self.inner.processes()

    def is_alive(self, proc: ProcessId) -> bool:
        return self.inner.is_alive(proc)

    def describe(self, proc: ProcessId) -> ProcessInfo:
        return self.inner.describe(proc)

    def vmas(self, proc: ProcessId) -> list[Vma]:
        return self.inner.vmas(proc)

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        return self.inner.read_range(proc, start, end)

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        return self.inner.read_pages(proc, vaddrs)

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        return self.inner.test_and_clear_young(proc, pages)

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        return self.inner.move_pages(proc, vaddrs, nid)
