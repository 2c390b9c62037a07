"""The scan: one process from its resume address within a byte budget (kscand_scan_mm_slot).

Layers, as in khugepaged: scan_mm() walks VMAs from the resume address until
the budget is spent; scan_range() handles one aligned run of pages inside one
VMA with array operations only: read the pages, filter, test-and-clear the
Accessed bits, update the access history, and queue hot slow-tier folios.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.demoter import Demoter, cold_mask
from kscand.errors import AccessDenied, ProcessGone
from kscand.filters import NR_PAGE_SKIP, folio_sizes, page_skip_codes, vma_skip_reason
from kscand.machine import (
    PAGE_SHIFT,
    PMD_SIZE,
    BoolArray,
    I64Array,
    Machine,
    ProcessId,
    Topology,
    Vma,
)
from kscand.migrator import Migrator
from kscand.mmlist import HISTORY_CHUNK_BYTES, MmSlot
from kscand.stats import PageSkip, Stats, VmaSkip
from kscand.tunables import Tunables


class ScanEnd(enum.Enum):
    """How a scan of one process ended."""

    BUDGET = "budget"  # scan_size_bytes spent; resume from slot.resume_vaddr next time
    WRAPPED = "wrapped"  # reached the end of the address space; next scan starts at 0
    GONE = "gone"  # the process exited or its pid was reused
    DENIED = "denied"  # the kernel refused access to its page tables


def align_up(value: int, align: int) -> int:
    """value rounded up to a multiple of align (a power of two)."""
    return (value + align - 1) & ~(align - 1)


def next_stop(start: int, vma_end: int, budget_bytes: int) -> int:
    """End of the next range to scan from start.

    It stops at the end of the VMA, at the next history chunk boundary, or
    where the budget runs out rounded up to a PMD boundary, so that a THP is
    never split between two scans. The range is never empty.
    """
    chunk_end = (start // HISTORY_CHUNK_BYTES + 1) * HISTORY_CHUNK_BYTES
    budget_end = align_up(start + max(budget_bytes, 1), PMD_SIZE)
    return min(vma_end, chunk_end, budget_end)


def hot_mask(history: npt.NDArray[np.uint8], depth: int) -> BoolArray:
    """Hot folios: accessed in each of the last depth scans. uint8 (n,) -> bool (n,)."""
    need = np.uint8((1 << depth) - 1)
    return (history & need) == need


def pages_in(mask: BoolArray, nr_pages: I64Array | None) -> int:
    """Base pages of the folios selected by mask (nr_pages None: all base pages)."""
    return int(np.count_nonzero(mask)) if nr_pages is None else int(nr_pages[mask].sum())


def history_offsets(vaddrs: npt.NDArray[np.uint64], chunk_base: int) -> npt.NDArray[np.intp]:
    """Index of each page in its history chunk. uint64 (n,) -> intp (n,)."""
    return ((vaddrs - np.uint64(chunk_base)) >> np.uint64(PAGE_SHIFT)).astype(np.intp)


def _sizes(nr_pages: I64Array | None, idx: npt.NDArray[np.intp]) -> I64Array:
    """Base pages of the folios at idx (nr_pages None: all base pages)."""
    return nr_pages[idx] if nr_pages is not None else np.ones(idx.size, dtype=np.int64)


def is_toptier(nid: npt.NDArray[np.int32], toptier: BoolArray) -> BoolArray:
    """Whether each page's node is top tier. nid int32 (n,), toptier by nid + 1 -> bool (n,).

    Machines have few top-tier nodes: a comparison per node beats a gather.
    """
    top_nids = np.flatnonzero(toptier) - 1
    if top_nids.size > 4:
        return toptier[nid + 1]
    out = np.zeros(nid.shape[0], dtype=np.bool_)
    for top_nid in top_nids.tolist():
        out |= nid == top_nid
    return out


def push_history(
    history: npt.NDArray[np.uint8], young: BoolArray
) -> npt.NDArray[np.uint8]:
    """Shift this scan's Accessed bits into the history registers. (n,) -> uint8 (n,)."""
    return ((history << np.uint8(1)) | young.astype(np.uint8)).astype(np.uint8)


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """Where one scan of a process goes: the ranges to walk, in order, and where to resume."""

    ranges: tuple[tuple[int, int], ...]  # [start, end) runs, each inside one VMA and chunk
    skipped: tuple[VmaSkip, ...]  # the filtered VMAs passed on the way
    nr_vmas: int  # VMAs walked (wholly or in part)
    resume_vaddr: int  # where the next scan starts (0: from the beginning)
    wrapped: bool  # this scan reaches the end of the address space


