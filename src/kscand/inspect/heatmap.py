"""A trace's accesses binned over address and time, per process (`kscand report heatmap`).

The address axis holds only the ranges the process touched: the distinct pages
accessed, cut into segments wherever two consecutive ones lie more than
gap_pages apart, laid end to end (damo's report heatmap likewise leaves out the
unmapped gaps between a process's regions). Bins divide that compressed axis
evenly; a bin may straddle a compressed gap (AddressBins.gap says which).
The time axis runs from the first record to the last, in at most as many bins as
there are distinct record times (a recorded trace: one bin per interval).
A cell holds the sum of its records' counts. Pure numpy, no loop over records.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import PAGE_SHIFT
from kscand.sim.tracefile import Trace

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]

GAP_PAGES = 512  # gaps over 2 MiB between accessed pages are compressed
MAX_PROCESSES = 8  # heatmaps of the processes with the most accesses


@dataclass(frozen=True)
class Segments:
    """Runs of accessed pages laid end to end: segment i holds pages [start[i], end[i]) at
    positions [offset[i], offset[i] + end[i] - start[i]) of the compressed axis."""

    start: I64Array
    end: I64Array
    offset: I64Array

    @property
    def nr_pages(self) -> int:
        return int(self.offset[-1] + self.end[-1] - self.start[-1]) if self.start.size else 0

    def positions(self, page: I64Array) -> I64Array:
        """The compressed-axis position of each page (every page inside a segment)."""
        seg = np.searchsorted(self.start, page, side="right") - 1
        out: I64Array = page - self.start[seg] + self.offset[seg]
        return out

    def page_at(self, position: I64Array) -> I64Array:
        """The page at each compressed-axis position (the inverse of positions)."""
        seg = np.searchsorted(self.offset, position, side="right") - 1
        out: I64Array = position - self.offset[seg] + self.start[seg]
        return out


def segments_of(page: I64Array, gap_pages: int = GAP_PAGES) -> Segments:
    """The segments of a set of pages: int64 (n,), any order, duplicates allowed."""
    uniq = np.unique(page)
    if not uniq.size:
        empty = np.zeros(0, dtype=np.int64)
        return Segments(empty, empty, empty)
    breaks = np.flatnonzero(np.diff(uniq) > gap_pages) + 1
    start = uniq[np.concatenate(([0], breaks))]
    end = uniq[np.concatenate((breaks - 1, [uniq.size - 1]))] + 1
    offset = np.concatenate(([0], np.cumsum(end - start)[:-1])).astype(np.int64)
    return Segments(start.astype(np.int64), end.astype(np.int64), offset)


@dataclass(frozen=True)
class Heatmap:
    """One process's accesses: grid[a, t] sums the counts of address bin a (0: the lowest
    addresses) and time bin t (0: the earliest)."""

    pid: int
    grid: F64Array  # (nr_address_bins, nr_time_bins)
    t_first_s: float
    t_last_s: float
    segments: Segments
    nr_records: int

    @property
    def nr_address_bins(self) -> int:
        return int(self.grid.shape[0])

    @property
    def nr_time_bins(self) -> int:
        return int(self.grid.shape[1])

    @property
    def total(self) -> float:
        return float(self.grid.sum())

    def bin_positions(self) -> I64Array:
        """The first compressed-axis position of each address bin: int64 (bins + 1,), the
        last entry the axis's end."""
        bins = np.arange(self.nr_address_bins + 1, dtype=np.int64)
        out: I64Array = -(-bins * self.segments.nr_pages // self.nr_address_bins)
        return out

    def bin_addresses(self) -> npt.NDArray[np.uint64]:
        """The byte address where each address bin starts: uint64 (bins,)."""
        pages = self.segments.page_at(self.bin_positions()[:-1])
        return pages.astype(np.uint64) << np.uint64(PAGE_SHIFT)

    def bin_gaps(self) -> npt.NDArray[np.bool_]:
        """Whether each address bin holds the start of a segment after the first (a
        compressed gap lies at or inside it): bool (bins,)."""
        edges = self.bin_positions()
        later = self.segments.offset[1:]
        first = np.searchsorted(later, edges[:-1], side="left")
        last = np.searchsorted(later, edges[1:], side="left")
        out: npt.NDArray[np.bool_] = last > first
        return out

    def time_edges_s(self) -> F64Array:
        """The time bins' edges: float64 (bins + 1,)."""
        return np.linspace(self.t_first_s, self.t_last_s, self.nr_time_bins + 1)


def time_bins_of(t_s: F64Array, nr_bins: int) -> tuple[npt.NDArray[np.intp], int]:
    """Each time's bin over [min, max] in at most nr_bins (and at most as many as there
    are distinct times) equal bins; the max falls in the last one. -> (bins, count)."""
    first, last = float(t_s.min()), float(t_s.max())
    count = int(min(nr_bins, np.unique(t_s).size))
    if last <= first or count <= 1:
        return np.zeros(t_s.shape[0], dtype=np.intp), 1
    scaled = np.floor((t_s - first) / (last - first) * count).astype(np.intp)
    return np.minimum(scaled, count - 1), count


def heatmap_of(
    t_s: F64Array, page: I64Array, count: npt.NDArray[np.float32], pid: int, *,
    address_bins: int, time_bins: int, gap_pages: int = GAP_PAGES,
) -> Heatmap:
    """One process's records (arrays (n,), n > 0) binned: at most address_bins rows (no
    more than the pages on the axis) and time_bins columns."""
    segments = segments_of(page, gap_pages)
    nr_pages = segments.nr_pages
    nr_address = int(min(address_bins, nr_pages))
    address = segments.positions(page) * nr_address // nr_pages
    when, nr_time = time_bins_of(t_s, time_bins)
    flat = np.bincount(address * nr_time + when, weights=count.astype(np.float64),
                       minlength=nr_address * nr_time).astype(np.float64)
    return Heatmap(pid, flat.reshape(nr_address, nr_time), float(t_s.min()), float(t_s.max()),
                   segments, int(t_s.shape[0]))


def trace_pids(trace: Trace) -> tuple[npt.NDArray[np.int32], F64Array]:
    """The trace's pids by accesses (sum of counts), most first, and those sums."""
    pids, inverse = np.unique(trace.pid, return_inverse=True)
    totals = np.bincount(inverse, weights=trace.count.astype(np.float64),
                         minlength=pids.size).astype(np.float64)
    order = np.lexsort((pids, -totals))
    return pids[order], totals[order]


def trace_heatmaps(
    trace: Trace, pid: int | None, *, address_bins: int, time_bins: int,
    gap_pages: int = GAP_PAGES, max_processes: int = MAX_PROCESSES,
) -> list[Heatmap]:
    """A heatmap per process of the trace (pid: only that one; none when it has no
    records), the max_processes with the most accesses first."""
    chosen = [pid] if pid is not None else trace_pids(trace)[0][:max_processes].tolist()
    maps = []
    for one in chosen:
        keep = trace.pid == one
        if not keep.any():
            continue
        maps.append(heatmap_of(trace.t_s[keep], trace.page[keep], trace.count[keep], int(one),
                               address_bins=address_bins, time_bins=time_bins,
                               gap_pages=gap_pages))
    return maps
