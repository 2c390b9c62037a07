"""The DAMON access source (CONFIG_DAMON_VADDR + CONFIG_DAMON_SYSFS), for kernels without page_idle.

Per scanned process, kscand runs one kdamond with one vaddr context on its
pid (Documentation/admin-guide/mm/damon/usage.rst, sysfs interface) and a
`stat` scheme whose access pattern matches every region (each max defaults
to 0, so all three ranges are opened up). To read accesses it writes
`update_schemes_tried_regions` to the kdamond's state and reads
schemes/0/tried_regions/R/{start,end,nr_accesses}: a page counts as accessed
when its region was found accessed in at least a quarter of the samples of the
last aggregation (DamonSettings.min_access_share). The kernel fills tried_regions at the
kdamond's next aggregation, so a snapshot may arrive a call later; kscand
never sleeps for it.

DAMON's sysfs interface recreates every kdamond directory when nr_kdamonds is
written and refuses while any kdamond runs, so kscand allocates a fixed pool
of kdamonds once, and only when no one else has configured any.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kscand.errors import AccessDenied, Unsupported
from kscand.machine import PAGE_SIZE, BoolArray, PageBatch, ProcessId, U64Array

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


@dataclass(eq=False, slots=True)
class KdamondSlot:
    """One kdamond of kscand's pool and the process it monitors."""

    index: int
    proc: ProcessId | None = None
    regions: Regions | None = None
    snapshot_ns: int = 0  # when the last snapshot was requested
    pending_since_ns: int | None = None  # a request whose regions have not appeared yet
    consumed: ConsumedRanges = field(default_factory=ConsumedRanges)

    @property
    def base(self) -> str:
        return str(self.index)