def plan_scan(vmas: Sequence[Vma], resume_vaddr: int, budget_bytes: int) -> ScanPlan:
    """The ranges one scan covers: from resume_vaddr, VMA by VMA, until budget_bytes.

    Filtered VMAs cost no budget (there is no work in them). A scan that
    spends its budget exactly at the end of the last VMA wraps at once, so
    the next scan does not start with an empty pass. Pure arithmetic.
    """
    ranges: list[tuple[int, int]] = []
    skipped: list[VmaSkip] = []
    nr_vmas = 0
    budget = budget_bytes
    vaddr = resume_vaddr
    for vma in vmas:
        if vma.end <= vaddr:
            continue
        if budget <= 0:
            return ScanPlan(tuple(ranges), tuple(skipped), nr_vmas, vaddr, False)
        reason = vma_skip_reason(vma)
        if reason is not None:
            skipped.append(reason)
            continue
        nr_vmas += 1
        start = max(vaddr, vma.start)
        while start < vma.end and budget > 0:
            stop = next_stop(start, vma.end, budget)
            ranges.append((start, stop))
            budget -= stop - start
            start = stop
        vaddr = start
        if vaddr < vma.end:  # budget spent inside this VMA
            return ScanPlan(tuple(ranges), tuple(skipped), nr_vmas, vaddr, False)
    return ScanPlan(tuple(ranges), tuple(skipped), nr_vmas, 0, True)


