"""The kscand engine: the scan loop of the series over any Machine.

One step() is one wake-up of the daemon: refresh the mm list, scan the
processes whose own scan time has come (up to mms_to_scan of them, each
within its own scan size), then let the migrator drain the candidate queues.
After each scan a process's period and size adapt (kscand.throttle), and its
target node follows where its accessed top-tier pages live. The caller sleeps
scan_sleep_ms between steps (virtual time in the simulator, an interruptible
wait in the daemon).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kscand import throttle
from kscand.demoter import Demoter
from kscand.machine import Machine, ProcessId, Topology
from kscand.migrator import MigrateResult, Migrator
from kscand.mmlist import MmList, MmSlot
from kscand.scanner import ScanEnd, Scanner
from kscand.stats import MigrateDrop, Stats
from kscand.tunables import Tunables

# A trace event sink: (event name, fields). The series' trace events:
# mm_enter, mm_exit, scan_mm_start, scan_mm_end, scan_mm_migrate.
Tracer = Callable[[str, dict[str, Any]], None]
# The per-process scale of a new process (config rules); None: default_scale.
ScalePolicy = Callable[[ProcessId], int | None]


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did."""

    nr_scanned_mms: int
    nr_promoted_pages: int
    entered: tuple[ProcessId, ...]
    exited: tuple[ProcessId, ...]


def _no_trace(event: str, fields: dict[str, Any]) -> None:
    return None


def preferred_target(slot: MmSlot, topology: Topology) -> int | None:
    """The series' target-node heuristic: the top-tier node holding most of the
    process's accessed pages in its last scan; None when none were on the top tier."""
    counts = slot.accessed_by_nid
    top = [nid for nid in topology.top_tier_nids if nid < counts.shape[0] and counts[nid] > 0]
    if not top:
        return None
    return max(top, key=lambda nid: (int(counts[nid]), -nid))


