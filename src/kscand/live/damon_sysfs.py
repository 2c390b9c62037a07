"""DAMON's sysfs interface as the DAMON access source uses it: the settings, the file
I/O under kernel/mm/damon/admin/kdamonds, and the tried regions read back (which pages
count as accessed; which ranges a step already consumed). kscand.live.damon explains
the protocol."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from kscand.machine import BoolArray, U64Array

DAMON_KDAMONDS = "kernel/mm/damon/admin/kdamonds"
ULONG_MAX_SAFE = (1 << 63) - 1  # "large max" for sz
UINT_MAX = (1 << 32) - 1  # nr_accesses and age are unsigned int in the kernel
PENDING_RETRY = 5  # refresh periods to wait for a pending tried_regions before asking again


@dataclass(frozen=True, slots=True)
class DamonSettings:
    """Monitoring attributes and the bounds of kscand's DAMON use."""

    sample_us: int = 5_000
    aggr_us: int = 100_000
    update_us: int = 1_000_000
    min_nr_regions: int = 10
    max_nr_regions: int = 200  # bounds the files read per snapshot
    refresh_ms: int = 1_000  # request a new snapshot at most this often per process
    max_kdamonds: int = 8  # processes monitored at once
    # A region counts as accessed when at least this share of an aggregation's samples
    # (aggr_us / sample_us = 20) found it accessed. DAMON samples one random page of a
    # region per sample, so the share estimates how much of the region is hot: with 1 of
    # 20 (any access), a 50 MiB region holding a 6 MiB hot run looked accessed in most
    # aggregations early on, and kscand promoted 17 % of the cold pages of the testbed's
    # vm-compare; DAMOS asking for 5 of 20 promoted 3. The price: pages accessed less
    # than once per ~4 sample intervals (20 ms) are not seen at all.
    min_access_share: float = 0.25
    # What one step may wait in all for requested snapshots (the rest of the step uses the
    # latest complete one): a slow kernel delays promotion, never the scan.
    max_step_block_ms: int = 100
    pending_poll_ms: int = 50  # re-read an empty tried_regions this often (lazy kernels)
    stop_timeout_ms: int = 5_000  # close(): how long to wait for the requester thread

    @property
    def min_nr_accesses(self) -> int:
        """nr_accesses a region needs to count as accessed (>= 1)."""
        samples = max(1, self.aggr_us // max(1, self.sample_us))
        return max(1, math.ceil(self.min_access_share * samples))


class DamonSysfs:
    """Text I/O under the kdamonds directory (tests subclass it to emulate the kernel)."""

    def __init__(self, root: str) -> None:
        self.root = root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def read(self, rel: str) -> str:
        with open(self.path(rel), encoding="ascii", errors="replace") as f:
            return f.read().strip()

    def write(self, rel: str, value: str | int) -> None:
        with open(self.path(rel), "w", encoding="ascii") as f:
            f.write(f"{value}\n")

    def listdir(self, rel: str) -> list[str]:
        try:
            return os.listdir(self.path(rel))
        except OSError:
            return []


@dataclass(frozen=True, slots=True)
class Regions:
    """DAMON regions of one snapshot, sorted by start: arrays of shape (r,)."""

    start: U64Array
    end: U64Array
    nr_accesses: U64Array

    @staticmethod
    def empty() -> Regions:
        zero = np.zeros(0, dtype=np.uint64)
        return Regions(zero, zero, zero)

    def __len__(self) -> int:
        return int(self.start.shape[0])


def regions_accessed(regions: Regions, vaddr: U64Array, min_nr_accesses: int = 1) -> BoolArray:
    """Pages inside a region with nr_accesses >= min_nr_accesses. uint64 (n,) -> bool (n,)."""
    if len(regions) == 0:
        return np.zeros(vaddr.shape, dtype=np.bool_)
    idx = np.searchsorted(regions.start, vaddr, side="right").astype(np.intp) - 1
    clipped = np.maximum(idx, 0)
    inside = (idx >= 0) & (vaddr < regions.end[clipped])
    return inside & (regions.nr_accesses[clipped] >= max(1, min_nr_accesses))


@dataclass(eq=False, slots=True)
class ConsumedRanges:
    """Address ranges already reported from the current snapshot (the "clear" of test-and-clear)."""

    lo: list[int] = field(default_factory=list)
    hi: list[int] = field(default_factory=list)

    def clear(self) -> None:
        self.lo.clear()
        self.hi.clear()

    def mask(self, vaddr: U64Array) -> BoolArray:
        """Pages inside a consumed range. uint64 (n,) -> bool (n,)."""
        if not self.lo:
            return np.zeros(vaddr.shape, dtype=np.bool_)
        lo = np.array(self.lo, dtype=np.uint64)
        hi = np.array(self.hi, dtype=np.uint64)
        idx = np.searchsorted(lo, vaddr, side="right").astype(np.intp) - 1
        clipped = np.maximum(idx, 0)
        return (idx >= 0) & (vaddr < hi[clipped])

    def add(self, start: int, end: int) -> None:
        """Add [start, end), merging with overlapping or adjacent ranges."""
        spans = sorted([*zip(self.lo, self.hi, strict=True), (start, end)])
        merged: list[tuple[int, int]] = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.lo = [lo for lo, _ in merged]
        self.hi = [hi for _, hi in merged]
