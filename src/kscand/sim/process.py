"""A simulated process: its VMAs (a numpy page table each), their per-node statistics,
the moves made, and the simulated clock they are timed by (kscand.sim.machine)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.machine import PAGE_SIZE, PMD_SIZE, ProcessId, U64Array, VmFlag
from kscand.sim import workloads as wl
from kscand.sim.scenario import VMA_KINDS, VmaSpec

IdxArray = npt.NDArray[np.intp]

VMA_BASE = 0x7F00_0000_0000  # where the first VMA of a simulated process starts
VMA_GAP = PMD_SIZE  # a guard gap between VMAs
PFN_NODE_SHIFT = 40  # synthesized pfn = (nid + 1) << PFN_NODE_SHIFT | page id
# VMA kinds whose pages are never placed (nothing is mapped behind them).
UNPOPULATED_KINDS = ("prot-none", "io")
# VMA kinds whose pages the oracle may move (the ones kscand's filters allow).
MOVABLE_KINDS = ("anon", "anon-thp", "file-rw")


class SimClock:
    """Virtual monotonic time. The engine's work and sleeps advance it."""

    def __init__(self) -> None:
        self._now_ns = 0

    def now_ns(self) -> int:
        return self._now_ns

    @property
    def now_s(self) -> float:
        return self._now_ns / 1e9

    def sleep_ns(self, duration_ns: int) -> None:
        self._now_ns += max(0, int(duration_ns))

    def charge_ns(self, cost_ns: float) -> None:
        """Advance time by the cost of work done."""
        self._now_ns += max(0, round(cost_ns))


@dataclass(slots=True)
class NodeStats:
    """Per-node sums over one VMA's present pages, for one workload epoch."""

    epoch: int
    rate: npt.NDArray[np.float64]  # accesses/s by nid
    hot: npt.NDArray[np.int64]  # hot pages by nid
    pages: npt.NDArray[np.int64]  # present pages by nid


@dataclass(eq=False)
class SimVma:
    """One simulated VMA and the state of its pages."""

    start: int
    kind_name: str
    spec: VmaSpec
    workload: wl.Workload
    page_id_base: int  # global id of its first page (for pfn synthesis)
    nid: npt.NDArray[np.int8]  # (n,) node of each page, -1 = not present
    last_clear_s: npt.NDArray[np.float32]  # (n,) when its Accessed bit was last cleared
    # Per-node sums for the metrics, kept current as pages move (recomputed
    # when the workload's rates change epoch): see node_stats().
    _stats: NodeStats | None = None
    nr_moves: int = 0  # move_pages calls that moved some of its pages (the samplers' key)

    def node_stats(self, t_s: float, nr_nids: int) -> NodeStats:
        """Access rate, hot pages and pages per node (index nid) at t_s."""
        epoch = self.workload.epoch(t_s)
        if self._stats is not None and self._stats.epoch == epoch:
            return self._stats
        rates, hot = self.workload.rates(t_s), self.workload.hot(t_s)
        stats = NodeStats(epoch, np.zeros(nr_nids), np.zeros(nr_nids, np.int64),
                          np.zeros(nr_nids, np.int64))
        for nid in np.unique(self.nid[self.nid >= 0]).tolist():
            on_node = self.nid == nid
            stats.rate[nid] = float(rates[on_node].sum(dtype=np.float64))
            stats.hot[nid] = int(np.count_nonzero(hot & on_node))
            stats.pages[nid] = int(np.count_nonzero(on_node))
        self._stats = stats
        return stats

    def note_moved(self, pages: IdxArray, old_nids: IdxArray, new_nid: int, t_s: float) -> None:
        """Keep node_stats() current after pages moved from old_nids to new_nid."""
        self.nr_moves += 1
        stats = self._stats
        if stats is None:
            return
        if stats.epoch != self.workload.epoch(t_s):
            self._stats = None
            return
        size = stats.rate.shape[0]
        rates = self.workload.rates_of(pages, t_s).astype(np.float64)
        hot = self.workload.hot_of(pages, t_s)
        stats.rate -= np.bincount(old_nids, weights=rates, minlength=size)
        stats.rate[new_nid] += float(rates.sum())
        stats.hot -= np.bincount(old_nids[hot], minlength=size)
        stats.hot[new_nid] += int(np.count_nonzero(hot))
        stats.pages -= np.bincount(old_nids, minlength=size)
        stats.pages[new_nid] += pages.shape[0]

    @property
    def nr_pages(self) -> int:
        return int(self.nid.shape[0])

    @property
    def end(self) -> int:
        return self.start + self.nr_pages * PAGE_SIZE

    @property
    def thp(self) -> bool:
        return VMA_KINDS[self.kind_name].thp

    @property
    def vm_flags(self) -> VmFlag:
        return VMA_KINDS[self.kind_name].vm_flags

    @property
    def page_flags(self) -> int:
        return int(VMA_KINDS[self.kind_name].page_flags)


