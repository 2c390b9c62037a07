"""Workloads whose rates change over time: a hot set that moves every period_s, and a
sequential sweep."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.sim.workloads.base import (
    CERTAIN,
    FOREVER,
    F32Array,
    F64Array,
    IdxArray,
    PageIndex,
    epoch_bounds_every,
    integrate_epochs,
    poisson_next_access_s,
)


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

    def epoch_bounds(self, t_s: float) -> tuple[float, float]:
        return epoch_bounds_every(t_s, self.period_s)

    def next_access_s(
        self, units: IdxArray, unit_pages: int, t0_s: float, rng: np.random.Generator
    ) -> F64Array:
        return poisson_next_access_s(self, units, unit_pages, t0_s, rng)

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

    def epoch_bounds(self, t_s: float) -> tuple[float, float]:
        return FOREVER

    def next_access_s(
        self, units: IdxArray, unit_pages: int, t0_s: float, rng: np.random.Generator
    ) -> F64Array:
        """The unit's first page is touched once a sweep: the next pass after t0_s."""
        n, speed = self.nr_pages, self.pages_per_s
        if speed <= 0:
            return np.full(units.shape[0], np.inf)
        first = units.astype(np.float64) * unit_pages
        pos = speed * t0_s
        sweeps = np.floor((pos - first) / n) + 1  # next pass strictly after t0
        out: F64Array = (first + sweeps * n) / speed
        return out

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
