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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from kscand.errors import AccessDenied, AccessUnknown, Unsupported
from kscand.live.damon_snapshots import Snapshot, SnapshotRequester
from kscand.live.damon_sysfs import (
    DAMON_KDAMONDS,
    UINT_MAX,
    ULONG_MAX_SAFE,
    ConsumedRanges,
    DamonSettings,
    DamonSysfs,
    Regions,
    regions_accessed,
)
from kscand.machine import PAGE_SIZE, BoolArray, PageBatch, ProcessId

# Consecutive scans a page must be found accessed in before kscand promotes it on this
# source (the promote_young_scans tunable's 0). DAMON judges regions, and a region
# holding the edge of a hot run looks accessed for a snapshot or two while it splits and
# merges: in the testbed's guest, with first evidence, 5.3 % of the cold pages next to a
# 25 MiB hot run were promoted (CI, 2026-12-02); the series' rule with 3 kept 99.6-100 %
# of them in place over 5 runs (testbed/scenarios.py).
DAMON_YOUNG_SCANS = 3


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
        self.nr_pages_stale = 0  # tested against a snapshot already reported
        self.nr_batches_unknown = 0  # no snapshot, or wholly stale: AccessUnknown
        self.nr_waits = 0  # batches that waited for a requested snapshot
        self.nr_wait_timeouts = 0  # ... and went on without it (the step's budget ran out)
        self.nr_stale_batches = 0  # judged on an older snapshot than the one requested
        self.nr_stop_timeouts = 0  # close() found the requester thread still in the kernel
        self.nr_stop_raced = 0  # a kdamond stopped by itself between our read and "off"
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
                self.io.write(f"{slot.base}/state", "off")
        except OSError:
            # The kdamond stopped by itself (its target exited) between the read and
            # the write: mm/damon/core.c __damon_stop() answers EPERM then. Off
            # either way; counted, never a step error.
            self.nr_stop_raced += 1
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
        """Pages in a region DAMON saw accessed, each reported once per snapshot. -> bool (n,).

        AccessUnknown when there is no snapshot yet or the batch was reported on this
        one already: the scanner then leaves the pages' history as it was."""
        young = np.zeros(len(pages), dtype=np.bool_)
        if len(pages) == 0:
            return young
        slot = self._slot_for(proc)
        if slot is None:
            self.nr_untracked += 1
            return young
        self._refresh(slot)
        if slot.regions is None:
            self.nr_batches_unknown += 1
            raise AccessUnknown(f"{proc}: no DAMON snapshot yet")
        stale = slot.consumed.mask(pages.vaddr)
        self.nr_pages_tested += len(pages)
        self.nr_pages_stale += int(np.count_nonzero(stale))
        if stale.all():
            # No snapshot since these were reported: "not accessed" would break the
            # run of young scans a hot page needs here (DAMON_YOUNG_SCANS) whenever
            # scans outpace the kdamond (under load: CI, 2026-12-02).
            self.nr_batches_unknown += 1
            raise AccessUnknown(f"{proc}: no DAMON snapshot since the last report")
        accessed = regions_accessed(slot.regions, pages.vaddr, self.settings.min_nr_accesses)
        young = accessed & ~stale
        slot.consumed.add(int(pages.vaddr.min()), int(pages.vaddr.max()) + PAGE_SIZE)
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
            "kdamond_stop_raced": self.nr_stop_raced,
            "pages_tested": self.nr_pages_tested,
            "pages_stale": self.nr_pages_stale,
            "batches_unknown": self.nr_batches_unknown,
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
