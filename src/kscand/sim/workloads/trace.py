"""Trace replay: per-page rates that change every window, from a recorded trace
(the file format, parser, limits and cache: kscand.sim.tracefile)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.errors import ConfigError
from kscand.sim.tracefile import TRACE_MEMORY_LIMIT_BYTES, Trace
from kscand.sim.workloads.base import (
    F32Array,
    F64Array,
    IdxArray,
    PageIndex,
    epoch_bounds_every,
    integrate_epochs,
    poisson_next_access_s,
)

# Trace files (format, parser, limits, cache): kscand.sim.tracefile.
# Bytes a trace workload keeps per window (offsets into its per-window arrays).
WINDOW_BYTES = 16


@dataclass
class WindowRates:
    """Per-page rates that change every window_s, from a replayed trace.

    Window k holds the pages accessed in [k * window_s, (k + 1) * window_s) with
    rate = accesses / window_s (every other page: 0). Sparse, as one array per
    field over all windows: window k's sorted page indices are
    pages[offsets[k]:offsets[k + 1]], their rates page_rates[...] likewise, and
    the pages it calls hot hot_pages[hot_offsets[k]:hot_offsets[k + 1]]. After the
    last window the trace repeats when loop is true, else every rate is 0.
    """

    nr_pages: int
    window_s: float
    offsets: npt.NDArray[np.int64]  # (nr_windows + 1,)
    pages: npt.NDArray[np.intp]
    page_rates: F32Array
    hot_offsets: npt.NDArray[np.int64]  # (nr_windows + 1,)
    hot_pages: npt.NDArray[np.intp]
    loop: bool

    @property
    def nr_windows(self) -> int:
        return int(self.offsets.shape[0]) - 1

    @property
    def end_s(self) -> float:
        """The end of the last window."""
        return self.nr_windows * self.window_s

    def epoch(self, t_s: float) -> int:
        return int(t_s // self.window_s)

    def epoch_bounds(self, t_s: float) -> tuple[float, float]:
        return epoch_bounds_every(t_s, self.window_s)

    def next_access_s(
        self, units: IdxArray, unit_pages: int, t0_s: float, rng: np.random.Generator
    ) -> F64Array:
        return poisson_next_access_s(self, units, unit_pages, t0_s, rng)

    def _window(self, epoch: int) -> int | None:
        if epoch < 0 or not self.nr_windows:
            return None
        if epoch < self.nr_windows:
            return epoch
        return epoch % self.nr_windows if self.loop else None

    def _span(self, window: int) -> slice:
        return slice(int(self.offsets[window]), int(self.offsets[window + 1]))

    def _hot_span(self, window: int) -> slice:
        return slice(int(self.hot_offsets[window]), int(self.hot_offsets[window + 1]))

    def _lookup(self, idx: PageIndex, window: int | None) -> F32Array:
        if isinstance(idx, slice):
            idx = np.arange(idx.start, idx.stop, dtype=np.intp)
        out = np.zeros(idx.shape[0], dtype=np.float32)
        if window is None:
            return out
        span = self._span(window)
        pages = self.pages[span]
        if not pages.size:
            return out
        pos = np.minimum(np.searchsorted(pages, idx), pages.shape[0] - 1)
        found = pages[pos] == idx
        out[found] = self.page_rates[span][pos[found]]
        return out

    def rates(self, t_s: float) -> F32Array:
        out = np.zeros(self.nr_pages, dtype=np.float32)
        window = self._window(self.epoch(t_s))
        if window is not None:
            span = self._span(window)
            out[self.pages[span]] = self.page_rates[span]
        return out

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        return self._lookup(idx, self._window(self.epoch(t_s)))

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        out = np.zeros(self.nr_pages, dtype=np.bool_)
        window = self._window(self.epoch(t_s))
        if window is not None:
            out[self.hot_pages[self._hot_span(window)]] = True
        return out

    def hot_of(self, idx: IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        window = self._window(self.epoch(t_s))
        if window is None:
            return np.zeros(idx.shape[0], dtype=np.bool_)
        return np.isin(idx, self.hot_pages[self._hot_span(window)])

    def integral(self, idx: PageIndex, t0_s: F32Array, t1_s: float) -> F32Array:
        return integrate_epochs(
            t0_s, t1_s, self.window_s, lambda epoch: self._lookup(idx, self._window(epoch))
        )


def _trace_records(trace: Trace, trace_pid: int, where: str) -> npt.NDArray[np.bool_]:
    """The records of one trace pid (-1: all); raises ConfigError when there are none."""
    if trace_pid < 0:
        return np.ones(trace.pid.shape[0], dtype=np.bool_)
    keep: npt.NDArray[np.bool_] = trace.pid == trace_pid
    if not keep.any():
        raise ConfigError(f"{where}: no records for pid {trace_pid}")
    return keep


def trace_span_pages(trace: Trace, trace_pid: int, where: str) -> int:
    """Pages between the lowest and the highest page the selected records touch."""
    page = trace.page[_trace_records(trace, trace_pid, where)]
    return int(page.max() - page.min()) + 1


def check_trace_windows(trace: Trace, trace_pid: int, window_s: float, where: str) -> int:
    """The number of rate windows of a trace; ConfigError when they would not fit the
    trace memory limit (a record at 1e12 s with window_s = 0.001 would need 1e15)."""
    t_s = trace.t_s[_trace_records(trace, trace_pid, where)]
    nr_windows = float(t_s.max()) // window_s + 1
    need = nr_windows * WINDOW_BYTES
    if need > TRACE_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"{where}: window_s = {window_s:g} over {float(t_s.max()):g} s makes {nr_windows:.3g} "
            f"windows, about {need / (1 << 20):.3g} MiB, over the limit of "
            f"{TRACE_MEMORY_LIMIT_BYTES >> 20} MiB; use a larger window_s")
    return int(nr_windows)


_RATES_CACHE: dict[tuple[int, int, int, float, float, bool], WindowRates] = {}


def trace_rates(
    trace: Trace, nr_pages: int, trace_pid: int, window_s: float, hot_share: float, loop: bool,
    where: str,
) -> WindowRates:
    """Per-page rates per window from a trace's records of one pid (-1: every pid).

    Page i of the VMA is the i-th page from the lowest page the selected records
    touch. Raises ConfigError when nothing is selected, the span exceeds nr_pages or
    the windows would not fit the memory limit. Cached per trace and parameters
    (the result is never written to).
    """
    key = (id(trace), nr_pages, trace_pid, window_s, hot_share, loop)
    cached = _RATES_CACHE.get(key)
    if cached is not None and _RATES_TRACES.get(id(trace)) is trace:
        return cached
    nr_windows = check_trace_windows(trace, trace_pid, window_s, where)
    keep = _trace_records(trace, trace_pid, where)
    page = trace.page[keep]
    low = int(page.min())
    span = int(page.max()) - low + 1
    if span > nr_pages:
        raise ConfigError(
            f"{where}: the trace spans {span} pages but the VMA has {nr_pages}; make it larger"
        )
    page = page - low
    window = (trace.t_s[keep] // window_s).astype(np.int64)
    count = trace.count[keep].astype(np.float64)
    del keep
    # Records by (window, page): time order is window order, so a stable sort by a
    # combined key (or by page within window when the key would overflow) groups them.
    if nr_windows < (1 << 62) // max(span, 1):
        order = np.argsort(window * span + page, kind="stable")
    else:
        order = np.lexsort((page, window))
    window, page, count = window[order], page[order], count[order]
    del order
    first = np.ones(window.shape[0], dtype=np.bool_)
    first[1:] = (window[1:] != window[:-1]) | (page[1:] != page[:-1])
    starts = np.flatnonzero(first)
    uniq_window, uniq_page = window[starts], page[starts].astype(np.intp)
    rates = (np.add.reduceat(count, starts) / window_s).astype(np.float32)
    del window, page, count, first
    offsets = np.searchsorted(uniq_window, np.arange(nr_windows + 1)).astype(np.int64)
    hot = _window_hot(uniq_window, uniq_page, rates, offsets, hot_share)
    hot_window = uniq_window[hot]
    result = WindowRates(
        nr_pages, window_s, offsets, uniq_page, rates,
        np.searchsorted(hot_window, np.arange(nr_windows + 1)).astype(np.int64),
        uniq_page[hot], loop)
    _RATES_CACHE[key] = result
    _RATES_TRACES[id(trace)] = trace
    return result


_RATES_TRACES: dict[int, Trace] = {}  # keeps the traces _RATES_CACHE's ids refer to alive


def _window_hot(window: npt.NDArray[np.int64], page: npt.NDArray[np.intp], rates: F32Array,
                offsets: npt.NDArray[np.int64], hot_share: float) -> npt.NDArray[np.bool_]:
    """Per window: the most accessed pages that together take hot_share of its accesses
    (top_share_pages, all windows at once). Entries sorted by (window, page) -> bool (n,)."""
    n = rates.shape[0]
    hot = np.zeros(n, dtype=np.bool_)
    if not n:
        return hot
    # Within each window: by rate, descending, ties by page descending (as
    # top_share_pages' reversed stable argsort has them).
    order = np.lexsort((-page, -rates, window))
    sorted_rates = rates[order].astype(np.float64)
    cumulative = np.cumsum(sorted_rates)
    window_sorted = window[order]
    before = np.concatenate([[0.0], cumulative])[offsets[window_sorted]]  # sums of earlier windows
    totals = np.concatenate([[0.0], cumulative])[offsets[window_sorted + 1]] - before
    # top_share_pages takes entries up to the first whose running sum reaches the target.
    target = hot_share * totals
    reached_before = np.zeros(n, dtype=np.bool_)
    reached = cumulative - before >= target
    reached_before[1:] = reached[:-1] & (window_sorted[1:] == window_sorted[:-1])
    hot[order] = (totals > 0) & ~reached_before
    return hot


def trace_end_s(trace: Trace, trace_pid: int, window_s: float, where: str) -> float:
    """The end of the last window that holds a selected record."""
    t_s = trace.t_s[_trace_records(trace, trace_pid, where)]
    return (float(t_s.max()) // window_s + 1) * window_s