class DamonSource:
    """Access source on DAMON vaddr monitoring, one kdamond per process, bounded pool."""

    name = "damon"

    def __init__(
        self,
        sysfs: str = "/sys",
        settings: DamonSettings | None = None,
        *,
        io: DamonSysfs | None = None,
        now_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.settings = settings or DamonSettings()
        self.io = io or DamonSysfs(os.path.join(sysfs, DAMON_KDAMONDS))
        self._now_ns = now_ns
        self.nr_untracked = 0  # batches of processes that got no kdamond (pool full)
        self.nr_snapshots = 0  # snapshots adopted
        self.nr_requests = 0  # update_schemes_tried_regions written
        self.nr_request_errors = 0  # ... and refused (busy, or the kdamond stopped)
        self.nr_pages_tested = 0
        self.nr_pages_stale = 0  # tested against a snapshot already reported: "not accessed"
        self._slots: list[KdamondSlot] = []
        self._by_proc: dict[ProcessId, KdamondSlot] = {}
        self._refused: set[ProcessId] = set()  # the kernel would not monitor them
        self._allocate_pool()

    # --- pool ---------------------------------------------------------------------------------

    def _allocate_pool(self) -> None:
        if not self.io.exists("nr_kdamonds"):
            raise Unsupported(
                f"this kernel has no {self.io.root} (CONFIG_DAMON_SYSFS)"
            )
        existing = self._read_int("nr_kdamonds")
        if existing:
            raise Unsupported(
                f"DAMON sysfs already has {existing} kdamond(s) set up by another tool; "
                "kscand does not disturb them (DAMON recreates all kdamonds on a change)"
            )
        count = self.settings.max_kdamonds
        self._write("nr_kdamonds", count)
        try:
            for index in range(count):
                self._write(f"{index}/contexts/nr_contexts", 1)
            ops = self.io.read("0/contexts/0/avail_operations").split()
            if "vaddr" not in ops:
                raise Unsupported(
                    "DAMON has no vaddr operations (CONFIG_DAMON_VADDR); "
                    f"available: {' '.join(ops) or 'none'}"
                )
        except BaseException:
            self._release_pool()
            raise
        self._slots = [KdamondSlot(index) for index in range(count)]

    def _release_pool(self) -> None:
        with contextlib.suppress(OSError, Unsupported, AccessDenied):
            self._write("nr_kdamonds", 0)

    def _slot_for(self, proc: ProcessId) -> KdamondSlot | None:
        slot = self._by_proc.get(proc)
        if slot is not None:
            return slot
        if proc in self._refused:
            return None
        free = next((s for s in self._slots if s.proc is None), None)
        if free is None:
            free = self._reclaim_stopped()
        if free is None or not self._start(free, proc):
            return None
        return free

    def _reclaim_stopped(self) -> KdamondSlot | None:
        """A slot whose kdamond stopped by itself (its target process exited)."""
        for slot in self._slots:
            if slot.proc is not None and self._state(slot) == "off":
                self._free(slot)
                return slot
        return None

    def _start(self, slot: KdamondSlot, proc: ProcessId) -> bool:
        """Configure slot for proc and turn it on; False if the kernel refused."""
        s = self.settings
        ctx = f"{slot.base}/contexts/0"
        writes: list[tuple[str, str | int]] = [
            (f"{ctx}/operations", "vaddr"),
            (f"{ctx}/monitoring_attrs/intervals/sample_us", s.sample_us),
            (f"{ctx}/monitoring_attrs/intervals/aggr_us", s.aggr_us),
            (f"{ctx}/monitoring_attrs/intervals/update_us", s.update_us),
            (f"{ctx}/monitoring_attrs/nr_regions/min", s.min_nr_regions),
            (f"{ctx}/monitoring_attrs/nr_regions/max", s.max_nr_regions),
            (f"{ctx}/targets/nr_targets", 1),
            (f"{ctx}/targets/0/pid_target", proc.pid),
            (f"{ctx}/schemes/nr_schemes", 1),
            (f"{ctx}/schemes/0/action", "stat"),
        ]
        for name, high in (("sz", ULONG_MAX_SAFE), ("nr_accesses", UINT_MAX), ("age", UINT_MAX)):
            pattern = f"{ctx}/schemes/0/access_pattern/{name}"
            writes += [(f"{pattern}/min", 0), (f"{pattern}/max", high)]
        writes.append((f"{slot.base}/state", "on"))
        try:
            for rel, value in writes:
                self._write(rel, value)
        except (OSError, Unsupported):
            self._refused.add(proc)
            return False
        slot.proc = proc
        slot.regions = None
        slot.snapshot_ns = 0
        slot.pending_since_ns = None
        slot.consumed.clear()
        self._by_proc[proc] = slot
        return True

    def _free(self, slot: KdamondSlot) -> None:
        if slot.proc is not None:
            self._by_proc.pop(slot.proc, None)
        try:
            if self._state(slot) == "on":
                self._write(f"{slot.base}/state", "off")
        except (OSError, Unsupported):
            pass
        slot.proc = None
        slot.regions = None
        slot.pending_since_ns = None
        slot.consumed.clear()

    def _state(self, slot: KdamondSlot) -> str:
        try:
            return self.io.read(f"{slot.base}/state")
        except OSError:
            return "off"

    # --- snapshots ----------------------------------------------------------------------------

    def _refresh(self, slot: KdamondSlot) -> None:
        """Take a new snapshot when the last is refresh_ms old; never waits for the kernel.

        Current kernels fill tried_regions before the state write returns; if
        they are still empty right after it, the request stays pending and
        later calls only re-read the directory (a new request would clear it
        again) until the regions appear or the request is PENDING_RETRY times
        refresh_ms old.
        """
        now = self._now_ns()
        refresh_ns = self.settings.refresh_ms * 1_000_000
        if slot.pending_since_ns is not None:
            if self._adopt(slot, self._read_tried_regions(slot)):
                return
            if now - slot.pending_since_ns < PENDING_RETRY * refresh_ns:
                return
        elif slot.snapshot_ns and now - slot.snapshot_ns < refresh_ns:
            return
        slot.snapshot_ns = now
        slot.pending_since_ns = None
        self.nr_requests += 1
        try:
            self._write(f"{slot.base}/state", "update_schemes_tried_regions")
        except (OSError, Unsupported):
            self.nr_request_errors += 1
            return  # busy (another request) or stopped: keep the last snapshot
        if not self._adopt(slot, self._read_tried_regions(slot)):
            slot.pending_since_ns = now

    def _adopt(self, slot: KdamondSlot, regions: Regions) -> bool:
        """Make regions the slot's snapshot if there are any; a fresh snapshot clears nothing."""
        if not len(regions):
            return False
        slot.regions = regions
        slot.pending_since_ns = None
        slot.consumed.clear()
        self.nr_snapshots += 1
        return True

    def _read_tried_regions(self, slot: KdamondSlot) -> Regions:
        rel = f"{slot.base}/contexts/0/schemes/0/tried_regions"
        names = sorted((n for n in self.io.listdir(rel) if n.isdigit()), key=int)
        rows: list[tuple[int, int, int]] = []
        for name in names[: self.settings.max_nr_regions * 4]:
            try:
                start = int(self.io.read(f"{rel}/{name}/start"))
                end = int(self.io.read(f"{rel}/{name}/end"))
                nr_accesses = int(self.io.read(f"{rel}/{name}/nr_accesses"))
            except (OSError, ValueError):
                continue  # a region directory that vanished or is malformed
            if end > start:
                rows.append((start, end, nr_accesses))
        if not rows:
            return Regions.empty()
        arr = np.array(sorted(rows), dtype=np.uint64)
        return Regions(arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy())

    # --- the AccessSource interface -----------------------------------------------------------

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        """Pages in a region DAMON saw accessed, each reported once per snapshot. -> bool (n,)."""
        young = np.zeros(len(pages), dtype=np.bool_)
        if len(pages) == 0:
            return young
        slot = self._slot_for(proc)
        if slot is None:
            self.nr_untracked += 1
            return young
        self._refresh(slot)
        if slot.regions is None:
            return young
        stale = slot.consumed.mask(pages.vaddr)
        accessed = regions_accessed(slot.regions, pages.vaddr, self.settings.min_nr_accesses)
        young = accessed & ~stale
        slot.consumed.add(int(pages.vaddr.min()), int(pages.vaddr.max()) + PAGE_SIZE)
        self.nr_pages_tested += len(pages)
        self.nr_pages_stale += int(np.count_nonzero(stale))
        return young

    def forget(self, proc: ProcessId) -> None:
        """The process exited: stop its kdamond and free the slot."""
        self._refused.discard(proc)
        slot = self._by_proc.get(proc)
        if slot is not None:
            self._free(slot)

    def tracked(self) -> list[ProcessId]:
        return list(self._by_proc)

    def counters(self) -> dict[str, int]:
        """Snapshots and requests, and the pages DAMON could not judge afresh."""
        return {
            "kdamonds_tracking": len(self._by_proc),
            "processes_refused": len(self._refused),
            "untracked_batches": self.nr_untracked,
            "snapshot_requests": self.nr_requests,
            "snapshot_request_errors": self.nr_request_errors,
            "snapshots": self.nr_snapshots,
            "pages_tested": self.nr_pages_tested,
            "pages_stale": self.nr_pages_stale,
        }

    def close(self) -> None:
        """Stop every kdamond of the pool and remove the pool."""
        for slot in self._slots:
            if slot.proc is not None:
                self._free(slot)
        if self._slots:
            self._release_pool()
        self._slots = []

    # --- I/O helpers ----------------------------------------------------------------------------

    def _read_int(self, rel: str) -> int:
        text = self.io.read(rel)
        try:
            return int(text)
        except ValueError as err:
            raise Unsupported(f"{self.io.path(rel)}: not a number: {text!r}") from err

    def _write(self, rel: str, value: str | int) -> None:
        try:
            self.io.write(rel, value)
        except PermissionError as err:
            raise AccessDenied(f"{self.io.path(rel)}: {err.strerror}") from err
        except FileNotFoundError as err:
            raise Unsupported(f"{self.io.path(rel)}: missing ({err.strerror})") from err
