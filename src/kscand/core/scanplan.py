"""The scan's pure parts: where a visit goes, and the per-page Accessed-bit registers.

plan_scan() turns a process's VMAs, its resume address and a byte budget into
aligned runs (khugepaged's address walk); the rest are array helpers the
scanner applies to each run: the history shift register, hot and top-tier
masks, page counts of folio selections.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core.filters import vma_skip_reason
from kscand.core.mmlist import HISTORY_CHUNK_BYTES
from kscand.core.stats import VmaSkip
from kscand.machine import PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, BoolArray, I64Array, Vma


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
    out: BoolArray = (history & need) == need
    return out


def pages_in(mask: BoolArray, nr_pages: I64Array | None) -> int:
    """Base pages of the folios selected by mask (nr_pages None: all base pages)."""
    return int(np.count_nonzero(mask)) if nr_pages is None else int(nr_pages[mask].sum())


def pages_of(nr_folios: int, nr_pages: I64Array | None) -> int:
    """Base pages of nr_folios folios (nr_pages None: all base pages)."""
    return nr_folios if nr_pages is None else int(nr_pages.sum())


def history_offsets(vaddrs: npt.NDArray[np.uint64], chunk_base: int) -> npt.NDArray[np.intp]:
    """Index of each page in its history chunk. uint64 (n,) -> intp (n,)."""
    return ((vaddrs - np.uint64(chunk_base)) >> np.uint64(PAGE_SHIFT)).astype(np.intp)


def sizes_at(nr_pages: I64Array | None, idx: npt.NDArray[np.intp]) -> I64Array:
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


# A visit that would leave at most this share of its budget to the end of the address
# space covers that tail too (a visit of at most 1.5 budgets): a tail visit of its own
# costs a whole scan period. On hotset (8 GiB and 80 MiB of small VMAs, 4 GiB visits)
# a pass took three visits, the third of 20,480 PTEs; it takes two.
TAIL_ABSORB_NUM, TAIL_ABSORB_DEN = 3, 2


def scannable_bytes(vmas: Sequence[Vma], from_vaddr: int) -> int:
    """Bytes of the VMAs the filters keep, from from_vaddr to the end."""
    total = 0
    for vma in vmas:
        if vma.end <= from_vaddr or vma_skip_reason(vma) is not None:
            continue
        total += vma.end - max(vma.start, from_vaddr)
    return total


def plan_scan(vmas: Sequence[Vma], resume_vaddr: int, budget_bytes: int) -> ScanPlan:
    """The ranges one scan covers: from resume_vaddr, VMA by VMA, until budget_bytes
    (or to the end, when at most TAIL_ABSORB_NUM / TAIL_ABSORB_DEN budgets are left).

    Filtered VMAs cost no budget (there is no work in them). A scan that
    spends its budget exactly at the end of the last VMA wraps at once, so
    the next scan does not start with an empty pass. Pure arithmetic.
    """
    ranges: list[tuple[int, int]] = []
    skipped: list[VmaSkip] = []
    nr_vmas = 0
    budget = budget_bytes
    rest = scannable_bytes(vmas, resume_vaddr)
    if rest <= budget_bytes * TAIL_ABSORB_NUM // TAIL_ABSORB_DEN:
        # The rest of the pass in this visit, not a tail visit of its own (a page over
        # it: the filtered VMAs after the last one kept are passed, and the visit wraps).
        budget = rest + PAGE_SIZE
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
