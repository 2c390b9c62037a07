"""Access patterns of simulated VMAs, as per-page access rates over virtual time.

A workload never simulates single accesses. It gives each page an access
rate (accesses per second), and the expected number of accesses of a page
over an interval (the rate's integral). The simulated Accessed bit of page i,
last cleared at t0 and tested at t1, is set with probability
1 - exp(-integral_i(t0, t1)): one random draw per page tested, none per tick.
The share of accesses served by a tier is exact: the rate-weighted share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from kscand.errors import ConfigError
from kscand.sim.tracefile import (  # noqa: F401  (parse_trace, TRACE_PAGE_SHIFT: re-exported)
    TRACE_MEMORY_LIMIT_BYTES,
    TRACE_PAGE_SHIFT,
    Trace,
    load_trace,
    parse_trace,
)

if TYPE_CHECKING:
    from kscand.sim.scenario import WorkloadSpec

F32Array = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
IdxArray = npt.NDArray[np.intp]
# Pages of a VMA: an index array, or a slice for a contiguous run (no gather).
PageIndex = IdxArray | slice

# Epochs looked back over when integrating a moving hot set: accesses older
# than this many epochs are forgotten (they no longer change a probability
# that is 1 - exp(-sum) by more than noise for any sane scan period).
MAX_EPOCHS_BACK = 64
# Integral returned for a page a sequential stream certainly touched.
CERTAIN = 1e3


def integrate_epochs(
    t0_s: F32Array,
    t1_s: float,
    epoch_s: float,
    rates_in: Callable[[int], npt.NDArray[np.floating[Any]]],
) -> F32Array:
    """Expected accesses in [t0_s[k], t1_s] when rates are constant within epochs of
    epoch_s: the sum over epochs of rate x overlap. rates_in(epoch) gives the
    pages' rates in one epoch. At most MAX_EPOCHS_BACK epochs are looked back over.
    """
    t0 = t0_s.astype(np.float64)
    last = int(t1_s // epoch_s)
    first = max(int(float(t0.min()) // epoch_s) if t0.size else last, last - MAX_EPOCHS_BACK)
    out = np.zeros(t0.shape[0], dtype=np.float64)
    for epoch in range(first, last + 1):
        lo = np.maximum(t0, epoch * epoch_s)
        hi = min(t1_s, (epoch + 1) * epoch_s)
        out += rates_in(epoch) * np.maximum(hi - lo, 0.0)
    return out.astype(np.float32)


class Workload(Protocol):
    """Per-page access rates of one VMA over virtual time."""

    @property
    def nr_pages(self) -> int: ...

    def epoch(self, t_s: float) -> int:
        """An id that changes whenever rates change (0 for a static workload)."""
        ...

    def rates(self, t_s: float) -> F32Array:
        """Access rate of every page at time t_s, accesses/s. float32 (nr_pages,)."""
        ...

    def integral(self, idx: PageIndex, t0_s: F32Array, t1_s: float) -> F32Array:
        """Expected accesses of pages idx in [t0_s[k], t1_s]. float32 (len(idx),)."""
        ...

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        """The pages this workload calls hot at t_s (the target of promotion). bool (nr_pages,)."""
        ...

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        """rates(t_s)[idx], without computing every page's rate. float32 (len(idx),)."""
        ...

    def hot_of(self, idx: IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        """hot(t_s)[idx], without computing every page's. bool (len(idx),)."""
        ...


@dataclass
class StaticRates:
    """Fixed per-page rates: uniform, Zipf and hot-set workloads are all this."""

    base: F32Array
    hot_pages: npt.NDArray[np.bool_]

    @property
    def nr_pages(self) -> int:
        return int(self.base.shape[0])

    def epoch(self, t_s: float) -> int:
        return 0

    def rates(self, t_s: float) -> F32Array:
        return self.base

    def integral(self, idx: PageIndex, t0_s: F32Array, t1_s: float) -> F32Array:
        dt = np.maximum(np.float32(t1_s) - t0_s, np.float32(0.0))
        return self.base[idx] * dt

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        return self.hot_pages

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        return self.base[idx]

    def hot_of(self, idx: IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        return self.hot_pages[idx]


def uniform(nr_pages: int, rate_per_s: float) -> StaticRates:
    """Every page equally likely: the series' flat random microbenchmark."""
    base = np.full(nr_pages, rate_per_s / max(nr_pages, 1), dtype=np.float32)
    return StaticRates(base, np.ones(nr_pages, dtype=np.bool_))


def hotset(
    nr_pages: int,
    rate_per_s: float,
    hot_fraction: float,
    hot_share: float,
    rng: np.random.Generator,
) -> StaticRates:
    """A random hot_fraction of the pages takes hot_share of the accesses."""
    nr_hot = round(nr_pages * hot_fraction)
    hot_pages = np.zeros(nr_pages, dtype=np.bool_)
    if 0 < nr_hot < nr_pages:
        # The nr_hot pages with the smallest random keys: a uniform random
        # subset, without permuting every page.
        keys = rng.random(nr_pages, dtype=np.float32)
        hot_pages[np.argpartition(keys, nr_hot)[:nr_hot]] = True
    elif nr_hot:
        hot_pages[:] = True
    base = np.zeros(nr_pages, dtype=np.float32)
    if nr_hot:
        base[hot_pages] = rate_per_s * hot_share / nr_hot
    if nr_pages > nr_hot:
        base[~hot_pages] = rate_per_s * (1.0 - hot_share) / (nr_pages - nr_hot)
    return StaticRates(base, hot_pages)


def zipf(
    nr_pages: int, rate_per_s: float, skew: float, hot_share: float, rng: np.random.Generator
) -> StaticRates:
    """Zipf popularity over a random page order; hot = the most popular pages
    that together take hot_share of the accesses."""
    weights = 1.0 / np.power(np.arange(1, nr_pages + 1, dtype=np.float64), skew)
    weights /= weights.sum()
    nr_hot = int(np.searchsorted(np.cumsum(weights), hot_share) + 1)
    order = rng.permutation(nr_pages)
    base = np.empty(nr_pages, dtype=np.float32)
    base[order] = (weights * rate_per_s).astype(np.float32)
    hot_pages = np.zeros(nr_pages, dtype=np.bool_)
    hot_pages[order[: min(nr_hot, nr_pages)]] = True
    return StaticRates(base, hot_pages)


@dataclass
class MovingHotset:
    """A hot set of hot_fraction of the pages that moves every period_s.

    Page i is hot in epoch k when (rank_i - k * shift) mod n < nr_hot, with a
    fixed random rank: each epoch a new, partly overlapping hot set.
    """

    rank: npt.NDArray[np.int32]
    nr_hot: int
    shift: int
    period_s: float
    hot_rate: float
    cold_rate: float

    @property
    def nr_pages(self) -> int:
        return int(self.rank.shape[0])

    def epoch(self, t_s: float) -> int:
        return int(t_s // self.period_s)

    def _hot_in(self, rank: npt.NDArray[np.int32], epoch: int) -> npt.NDArray[np.bool_]:
        n = self.nr_pages
        return ((rank.astype(np.int64) - epoch * self.shift) % n) < self.nr_hot

    def rates(self, t_s: float) -> F32Array:
        hot = self._hot_in(self.rank, self.epoch(t_s))
        return np.where(hot, self.hot_rate, self.cold_rate).astype(np.float32)

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        return self._hot_in(self.rank, self.epoch(t_s))

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        hot = self._hot_in(self.rank[idx], self.epoch(t_s))
        return np.where(hot, self.hot_rate, self.cold_rate).astype(np.float32)

    def hot_of(self, idx: IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        return self._hot_in(self.rank[idx], self.epoch(t_s))

    def integral(self, idx: PageIndex, t0_s: F32Array, t1_s: float) -> F32Array:
        rank = self.rank[idx]
        return integrate_epochs(
            t0_s, t1_s, self.period_s,
            lambda epoch: np.where(self._hot_in(rank, epoch), self.hot_rate, self.cold_rate),
        )


def moving_hotset(
    nr_pages: int,
    rate_per_s: float,
    hot_fraction: float,
    hot_share: float,
    period_s: float,
    shift_fraction: float,
    rng: np.random.Generator,
) -> MovingHotset:
    """A hot set that moves by shift_fraction of the pages every period_s."""
    nr_hot = max(1, round(nr_pages * hot_fraction))
    rank = rng.permutation(nr_pages).astype(np.int32)
    hot_rate = rate_per_s * hot_share / nr_hot
    cold_rate = rate_per_s * (1 - hot_share) / max(nr_pages - nr_hot, 1)
    shift = max(1, round(nr_pages * shift_fraction))
    return MovingHotset(rank, nr_hot, shift, period_s, hot_rate, cold_rate)


@dataclass
class Sequential:
    """A stream sweeping the pages in order at pages_per_s, wrapping around."""

    nr_pages: int
    pages_per_s: float

    def epoch(self, t_s: float) -> int:
        return 0

    def rates(self, t_s: float) -> F32Array:
        return np.full(self.nr_pages, self.pages_per_s / max(self.nr_pages, 1), dtype=np.float32)

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        # Each page is touched once per sweep: with a sweep slower than the
        # scan period nothing is reused soon enough to be worth promoting.
        return np.zeros(self.nr_pages, dtype=np.bool_)

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        return np.full(idx.shape[0], self.pages_per_s / max(self.nr_pages, 1), dtype=np.float32)

    def hot_of(self, idx: IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        return np.zeros(idx.shape[0], dtype=np.bool_)

    def integral(self, idx: PageIndex, t0_s: F32Array, t1_s: float) -> F32Array:
        if isinstance(idx, slice):
            idx = np.arange(idx.start, idx.stop, dtype=np.intp)
        n = self.nr_pages
        pos1 = self.pages_per_s * t1_s
        pos0 = self.pages_per_s * t0_s.astype(np.float64)
        passes = np.floor((pos1 - idx) / n) - np.floor((pos0 - idx) / n)
        return np.where(passes > 0, np.float32(CERTAIN), np.float32(0.0))


def accessed_probability(expected_accesses: F32Array) -> F32Array:
    """P(Accessed bit set) given the expected number of accesses (Poisson)."""
    return -np.expm1(-expected_accesses)


# --- Workload kinds added for the evaluation (issue 6): GUPS with a hot set, a
# graph-like power law, and trace replay. Built by make_added() below.

ADDED_KINDS = ("gups", "power-law", "trace")
# Pages per chunk when drawing per-vertex degrees (bounds the temporary arrays).
POWER_LAW_CHUNK_PAGES = 1 << 18


def _two_level(hot_pages: npt.NDArray[np.bool_], rate_per_s: float, hot_share: float) -> F32Array:
    """Rates where the hot pages share hot_share of rate_per_s evenly, the rest the remainder."""
    nr_pages = int(hot_pages.shape[0])
    nr_hot = int(np.count_nonzero(hot_pages))
    base = np.zeros(nr_pages, dtype=np.float32)
    if nr_hot:
        base[hot_pages] = rate_per_s * (hot_share if nr_hot < nr_pages else 1.0) / nr_hot
    if nr_pages > nr_hot:
        base[~hot_pages] = rate_per_s * (1.0 - hot_share) / (nr_pages - nr_hot)
    return base


def gups(
    nr_pages: int,
    rate_per_s: float,
    hot_fraction: float,
    hot_share: float,
    rng: np.random.Generator,
) -> StaticRates:
    """GUPS with a hot set: random updates over a table in which one contiguous run of
    hot_fraction of the pages, at a random offset, takes hot_share of the updates.

    Unlike `hotset` the hot pages are adjacent (the hot-set GUPS of the tiering
    literature), which region-based monitors such as DAMON can exploit.
    """
    nr_hot = min(nr_pages, round(nr_pages * hot_fraction))
    start = int(rng.integers(0, nr_pages - nr_hot + 1))
    hot_pages = np.zeros(nr_pages, dtype=np.bool_)
    hot_pages[start : start + nr_hot] = True
    return StaticRates(_two_level(hot_pages, rate_per_s, hot_share), hot_pages)


def top_share_pages(base: F32Array, hot_share: float) -> npt.NDArray[np.bool_]:
    """The most accessed pages that together take hot_share of the accesses. (n,) -> bool (n,)."""
    order = np.argsort(base, kind="stable")[::-1]
    cumulative = np.cumsum(base[order], dtype=np.float64)
    total = float(cumulative[-1]) if cumulative.size else 0.0
    hot_pages = np.zeros(base.shape[0], dtype=np.bool_)
    if total <= 0:
        return hot_pages
    nr_hot = min(int(np.searchsorted(cumulative, hot_share * total)) + 1, base.shape[0])
    hot_pages[order[:nr_hot]] = True
    return hot_pages


def power_law(
    nr_pages: int,
    rate_per_s: float,
    exponent: float,
    vertices_per_page: int,
    hot_share: float,
    sorted_ids: bool,
    rng: np.random.Generator,
) -> StaticRates:
    """A graph's vertex data: degrees follow a power law (Pareto, tail exponent `exponent`),
    each page holds vertices_per_page vertices, and a page is accessed in proportion to
    the sum of its vertices' degrees (an edge traversal reads its endpoint's data).

    With random vertex ids (sorted_ids false) every page mixes hot and cold vertices, so
    the per-page skew is much flatter than the per-vertex skew; with degree-sorted ids
    (a common relabelling) the hottest vertices share the first pages. Hot = the most
    accessed pages that take hot_share of the accesses.
    """
    weights = np.empty(nr_pages, dtype=np.float64)
    if sorted_ids:
        degrees = rng.pareto(exponent, size=nr_pages * vertices_per_page).astype(np.float32)
        degrees = np.sort(degrees)[::-1]
        weights[:] = degrees.reshape(nr_pages, vertices_per_page).sum(axis=1, dtype=np.float64)
    else:
        for lo in range(0, nr_pages, POWER_LAW_CHUNK_PAGES):
            n = min(POWER_LAW_CHUNK_PAGES, nr_pages - lo)
            chunk = rng.pareto(exponent, size=(n, vertices_per_page)).astype(np.float32)
            weights[lo : lo + n] = chunk.sum(axis=1, dtype=np.float64)
    weights += vertices_per_page  # numpy's pareto is Lomax (minimum 0): degree = draw + 1
    base = (weights * (rate_per_s / weights.sum())).astype(np.float32)
    return StaticRates(base, top_share_pages(base, hot_share))


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
    keep = trace.pid == trace_pid
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


def make_added(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    """The Workload of one of ADDED_KINDS. Trace errors raise ConfigError."""
    if spec.kind == "gups":
        return gups(nr_pages, spec.rate_per_s, spec.hot_fraction, spec.hot_share, rng)
    if spec.kind == "power-law":
        return power_law(nr_pages, spec.rate_per_s, spec.skew, spec.vertices_per_page,
                         spec.hot_share, spec.sorted_ids, rng)
    if spec.kind == "trace":
        return trace_rates(load_trace(spec.path), nr_pages, spec.trace_pid, spec.window_s,
                           spec.hot_share, spec.loop, spec.path)
    raise ConfigError(f"unknown workload kind {spec.kind!r}")


def trace_end_s(trace: Trace, trace_pid: int, window_s: float, where: str) -> float:
    """The end of the last window that holds a selected record."""
    t_s = trace.t_s[_trace_records(trace, trace_pid, where)]
    return (float(t_s.max()) // window_s + 1) * window_s


def workload_end_s(spec: WorkloadSpec) -> float | None:
    """When a workload stops accessing anything for good: the end of a trace that does
    not loop; None for every other workload (they run for ever)."""
    if spec.kind != "trace" or spec.loop:
        return None
    return trace_end_s(load_trace(spec.path), spec.trace_pid, spec.window_s, spec.path)