class Kscand:
    """Scanner + migrator + mm list, driven one step at a time."""

    def __init__(
        self,
        machine: Machine,
        tunables: Tunables,
        stats: Stats | None = None,
        trace: Tracer | None = None,
        scale_policy: ScalePolicy | None = None,
    ) -> None:
        self.machine = machine
        self.tunables = tunables
        self.stats = stats if stats is not None else Stats()
        self.trace: Tracer = trace or _no_trace
        self.scale_policy = scale_policy
        self.mm_list = MmList()
        self.migrator = Migrator(
            machine, self.stats, tunables.migrate_queue_max, tunables.promote_rate_limit_mbps
        )
        self.demoter = Demoter(machine, self.stats, tunables.migrate_queue_max)
        self.scanner = Scanner(machine, self.migrator, self.stats, self.demoter)
        self.scanner.drain = self._migrate

    def set_tunables(self, tunables: Tunables) -> None:
        """Apply new tunables; they take effect from the next step (the sysfs analog)."""
        self.tunables = tunables
        self.migrator.queue_max = tunables.migrate_queue_max
        self.demoter.queue.queue_max = tunables.migrate_queue_max

    def set_scale(self, proc: ProcessId, scale: int) -> bool:
        """Set a running process's scale (the prctl analog); False if it is not listed."""
        if not 0 <= scale <= throttle.SCALE_MAX:
            raise ValueError(f"scale must be 0..{throttle.SCALE_MAX}, got {scale}")
        slot = self.mm_list.get(proc)
        if slot is None:
            return False
        slot.scale = scale
        return True

    def step(self) -> StepResult:
        """One wake-up: sync the mm list, scan the processes that are due, migrate."""
        entered, exited = self._sync()
        if not self.tunables.scan_enabled:
            return StepResult(0, 0, entered, exited)
        promoted_before = self.stats.total["nr_kscand_migrated"]
        nr_scanned = self.scan_pass()
        self._migrate()
        promoted = self.stats.total["nr_kscand_migrated"] - promoted_before
        return StepResult(nr_scanned, promoted, entered, exited)

    def _migrate(self) -> None:
        """Demote what must make room (when asked to), then promote what is queued."""
        if self.demoter.queue.nr_queued:
            self.demoter.demote(self.machine.topology(), self.tunables)
        if not self.migrator.nr_queued:
            return  # nothing queued: no topology read (it re-reads every node's meminfo)
        results = self.migrator.migrate(self.machine.topology(), self.tunables, self._preferred)
        for result in results:
            self._feedback(result)

    # --- the mm list ------------------------------------------------------------------------

    def _new_slot(self, proc: ProcessId) -> MmSlot:
        t = self.tunables
        scale = self.scale_policy(proc) if self.scale_policy is not None else None
        slot = MmSlot(
            proc,
            scan_period_ms=throttle.clamp(
                t.mm_scan_period_ms, t.scan_period_min_ms, t.scan_period_max_ms
            ),
            scan_size_bytes=int(
                throttle.clamp(t.scan_size_bytes, t.scan_size_min_bytes, t.scan_size_max_bytes)
            ),
            next_scan_ns=self.machine.clock.now_ns() + t.scan_delay_ms * 1_000_000,
            scale=t.default_scale if scale is None else scale,
        )
        self.trace("mm_enter", {"mm": str(proc), "scale": slot.scale})
        return slot

    def _sync(self) -> tuple[tuple[ProcessId, ...], tuple[ProcessId, ...]]:
        entered, exited = self.mm_list.sync(self.machine.processes(), self._new_slot)
        for proc in exited:
            self.migrator.drop(proc, MigrateDrop.PROC_GONE)
            self.demoter.queue.drop(proc, MigrateDrop.PROC_GONE)
            self.trace("mm_exit", {"mm": str(proc)})
        self.stats.add(None, "nr_kscand_mm_enter", len(entered))
        self.stats.add(None, "nr_kscand_mm_exit", len(exited))
        return tuple(entered), tuple(exited)

    def _release(self, proc: ProcessId) -> None:
        """A process vanished under the scanner: free its slot and drop its queue."""
        self.mm_list.exit(proc)
        self.migrator.drop(proc, MigrateDrop.PROC_GONE)
        self.demoter.queue.drop(proc, MigrateDrop.PROC_GONE)
        self.stats.add(None, "nr_kscand_mm_exit")
        self.stats.add(proc, "scan_proc_gone")
        self.trace("mm_exit", {"mm": str(proc)})

    # --- scanning -----------------------------------------------------------------------------

    def scan_pass(self) -> int:
        """Scan the processes that are due, each at most once. Returns the number scanned.

        Visits at most mms_to_scan processes, looks at each listed one at most
        once: one pass's work is bounded by mms_to_scan x scan_size_max_bytes.
        """
        topology: Topology | None = None  # read once, only when a process is due
        limit = self.tunables.mms_to_scan
        visited = 0
        for _ in range(len(self.mm_list)):
            if visited >= limit:
                break
            slot = self.mm_list.cursor()
            if slot is None:
                break
            if self._due(slot):
                if topology is None:
                    topology = self.machine.topology()
                self._scan_one(slot, topology)
                visited += 1
            self.mm_list.advance()
        return visited

    def _due(self, slot: MmSlot) -> bool:
        if slot.scale == 0:
            self.stats.add(slot.proc, "scan_skip_scale0")
            return False
        return self.machine.clock.now_ns() >= slot.next_scan_ns

    def _scan_one(self, slot: MmSlot, topology: Topology) -> None:
        start_vaddr = slot.resume_vaddr
        self.trace("scan_mm_start", {"mm": str(slot.proc), "start": start_vaddr})
        before = self.stats.of(slot.proc)["nr_kscand_ptes_scanned"]
        end = self.scanner.scan_mm(slot, self.tunables, topology)
        if end is ScanEnd.GONE:
            self._release(slot.proc)
            return
        if end is ScanEnd.DENIED:  # try again after the longest period, not every pass
            retry_ns = self.tunables.scan_period_max_ms * 1_000_000
            slot.next_scan_ns = self.machine.clock.now_ns() + retry_ns
            return
        self._adapt(slot, topology)
        scanned = self.stats.of(slot.proc)["nr_kscand_ptes_scanned"] - before
        self.trace(
            "scan_mm_end",
            {
                "mm": str(slot.proc),
                "start": start_vaddr,
                "total": scanned,
                "scan_period": round(slot.scan_period_ms),
                "scan_size": slot.scan_size_bytes,
                "target_node": slot.target_nid,
            },
        )

    def _adapt(self, slot: MmSlot, topology: Topology) -> None:
        """After a scan: the next period and size, the next due time, the target node."""
        t = self.tunables
        slot.prev_useful = slot.useful
        slot.useful = throttle.smooth_useful(slot.useful, slot.useful_this_scan)
        rate = throttle.next_scan_rate(
            throttle.ScanRate(slot.scan_period_ms, slot.scan_size_bytes),
            slot.prev_useful,
            slot.useful,
            throttle.failure_ratio_pct(slot.migrate_succeeded, slot.migrate_failed),
            (t.scan_period_min_ms, t.scan_period_max_ms),
            (t.scan_size_min_bytes, t.scan_size_max_bytes),
        )
        slot.scan_period_ms, slot.scan_size_bytes = rate.period_ms, rate.size_bytes
        period_ns = throttle.scaled_period_ms(rate.period_ms, slot.scale) * 1e6
        slot.next_scan_ns = self.machine.clock.now_ns() + int(period_ns)
        preferred = preferred_target(slot, topology)
        if preferred is not None:
            slot.target_nid = preferred

    # --- migration ----------------------------------------------------------------------------

    def _preferred(self, proc: ProcessId) -> int | None:
        slot = self.mm_list.get(proc)
        return slot.target_nid if slot is not None else None

    def _feedback(self, result: MigrateResult) -> None:
        """Count the result into the process's failure feedback; emit the trace event."""
        self.trace(
            "scan_mm_migrate",
            {
                "mm": str(result.proc),
                "rc": 0 if not result.failed else -1,
                "node": result.target_nid,
                "succeeded": result.succeeded,
                "failed": result.failed,
            },
        )
        slot = self.mm_list.get(result.proc)
        if slot is None:
            return
        slot.migrate_succeeded, slot.migrate_failed = throttle.decay_failures(
            slot.migrate_succeeded + result.succeeded, slot.migrate_failed + result.failed
        )


def per_node_accessed(slot: MmSlot) -> dict[int, int]:
    """The last scan's accessed pages of a process, by node (for status output)."""
    return {nid: int(n) for nid, n in enumerate(np.asarray(slot.accessed_by_nid)) if n}