@dataclass(frozen=True, slots=True)
class MoveChunk:
    """The base pages one move_pages call moved within one VMA."""

    vma: SimVma
    pages: IdxArray  # page indices in the VMA
    old_nids: npt.NDArray[np.int8]  # where each page was before
    new_nid: int
    t_s: float


class MoveHistory:
    """Every base page the simulated move_pages moved: page, from, to, when.

    Kept as one numpy chunk per call and VMA (no per-page Python objects), so a
    run that moves N pages keeps about 9 bytes per moved page. Read-only for
    everything but SimMachine: the ledger reads it from a cursor.
    """

    def __init__(self) -> None:
        self._chunks: list[MoveChunk] = []
        self.nr_calls = 0  # move_pages calls that moved at least one page
        self.nr_pages = 0  # base pages moved, over all calls

    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self, start: int = 0) -> list[MoveChunk]:
        """The chunks from index start on, oldest first."""
        return self._chunks[start:]

    def record(self, chunk: MoveChunk) -> None:
        self._chunks.append(chunk)
        self.nr_pages += int(chunk.pages.shape[0])

    def page_ids_and_times(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        """Machine-wide page id (pfn synthesis id) and time of every move, in move order."""
        if not self._chunks:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
        ids = np.concatenate([c.pages.astype(np.int64) + c.vma.page_id_base
                              for c in self._chunks])
        times = np.concatenate([np.full(c.pages.shape[0], c.t_s) for c in self._chunks])
        return ids, times


@dataclass(eq=False)
class SimProcess:
    """A simulated process: identity, VMAs, lifetime."""

    proc: ProcessId
    name: str
    vmas: list[SimVma]
    exit_s: float | None
    scale: int | None = None  # the scenario's per-process scale for kscand
    vma_starts: U64Array = field(init=False)
    vma_ends: U64Array = field(init=False)

    def __post_init__(self) -> None:
        self.vma_starts = np.array([v.start for v in self.vmas], dtype=np.uint64)
        self.vma_ends = np.array([v.end for v in self.vmas], dtype=np.uint64)

    def vma_of(self, vaddrs: U64Array) -> IdxArray:
        """Index of the VMA each address falls in, or -1. uint64 (n,) -> intp (n,)."""
        idx = np.searchsorted(self.vma_starts, vaddrs, side="right").astype(np.intp) - 1
        inside = (idx >= 0) & (vaddrs < self.vma_ends[np.maximum(idx, 0)])
        return np.where(inside, idx, -1)

    def vma_index(self, vaddr: int) -> int:
        """Index of the VMA holding vaddr, or -1."""
        idx = int(np.searchsorted(self.vma_starts, np.uint64(vaddr), side="right")) - 1
        return idx if idx >= 0 and vaddr < int(self.vma_ends[idx]) else -1
