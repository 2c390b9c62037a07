"""DAMON's regions: the adaptive region split/merge and the DAMOS hot score (mm/damon/core.c
and ops-common.c, v6.x), shared by the vaddr model (damon.py) and the physical-address
tiering model (damos_tier.py). Addresses are bytes; arrays are one entry per region.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kscand.machine import PAGE_SIZE

I64Array = npt.NDArray[np.int64]

DAMON_MIN_REGION = PAGE_SIZE
DAMON_MAX_SUBSCORE = 100
DAMON_MAX_AGE_IN_LOG = 32
DAMOS_MAX_SCORE = 99


@dataclass
class Regions:
    """A target's regions, in address order: arrays of shape (n,)."""

    start: I64Array
    end: I64Array
    nr_accesses: I64Array
    last_nr_accesses: I64Array
    age: I64Array
    sampling: I64Array  # the address made old at the last prepare (-1: none yet)

    @staticmethod
    def of(bounds: list[tuple[int, int]]) -> Regions:
        start = np.array([b[0] for b in bounds], dtype=np.int64)
        end = np.array([b[1] for b in bounds], dtype=np.int64)
        zeros = np.zeros(start.shape[0], dtype=np.int64)
        return Regions(start, end, zeros.copy(), zeros.copy(), zeros.copy(), zeros - 1)

    def __len__(self) -> int:
        return int(self.start.shape[0])

    @property
    def size(self) -> I64Array:
        return self.end - self.start

    def rows(self) -> list[list[int]]:
        """Per region [start, end, nr_accesses, last_nr_accesses, age, sampling]."""
        cols = (self.start, self.end, self.nr_accesses, self.last_nr_accesses, self.age,
                self.sampling)
        return [list(r) for r in zip(*(c.tolist() for c in cols), strict=True)]

    @staticmethod
    def from_rows(rows: list[list[int]]) -> Regions:
        arr = np.array(rows, dtype=np.int64).reshape(-1, 6)
        return Regions(*(arr[:, i].copy() for i in range(6)))


def three_regions(vmas: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """damon_va_three_regions(): the span of the VMAs minus its two largest gaps."""
    if not vmas:
        return []
    gaps = [(vmas[i + 1][0] - vmas[i][1], i) for i in range(len(vmas) - 1)
            if vmas[i + 1][0] > vmas[i][1]]
    biggest: list[tuple[int, int]] = []
    for gap in gaps:  # strictly larger replaces: ties keep the lower gap, like the kernel
        if not biggest or gap[0] > biggest[0][0]:
            biggest = [gap, *biggest][:2]
        elif len(biggest) < 2 or gap[0] > biggest[1][0]:
            biggest = [biggest[0], gap]
    cuts = sorted(i for _, i in biggest)
    out, lo = [], vmas[0][0]
    for i in cuts:
        out.append((lo, vmas[i][1]))
        lo = vmas[i + 1][0]
    out.append((lo, vmas[-1][1]))
    return out


def initial_regions(bounds: list[tuple[int, int]], min_nr_regions: int) -> Regions:
    """__damon_va_init_regions(): each of the (three) regions split evenly into pieces
    of about total / min_nr_regions."""
    total = sum(e - s for s, e in bounds)
    piece = max(DAMON_MIN_REGION, total // max(1, min_nr_regions))
    out: list[tuple[int, int]] = []
    for s, e in bounds:
        nr = max(1, (e - s) // piece)
        sz = max(DAMON_MIN_REGION, ((e - s) // nr) // DAMON_MIN_REGION * DAMON_MIN_REGION)
        starts = [s + k * sz for k in range(nr)]
        out += [(a, b) for a, b in zip(starts, [*starts[1:], e], strict=True) if b > a]
    return Regions.of(out)


def merge_regions(regions: Regions, thres: int, sz_limit: int, zero_flip: bool = False
                  ) -> Regions:
    """damon_merge_regions_of(): age update, then merge similar adjacent regions.

    zero_flip: also reset the age when nr_accesses went from zero to non-zero or
    back (the rule of recent kernels)."""
    out: list[list[int]] = []
    for r in regions.rows():
        start, end, nr, last, age, _ = r
        flipped = zero_flip and (nr == 0) != (last == 0)
        r[4] = 0 if abs(nr - last) > thres or flipped else age + 1
        if out:
            prev = out[-1]
            if prev[1] == start and abs(prev[2] - nr) <= thres and \
                    (prev[1] - prev[0]) + (end - start) <= sz_limit:
                sz_l, sz_r = prev[1] - prev[0], end - start
                prev[2] = (prev[2] * sz_l + nr * sz_r) // (sz_l + sz_r)
                prev[4] = (prev[4] * sz_l + r[4] * sz_r) // (sz_l + sz_r)
                prev[1] = end
                continue
        out.append(r)
    return Regions.from_rows(out)


def split_regions(regions: Regions, nr_subs: int, rng: np.random.Generator) -> Regions:
    """damon_split_regions_of(): cut each region at random 10-90 % points."""
    out: list[list[int]] = []
    for r in regions.rows():
        pieces = [r]
        for _ in range(nr_subs - 1):
            left = pieces[0]
            sz = left[1] - left[0]
            if sz <= 2 * DAMON_MIN_REGION:
                break
            sz_sub = int(rng.integers(1, 10)) * sz // 10 // DAMON_MIN_REGION * DAMON_MIN_REGION
            if sz_sub == 0 or sz_sub >= sz:
                continue
            right = [left[0] + sz_sub, left[1], 0, left[3], left[4], -1]
            left[1] = left[0] + sz_sub
            pieces.insert(1, right)
        out += pieces
    return Regions.from_rows(out)


class ScoreParams(Protocol):
    """What damon_hot_score() reads of a context and scheme."""

    @property
    def aggr_us(self) -> int: ...
    @property
    def max_nr_accesses(self) -> int: ...
    @property
    def weight_nr_accesses(self) -> int: ...
    @property
    def weight_age(self) -> int: ...


def hot_score(nr_accesses: int, age: int, params: ScoreParams) -> int:
    """damon_hot_score(): 0..DAMOS_MAX_SCORE from access frequency and age."""
    freq = nr_accesses * DAMON_MAX_SUBSCORE // params.max_nr_accesses
    age_in_sec = age * params.aggr_us // 1_000_000
    age_in_log = 0
    while age_in_log < DAMON_MAX_AGE_IN_LOG and age_in_sec:
        age_in_log += 1
        age_in_sec >>= 1
    if freq == 0:
        age_in_log = -age_in_log
    age_sub = (age_in_log + DAMON_MAX_AGE_IN_LOG) * DAMON_MAX_SUBSCORE \
        // DAMON_MAX_AGE_IN_LOG // 2
    weights = params.weight_nr_accesses + params.weight_age
    hotness = params.weight_nr_accesses * freq + params.weight_age * age_sub
    if weights:
        hotness //= weights
    return hotness * DAMOS_MAX_SCORE // DAMON_MAX_SUBSCORE
