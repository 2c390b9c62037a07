"""The DAMON access source (CONFIG_DAMON_VADDR + CONFIG_DAMON_SYSFS), for kernels without page_idle.

Per scanned process, kscand runs one kdamond with one vaddr context on its
pid (Documentation/admin-guide/mm/damon/usage.rst, sysfs interface) and a
`stat` scheme whose access pattern matches every region (each max defaults
to 0, so all three ranges are opened up). To read accesses it writes
`update_schemes_tried_regions` to the kdamond's state and reads
schemes/0/tried_regions/R/{start,end,nr_accesses}: a page counts as accessed
when its region was found accessed in at least a quarter of the samples of the
last aggregation (DamonSettings.min_access_share).

That write blocks until the kdamond handles it at its next aggregation (one to
two aggregation intervals, far longer under load or TCG), and the kernel takes
one such command at a time for all kdamonds (damon_sysfs_cmd_request in
mm/damon/sysfs.c: -EBUSY while one is pending). So the writes are made by one
background thread (SnapshotRequester), one kdamond at a time, and the scan
uses the latest complete snapshot: a step waits for a requested snapshot at
most DamonSettings.max_step_block_ms in all (the per-step budget is reset by
begin_step()); a batch judged on a snapshot older than the one requested is
counted (batches_on_stale_snapshot).

DAMON's sysfs interface recreates every kdamond directory when nr_kdamonds is
written and refuses while any kdamond runs, so kscand allocates a fixed pool
of kdamonds once, and only when no one else has configured any.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
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


@dataclass(eq=False, slots=True)
class KdamondSlot:
    """One kdamond of kscand's pool and the process it monitors (scan thread only)."""

    index: int
    proc: ProcessId | None = None
    generation: int = 0  # bumped whenever the slot is (re)configured: older snapshots are void
    regions: Regions | None = None
    regions_seq: int = 0  # the requester's sequence number of the adopted snapshot
    requested_seq: int = 0  # the sequence number the last request will complete
    snapshot_ns: int = 0  # when the last snapshot was requested
    consumed: ConsumedRanges = field(default_factory=ConsumedRanges)

    @property
    def base(self) -> str:
        return str(self.index)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A complete tried_regions read of one kdamond, published by the requester."""

    generation: int
    seq: int  # the request it answers
    regions: Regions


@dataclass(eq=False, slots=True)
class _Request:
    generation: int
    seq: int
    pending_since_ns: int | None = None  # written; tried_regions still empty


class SnapshotRequester:
    """The thread that writes update_schemes_tried_regions, one kdamond at a time.

    The scan thread calls request(); the thread writes the command (which blocks in
    the kernel until the kdamond's next aggregation), reads tried_regions and
    publishes a Snapshot. An empty tried_regions right after the write is re-read
    every pending_poll_ms (kernels that fill them after the write returned) until
    regions appear or PENDING_RETRY refresh periods have passed.
    """

    def __init__(
        self,
        io: DamonSysfs,
        settings: DamonSettings,
        read_regions: Callable[[int], Regions],
        now_ns: Callable[[], int],
    ) -> None:
        self.io = io
        self.settings = settings
        self._read_regions = read_regions
        self._now_ns = now_ns
        self._cond = threading.Condition()
        self._wanted: dict[int, _Request] = {}  # slot index -> request not yet written
        self._pending: dict[int, _Request] = {}  # written, regions not seen yet
        self._in_flight: tuple[int, _Request] | None = None
        self._done: dict[int, Snapshot] = {}
        self._seq = 0
        self._stopping = False
        self.nr_written = 0
        self.nr_errors = 0  # refused: busy (another tool's command) or the kdamond stopped
        self.nr_pending_expired = 0
        self._thread = threading.Thread(target=self._run, name="kscand-damon", daemon=True)
        self._thread.start()

    # --- scan-thread side ---------------------------------------------------------------------

    def request(self, index: int, generation: int) -> int:
        """Ask for a new snapshot of slot index; returns the sequence number it will carry."""
        with self._cond:
            self._seq += 1
            self._pending.pop(index, None)
            self._wanted[index] = _Request(generation, self._seq)
            self._cond.notify_all()
            return self._seq

    def outstanding(self, index: int, generation: int) -> bool:
        """A request of this slot generation is queued, being written or pending."""
        with self._cond:
            return self._outstanding_locked(index, generation)

    def _outstanding_locked(self, index: int, generation: int) -> bool:
        self._expire_pending_locked()
        reqs = [self._wanted.get(index), self._pending.get(index)]
        if self._in_flight is not None and self._in_flight[0] == index:
            reqs.append(self._in_flight[1])
        return any(req is not None and req.generation == generation for req in reqs)

    def latest(self, index: int, generation: int) -> Snapshot | None:
        with self._cond:
            snap = self._done.get(index)
        return snap if snap is not None and snap.generation == generation else None

    def wait(self, index: int, generation: int, seq: int, timeout_s: float) -> Snapshot | None:
        """Wait at most timeout_s for the snapshot answering request seq (or a later one)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                snap = self._done.get(index)
                if snap is not None and snap.generation == generation and snap.seq >= seq:
                    return snap
                if self._stopping or not self._outstanding_locked(index, generation):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def cancel(self, index: int) -> None:
        """The slot is being reconfigured: drop its queued request and its snapshot."""
        with self._cond:
            self._wanted.pop(index, None)
            self._pending.pop(index, None)
            self._done.pop(index, None)

    def begin_stop(self) -> None:
        """Take no new job; wake waiters."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self) -> bool:
        """End the thread; True if it ended within stop_timeout_ms."""
        self.begin_stop()
        self._thread.join(self.settings.stop_timeout_ms / 1000)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_locked()
                if job is None:
                    return
            index, req, write = job
            regions = self._serve(index, write)
            with self._cond:
                self._in_flight = None
                self._finish_locked(index, req, regions)
                self._cond.notify_all()

    def _next_locked(self) -> tuple[int, _Request, bool] | None:
        """The next job (slot, request, write the command?); None when stopping."""
        poll_s = self.settings.pending_poll_ms / 1000
        while not self._stopping:
            if self._wanted:
                index = next(iter(self._wanted))
                req = self._wanted.pop(index)
                self._in_flight = (index, req)
                return index, req, True
            if self._pending:
                self._expire_pending_locked()
            if self._pending:
                if self._cond.wait(poll_s) or self._wanted or self._stopping:
                    continue
                index = next(iter(self._pending))
                req = self._pending.pop(index)
                self._in_flight = (index, req)
                return index, req, False
            self._cond.wait()
        return None

    def _expire_pending_locked(self) -> None:
        limit_ns = PENDING_RETRY * self.settings.refresh_ms * 1_000_000
        now = self._now_ns()
        for index, req in list(self._pending.items()):
            if req.pending_since_ns is not None and now - req.pending_since_ns >= limit_ns:
                del self._pending[index]
                self.nr_pending_expired += 1

    def _serve(self, index: int, write: bool) -> Regions | None:
        """Write the command (blocks in the kernel), then read tried_regions; None: refused."""
        if write:
            try:
                self.io.write(f"{index}/state", "update_schemes_tried_regions")
            except OSError:
                with self._cond:
                    self.nr_errors += 1
                return None
            with self._cond:
                self.nr_written += 1
        return self._read_regions(index)

    def _finish_locked(self, index: int, req: _Request, regions: Regions | None) -> None:
        if regions is None:
            return  # refused: the scan keeps the last snapshot and asks again later
        if not len(regions):
            if self._wanted.get(index) is None:  # not superseded by a newer request
                if req.pending_since_ns is None:
                    req.pending_since_ns = self._now_ns()
                self._pending[index] = req
            return
        current = self._done.get(index)
        if current is not None and current.generation == req.generation and current.seq > req.seq:
            return
        self._done[index] = Snapshot(req.generation, req.seq, regions)


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
        self.nr_requests = 0  # snapshots asked of the requester thread
        self.nr_pages_tested = 0
        self.nr_pages_stale = 0  # tested against a snapshot already reported: "not accessed"
        self.nr_waits = 0  # batches that waited for a requested snapshot
        self.nr_wait_timeouts = 0  # ... and went on without it (the step's budget ran out)
        self.nr_stale_batches = 0  # judged on an older snapshot than the one requested
        self.nr_stop_timeouts = 0  # close() found the requester thread still in the kernel
        self._slots: list[KdamondSlot] = []
        self._by_proc: dict[ProcessId, KdamondSlot] = {}
        self._refused: set[ProcessId] = set()  # the kernel would not monitor them
        self._budget_ns: int | None = None  # what this step may still wait (None: per call)
        self._allocate_pool()
        self.requester = SnapshotRequester(self.io, self.settings, self._read_tried_regions, now_ns)


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
        self._reset(slot)
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
        self._reset(slot)

    def _reset(self, slot: KdamondSlot) -> None:
        """Void the slot's snapshots: queued, in flight and adopted."""
        slot.generation += 1
        self.requester.cancel(slot.index)
        slot.regions = None
        slot.regions_seq = slot.requested_seq = 0
        slot.snapshot_ns = 0
        slot.consumed.clear()

    def _state(self, slot: KdamondSlot) -> str:
        try:
            return self.io.read(f"{slot.base}/state")
        except OSError:
            return "off"

    # --- snapshots ----------------------------------------------------------------------------

    def begin_step(self) -> None:
        """A new scan step: it may wait max_step_block_ms in all for snapshots."""
        self._budget_ns = self.settings.max_step_block_ms * 1_000_000

    def _refresh(self, slot: KdamondSlot) -> None:
        """Adopt the latest complete snapshot; ask for a new one every refresh_ms.

        Waits for the snapshot asked for only within the step's budget; the kernel
        work itself is done by the requester thread.
        """
        now = self._now_ns()
        refresh_ns = self.settings.refresh_ms * 1_000_000
        outstanding = self.requester.outstanding(slot.index, slot.generation)
        if not outstanding and (not slot.snapshot_ns or now - slot.snapshot_ns >= refresh_ns):
            slot.snapshot_ns = now
            slot.requested_seq = self.requester.request(slot.index, slot.generation)
            self.nr_requests += 1
            outstanding = True
        snap = self.requester.latest(slot.index, slot.generation)
        if (snap is None or snap.seq < slot.requested_seq) and outstanding:
            waited = self._wait(slot)
            snap = waited or snap
        if snap is not None and snap.seq > slot.regions_seq:
            self._adopt(slot, snap)
        if slot.regions is not None and slot.regions_seq < slot.requested_seq:
            self.nr_stale_batches += 1

    def _wait(self, slot: KdamondSlot) -> Snapshot | None:
        budget_ns = self._budget_ns
        if budget_ns is None:
            budget_ns = self.settings.max_step_block_ms * 1_000_000
        if budget_ns <= 0:
            return None
        self.nr_waits += 1
        t0 = time.monotonic_ns()
        snap = self.requester.wait(slot.index, slot.generation, slot.requested_seq,
                                   budget_ns / 1e9)
        if self._budget_ns is not None:
            self._budget_ns = max(0, self._budget_ns - (time.monotonic_ns() - t0))
        if snap is None:
            self.nr_wait_timeouts += 1
        return snap

    def _adopt(self, slot: KdamondSlot, snap: Snapshot) -> None:
        """Make snap the slot's snapshot; a fresh snapshot has reported nothing yet."""
        slot.regions = snap.regions
        slot.regions_seq = snap.seq
        slot.consumed.clear()
        self.nr_snapshots += 1

    def _read_tried_regions(self, index: int) -> Regions:
        """tried_regions of kdamond index (the requester thread's read)."""
        rel = f"{index}/contexts/0/schemes/0/tried_regions"
        names = sorted((n for n in self.io.listdir(rel) if n.isdigit()), key=int)
        rows: list[tuple[int, int, int]] = []
        for name in names[: self.settings.max_nr_regions * 4]:
            try:
                start = int(self.io.read(f"{rel}/{name}/start"))
                end = int(self.io.read(f"{rel}/{name}/end"))
                nr_accesses = int(self.io.read(f"{rel}/{name}/nr_accesses"))
            except (OSError, ValueError):
                continue  # a region directory that vanished or is malformed
            if 0 <= start < end < (1 << 64) and 0 <= nr_accesses < (1 << 64):
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

    def snapshots_ready(self) -> int:
        """Tracked processes whose latest requested snapshot is complete (tests wait on it)."""
        return sum(
            1 for slot in self._by_proc.values()
            if (snap := self.requester.latest(slot.index, slot.generation)) is not None
            and snap.seq >= slot.requested_seq
        )

    def tracked(self) -> list[ProcessId]:
        return list(self._by_proc)

    def counters(self) -> dict[str, int]:
        """Snapshots and requests, and the pages DAMON could not judge afresh."""
        return {
            "kdamonds_tracking": len(self._by_proc),
            "processes_refused": len(self._refused),
            "untracked_batches": self.nr_untracked,
            "snapshot_requests": self.nr_requests,
            "snapshot_request_errors": self.requester.nr_errors,
            "snapshot_requests_written": self.requester.nr_written,
            "snapshot_requests_expired": self.requester.nr_pending_expired,
            "snapshots": self.nr_snapshots,
            "snapshot_waits": self.nr_waits,
            "snapshot_wait_timeouts": self.nr_wait_timeouts,
            "batches_on_stale_snapshot": self.nr_stale_batches,
            "requester_stop_timeouts": self.nr_stop_timeouts,
            "pages_tested": self.nr_pages_tested,
            "pages_stale": self.nr_pages_stale,
        }

    def close(self) -> None:
        """Stop the requester thread and every kdamond of the pool; remove the pool.

        The kdamonds are turned off before the join: a command the thread is
        waiting on in the kernel ends when its kdamond stops (mm/damon/sysfs.c).
        """
        if not self._slots:
            return
        self.requester.begin_stop()
        for slot in self._slots:
            if slot.proc is not None:
                self._free(slot)
        if not self.requester.stop():
            self.nr_stop_timeouts += 1
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