class Scanner:
    """Walks one process's address space per call, within the scan budget."""

    def __init__(
        self, machine: Machine, migrator: Migrator, stats: Stats, demoter: Demoter | None = None
    ) -> None:
        self.machine = machine
        self.migrator = migrator
        self.stats = stats
        self.demoter = demoter
        self.demote = False  # queue cold top-tier folios in this scan (set per scan_mm)
        # Called when the candidate queue would overflow mid-scan: the engine
        # migrates what is queued (kmigrated running beside kscand), so a large
        # scan does not drop what it found.
        self.drain: Callable[[], None] | None = None

    def scan_mm(self, slot: MmSlot, tunables: Tunables, topology: Topology) -> ScanEnd:
        """Scan slot's process from its resume address for up to scan_size_bytes."""
        proc = slot.proc
        self.stats.add(proc, "nr_kscand_mm_scans")
        slot.begin_scan()
        self.demote = self.demoter is not None and self.demoter.wanted(topology, tunables)
        try:
            budget = slot.scan_size_bytes or tunables.scan_size_bytes
            plan = plan_scan(self.machine.vmas(proc), slot.resume_vaddr, budget)
            for reason in plan.skipped:
                self.stats.add(proc, reason.value)
            self.stats.add(proc, "nr_kscand_vma_scans", plan.nr_vmas)
            toptier = topology.toptier_table()
            for start, end in plan.ranges:
                self.scan_range(slot, start, end, tunables, toptier)
        except ProcessGone:
            return ScanEnd.GONE
        except AccessDenied:
            # Not ours to read (a privileged or protected process): skip it this time.
            self.stats.add(proc, "scan_access_denied")
            return ScanEnd.DENIED
        slot.resume_vaddr = plan.resume_vaddr
        if not plan.wrapped:
            return ScanEnd.BUDGET
        slot.full_scans += 1
        return ScanEnd.WRAPPED

    def scan_range(
        self,
        slot: MmSlot,
        start: int,
        end: int,
        tunables: Tunables,
        toptier: BoolArray,
    ) -> None:
        """Scan [start, end), inside one VMA and one history chunk. No per-page loop.

        read the pages -> filter -> test-and-clear Accessed bits -> shift them
        into the history -> count -> queue hot slow-tier folios (and, when
        demotion is wanted, cold top-tier ones).
        """
        proc = slot.proc
        batch = self.machine.read_range(proc, start, end)
        self.stats.add(proc, "nr_kscand_ptes_scanned", len(batch))
        codes = page_skip_codes(batch.flags)
        nr_base, nr_thp = self._count_skips(proc, codes)
        if not nr_base + nr_thp:
            return
        chunk_base = start - start % HISTORY_CHUNK_BYTES
        nr_pages: I64Array | None = None  # None: every folio is a base page
        if nr_base == len(batch):
            folios = batch  # every page an eligible base page: the history is one slice
            first = (start - chunk_base) >> PAGE_SHIFT
            offsets: slice | npt.NDArray[np.intp] = slice(first, first + len(batch))
        else:
            eligible = np.flatnonzero(codes <= PageSkip.ELIGIBLE_THP)
            folios = batch.take(eligible)
            offsets = history_offsets(folios.vaddr, chunk_base)
            if nr_thp:
                nr_pages = folio_sizes(batch.flags)[eligible]

        young = self.machine.test_and_clear_young(proc, folios)
        history = slot.history_chunk(chunk_base)
        pushed = push_history(history[offsets], young)
        history[offsets] = pushed
        hot = young & hot_mask(pushed, tunables.hot_history_depth)
        on_top = is_toptier(folios.nid, toptier)
        self._count_folios(proc, nr_pages, young, hot, on_top)

        candidates = np.flatnonzero(hot & ~on_top)
        if candidates.size:
            if self.drain is not None and (
                self.migrator.nr_queued + candidates.size > self.migrator.queue_max
            ):
                self.drain()  # kmigrated's turn: the queue would overflow
            self.migrator.add(proc, folios.take(candidates), _sizes(nr_pages, candidates))
        if self.demote and self.demoter is not None:
            seen = slot.seen_chunk(chunk_base)
            seen[offsets] = np.minimum(seen[offsets], np.uint8(254)) + np.uint8(1)
            cold_top = on_top & cold_mask(pushed, seen[offsets], tunables.demote_idle_scans)
            cold = np.flatnonzero(cold_top)
            if cold.size:
                self.demoter.queue.add(proc, folios.take(cold), _sizes(nr_pages, cold))
        slot.useful_this_scan += pages_in(young & ~on_top, nr_pages)
        if self.demote:
            # While the top tier wants room, its idle pages are work too: without
            # this, a process living on the top tier is throttled down to one scan
            # every few seconds and its cold pages take minutes to qualify.
            slot.useful_this_scan += pages_in(on_top & ~young, nr_pages)
        slot.note_accessed(folios.nid[young], None if nr_pages is None else nr_pages[young])

    def _count_skips(self, proc: ProcessId, codes: npt.NDArray[np.uint8]) -> tuple[int, int]:
        """Count the skip reasons; returns (eligible base pages, eligible THP heads)."""
        nr_base = int(np.count_nonzero(codes == PageSkip.ELIGIBLE))
        if nr_base == codes.shape[0]:
            return nr_base, 0  # the common case: nothing skipped, no histogram needed
        counts = np.bincount(codes, minlength=NR_PAGE_SKIP)
        for code in range(PageSkip.NOT_PRESENT, NR_PAGE_SKIP):
            self.stats.add(proc, PageSkip(code).counter, int(counts[code]))
        return nr_base, int(counts[PageSkip.ELIGIBLE_THP])

    def _count_folios(
        self,
        proc: ProcessId,
        nr_pages: I64Array | None,
        young: BoolArray,
        hot: BoolArray,
        on_top: BoolArray,
    ) -> None:
        """Add the series' per-page counters."""
        total = young.shape[0] if nr_pages is None else int(nr_pages.sum())
        young_pages = pages_in(young, nr_pages)
        hot_pages = pages_in(hot, nr_pages)
        top_pages = pages_in(on_top, nr_pages)
        self.stats.add(proc, "nr_kscand_idlepage", total - young_pages)
        self.stats.add(proc, "nr_kscand_hotpage", hot_pages)
        self.stats.add(proc, "nr_kscand_coldpage", young_pages - hot_pages)
        self.stats.add(proc, "nr_kscand_toptier", top_pages)
        self.stats.add(proc, "nr_kscand_slowtier", total - top_pages)
