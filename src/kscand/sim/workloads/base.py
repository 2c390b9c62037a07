"""Access patterns of simulated VMAs, as per-page access rates over virtual time.

A workload never simulates single accesses. It gives each page an access
rate (accesses per second), and the expected number of accesses of a page
over an interval (the rate's integral). The simulated Accessed bit of page i,
last cleared at t0 and tested at t1, is set with probability
1 - exp(-integral_i(t0, t1)): one random draw per page tested, none per tick.
The share of accesses served by a tier is exact: the rate-weighted share.

This module holds what every family shares: the Workload protocol, the page
index and array types, the epoch integral and bounds, the Accessed-bit
probability and the Poisson draw of a unit's next access.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

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
# The epoch bounds of a workload whose rates never change.
FOREVER = (-math.inf, math.inf)


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

    def epoch_bounds(self, t_s: float) -> tuple[float, float]:
        """[start, end) of the epoch holding t_s, s: rates stay constant within it
        (FOREVER for a workload whose rates never change)."""
        ...

    def next_access_s(
        self, units: IdxArray, unit_pages: int, t0_s: float, rng: np.random.Generator
    ) -> F64Array:
        """When each unit (unit_pages pages from page units[k] * unit_pages: a page, or
        a THP) is first accessed after t0_s, at the rates of t0_s; inf: never."""
        ...


def epoch_bounds_every(t_s: float, epoch_s: float) -> tuple[float, float]:
    """[start, end) of the epoch holding t_s, epoch k being the t with t // epoch_s == k.

    The bounds are the first floats of epoch k and of epoch k + 1 as `//` sees them:
    (k + 1) * epoch_s itself may still divide down to k (a policy stepping to it would
    read the old epoch's rates there).
    """
    k = t_s // epoch_s
    start, end = k * epoch_s, (k + 1) * epoch_s
    while start // epoch_s < k:
        start = math.nextafter(start, math.inf)
    while start > 0 and math.nextafter(start, -math.inf) // epoch_s >= k:
        start = math.nextafter(start, -math.inf)
    while end // epoch_s <= k:
        end = math.nextafter(end, math.inf)
    while math.nextafter(end, -math.inf) // epoch_s > k:
        end = math.nextafter(end, -math.inf)
    return start, end


def unit_rates_of(workload: Workload, units: IdxArray, unit_pages: int, t_s: float) -> F64Array:
    """Access rate of each unit (a page, or a THP's unit_pages pages) at t_s."""
    if unit_pages == 1:
        return workload.rates_of(units, t_s).astype(np.float64)
    sub = (units[:, None] * unit_pages + np.arange(unit_pages)).ravel()
    rates = workload.rates_of(sub, t_s).astype(np.float64)
    out: F64Array = rates.reshape(-1, unit_pages).sum(axis=1)
    return out


def poisson_next_access_s(
    workload: Workload, units: IdxArray, unit_pages: int, t0_s: float,
    rng: np.random.Generator,
) -> F64Array:
    """Workload.next_access_s of random accesses at each unit's rate: an exponential
    wait (one draw per unit); inf for a unit never accessed at the rates of t0_s."""
    rates = unit_rates_of(workload, units, unit_pages, t0_s)
    draw = rng.exponential(size=units.shape[0])
    with np.errstate(divide="ignore"):
        return np.where(rates > 0, t0_s + draw / np.maximum(rates, 1e-300), np.inf)


def accessed_probability(expected_accesses: F32Array) -> F32Array:
    """P(Accessed bit set) given the expected number of accesses (Poisson)."""
    return -np.expm1(-expected_accesses)
