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


@dataclass(frozen=True)
class Trace:
    """A parsed access trace: one row per record, sorted by time.

    t_s float64, pid int64, page int64 (address >> PAGE_SHIFT), count float64
    (the accesses the record stands for, 1 unless the file says otherwise).
    """

    t_s: F64Array
    pid: npt.NDArray[np.int64]
    page: npt.NDArray[np.int64]
    count: F64Array


TRACE_PAGE_SHIFT = 12


def parse_trace(text: str, where: str) -> Trace:
    """Parse a trace file's text: lines `time_s,pid,address[,count]`.

    Blank lines and lines starting with '#' are skipped; an optional first line
    whose first field is not a number is a header. Addresses are decimal or 0x hex
    byte addresses. Raises ConfigError naming `where` and the line on bad input.
    """
    t_s: list[float] = []
    pid: list[int] = []
    page: list[int] = []
    count: list[float] = []
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if not t_s and not header_seen and not _is_number(fields[0]):
            header_seen = True
            continue
        if len(fields) not in (3, 4):
            raise ConfigError(f"{where}:{lineno}: expected time_s,pid,address[,count]")
        try:
            t = float(fields[0])
            p = int(fields[1], 10)
            addr = int(fields[2], 0)
            c = float(fields[3]) if len(fields) == 4 else 1.0
        except ValueError:
            raise ConfigError(f"{where}:{lineno}: cannot parse {line!r}") from None
        if t < 0 or addr < 0 or c < 0 or not np.isfinite(t) or not np.isfinite(c):
            raise ConfigError(f"{where}:{lineno}: negative or non-finite value in {line!r}")
        t_s.append(t)
        pid.append(p)
        page.append(addr >> TRACE_PAGE_SHIFT)
        count.append(c)
    if not t_s:
        raise ConfigError(f"{where}: no records")
    order = np.argsort(np.array(t_s), kind="stable")
    return Trace(
        np.array(t_s, dtype=np.float64)[order],
        np.array(pid, dtype=np.int64)[order],
        np.array(page, dtype=np.int64)[order],
        np.array(count, dtype=np.float64)[order],
    )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


_TRACE_CACHE: dict[str, Trace] = {}


def load_trace(path: str) -> Trace:
    """The parsed trace at path (cached per process). Raises ConfigError on bad input."""
    trace = _TRACE_CACHE.get(path)
    if trace is None:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as err:
            raise ConfigError(f"{path}: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not valid UTF-8 text") from err
        trace = parse_trace(text, path)
        _TRACE_CACHE[path] = trace
    return trace


@dataclass
class WindowRates:
    """Per-page rates that change every window_s, from a replayed trace.

    Window k holds the pages accessed in [k * window_s, (k + 1) * window_s) with
    rate = accesses / window_s (every other page: 0). Sparse: each window keeps
    its sorted page indices and their rates. After the last window the trace
    repeats when loop is true, else every rate is 0.
    """

    nr_pages: int
    window_s: float
    pages: list[npt.NDArray[np.intp]]  # per window: sorted page indices with accesses
    page_rates: list[F32Array]  # per window: their rates, accesses/s
    hot_pages: list[npt.NDArray[np.intp]]  # per window: the pages this workload calls hot
    loop: bool

    def epoch(self, t_s: float) -> int:
        return int(t_s // self.window_s)

    def _window(self, epoch: int) -> int | None:
        if epoch < 0:
            return None
        if epoch < len(self.pages):
            return epoch
        return epoch % len(self.pages) if self.loop else None

    def _lookup(self, idx: PageIndex, window: int | None) -> F32Array:
        if isinstance(idx, slice):
            idx = np.arange(idx.start, idx.stop, dtype=np.intp)
        out = np.zeros(idx.shape[0], dtype=np.float32)
        if window is None or not self.pages[window].size:
            return out
        pages = self.pages[window]
        pos = np.minimum(np.searchsorted(pages, idx), pages.shape[0] - 1)
        found = pages[pos] == idx
        out[found] = self.page_rates[window][pos[found]]
        return out

    def rates(self, t_s: float) -> F32Array:
        out = np.zeros(self.nr_pages, dtype=np.float32)
        window = self._window(self.epoch(t_s))
        if window is not None:
            out[self.pages[window]] = self.page_rates[window]
        return out

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        return self._lookup(idx, self._window(self.epoch(t_s)))

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        out = np.zeros(self.nr_pages, dtype=np.bool_)
        window = self._window(self.epoch(t_s))
        if window is not None:
            out[self.hot_pages[window]] = True
        return out

    def hot_of(self, idx: IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        window = self._window(self.epoch(t_s))
        if window is None:
            return np.zeros(idx.shape[0], dtype=np.bool_)
        return np.isin(idx, self.hot_pages[window])

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


def trace_rates(
    trace: Trace, nr_pages: int, trace_pid: int, window_s: float, hot_share: float, loop: bool,
    where: str,
) -> WindowRates:
    """Per-page rates per window from a trace's records of one pid (-1: every pid).

    Page i of the VMA is the i-th page from the lowest page the selected records
    touch. Raises ConfigError when nothing is selected or the span exceeds nr_pages.
    """
    keep = _trace_records(trace, trace_pid, where)
    page = trace.page[keep]
    span = int(page.max() - page.min()) + 1
    if span > nr_pages:
        raise ConfigError(
            f"{where}: the trace spans {span} pages but the VMA has {nr_pages}; make it larger"
        )
    page = (page - page.min()).astype(np.intp)
    window = (trace.t_s[keep] // window_s).astype(np.int64)
    count = trace.count[keep]
    nr_windows = int(window.max()) + 1
    pages: list[npt.NDArray[np.intp]] = []
    rates: list[F32Array] = []
    hot: list[npt.NDArray[np.intp]] = []
    bounds = np.searchsorted(window, np.arange(nr_windows + 1))
    for k in range(nr_windows):
        lo, hi = int(bounds[k]), int(bounds[k + 1])
        uniq, inverse = np.unique(page[lo:hi], return_inverse=True)
        sums = np.bincount(inverse, weights=count[lo:hi], minlength=uniq.shape[0])
        window_rates = (sums / window_s).astype(np.float32)
        pages.append(uniq.astype(np.intp))
        rates.append(window_rates)
        hot.append(uniq[top_share_pages(window_rates, hot_share)].astype(np.intp))
    return WindowRates(nr_pages, window_s, pages, rates, hot, loop)


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
