"""Access patterns of simulated VMAs, as per-page access rates over virtual time.

A workload never simulates single accesses. It gives each page an access
rate (accesses per second), and the expected number of accesses of a page
over an interval (the rate's integral). The simulated Accessed bit of page i,
last cleared at t0 and tested at t1, is set with probability
1 - exp(-integral_i(t0, t1)): one random draw per page tested, none per tick.
The share of accesses served by a tier is exact: the rate-weighted share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

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
        t0 = t0_s.astype(np.float64)
        last = self.epoch(t1_s)
        first = max(self.epoch(float(t0.min())) if t0.size else last, last - MAX_EPOCHS_BACK)
        out = np.zeros(rank.shape[0], dtype=np.float64)
        for epoch in range(first, last + 1):
            lo = np.maximum(t0, epoch * self.period_s)
            hi = min(t1_s, (epoch + 1) * self.period_s)
            overlap = np.maximum(hi - lo, 0.0)
            rate = np.where(self._hot_in(rank, epoch), self.hot_rate, self.cold_rate)
            out += rate * overlap
        return out.astype(np.float32)


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
