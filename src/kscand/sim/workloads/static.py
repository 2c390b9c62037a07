"""Workloads with fixed per-page rates: uniform, hot set, Zipf, GUPS with a hot set, and a
graph-like power law (the last two added for the evaluation, issue 6)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.sim.workloads.base import (
    FOREVER,
    F32Array,
    F64Array,
    IdxArray,
    PageIndex,
    poisson_next_access_s,
)


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
        out: F32Array = self.base[idx] * dt
        return out

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        return self.hot_pages

    def rates_of(self, idx: IdxArray, t_s: float) -> F32Array:
        return self.base[idx]

    def epoch_bounds(self, t_s: float) -> tuple[float, float]:
        return FOREVER

    def next_access_s(
        self, units: IdxArray, unit_pages: int, t0_s: float, rng: np.random.Generator
    ) -> F64Array:
        return poisson_next_access_s(self, units, unit_pages, t0_s, rng)

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
