"""The kscand engine: the scan loop of the series over any Machine.

One step() is one wake-up of the daemon: refresh the mm list, scan the
processes whose own scan time has come (up to mms_to_scan of them, each
within its own scan size), then let the migrator drain the candidate queues.
After each scan a process's period and size adapt (kscand.core.throttle), and its
target node follows where its accessed top-tier pages live. The caller sleeps
scan_sleep_ms between steps (virtual time in the simulator, an interruptible
wait in the daemon).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from kscand.core import throttle
from kscand.core.candidates import Candidates
from kscand.core.counters import EngineCounter, ScanSkip, Series
from kscand.core.demoter import Demoter
from kscand.core.evidence import PING_PONG_WINDOW_S
from kscand.core.migrator import MigrateResult, Migrator
from kscand.core.mmlist import MmList, MmSlot, note_moves
from kscand.core.placement import (
    HeatLedger,
    ReprobeDelay,
    ScanContext,
    moved_histogram,
    plan_nodes,
    shift_histograms,
)
from kscand.core.reprobe import ReprobeQueue
from kscand.core.room import FreeRoom, default_target, headroom_pages, target_order
from kscand.core.scanner import Scanner
from kscand.core.scanplan import ScanEnd, is_toptier, pages_in
from kscand.core.stats import MigrateDrop, Stats
from kscand.core.tunables import Tunables
from kscand.errors import AccessDenied, ProcessGone
from kscand.machine import PAGE_SHIFT, Machine, ProcessId, Topology

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


REPROBE_QUEUE_MAX = 1 << 21  # folios: ~64 MiB of re-probe entries at most


def reprobe_queue_max(tunables: Tunables) -> int:
    """Room for the accessed folios of the largest visit (a visit's re-probes must fit)."""
    return min(REPROBE_QUEUE_MAX, max(tunables.migrate_queue_max,
                                      tunables.scan_size_max_bytes >> PAGE_SHIFT))


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
    """Scanner + migrator + demoter + mm list, driven one step at a time."""

    def __init__(
        self,
        machine: Machine,
        tunables: Tunables,
        stats: Stats | None = None,
        trace: Tracer | None = None,
        scale_policy: ScalePolicy | None = None,
        source_young_scans: int = 1,
    ) -> None:
        """source_young_scans: what promote_young_scans = 0 means on this machine's access
        source (1 for page-exact Accessed bits; the live backend says 3 for DAMON)."""
        self.machine = machine
        self.source_young_scans = max(1, source_young_scans)
        self.tunables = tunables
        self.stats = stats if stats is not None else Stats()
        self.trace: Tracer = trace or _no_trace
        self.scale_policy = scale_policy
        self.mm_list = MmList()
        self.ledger = HeatLedger()
        self.reprobes = ReprobeQueue(reprobe_queue_max(tunables))
        self.reprobe_delay = ReprobeDelay()
        self.migrator = Migrator(
            machine, self.stats, tunables.migrate_queue_max, tunables.promote_rate_limit_mbps
        )
        self.demoter = Demoter(
            machine, self.stats, tunables.migrate_queue_max, tunables.promote_rate_limit_mbps
        )
        self.scanner = Scanner(
            machine, self.migrator, self.stats, self.demoter,
            ledger=self.ledger, reprobes=self.reprobes, drain=self._migrate,
        )
        self._ctx: ScanContext | None = None  # this step's, built when first needed
        self._step_start_ns = machine.clock.now_ns()
        self._prev_step_start_ns = self._step_start_ns

    def set_tunables(self, tunables: Tunables) -> None:
        """Apply new tunables; they take effect from the next step (the sysfs analog)."""
        self.tunables = tunables
        self.migrator.queue_max = tunables.migrate_queue_max
        self.demoter.set_queue_max(tunables.migrate_queue_max)
        self.reprobes.queue_max = reprobe_queue_max(tunables)

    def set_scale(self, proc: ProcessId, scale: int) -> bool:
        """Set a running process's scale (the prctl analog); False if it is not listed."""
        if not 0 <= scale <= throttle.SCALE_MAX:
            raise ValueError(f"scale must be 0..{throttle.SCALE_MAX}, got {scale}")
        slot = self.mm_list.get(proc)
        if slot is None:
            return False
        self.mm_list.set_scale(slot, scale)
        return True

    def step(self) -> StepResult:
        """One wake-up: sync the mm list, re-probe, scan the processes that are due, migrate."""
        self._ctx = None
        self._prev_step_start_ns = self._step_start_ns
        self._step_start_ns = self.machine.clock.now_ns()
        entered, exited = self._sync()
        if not self.tunables.scan_enabled:
            return StepResult(0, 0, entered, exited)
        promoted_before = self.stats.total[Series.MIGRATED]
        self._reprobe()
        nr_scanned = self.scan_pass()
        self._migrate()
        promoted = self.stats.total[Series.MIGRATED] - promoted_before
        return StepResult(nr_scanned, promoted, entered, exited)

    def context(self) -> ScanContext:
        """This step's scan context: the topology and each top-tier node's plan.

        Read at most once a step, and only when there is work (it re-reads
        every node's meminfo on the live machine).
        """
        if self._ctx is not None:
            return self._ctx
        topology = self.machine.topology()
        t = self.tunables
        plans = plan_nodes(topology, self.ledger, t) if t.rank_hotness else {}
        self._ctx = ScanContext(
            now_ns=self.machine.clock.now_ns(),
            topology=topology,
            toptier=topology.toptier_table(),
            plans=plans,
            default_target=default_target(topology, t),
            tunables=t,
            demote_wanted=self.demoter.wanted(topology, t),
            reprobe_s=self.reprobe_delay.current_s(plans, t) if t.rank_hotness else 0.0,
            young_scans=t.promote_young_scans or self.source_young_scans,
            # Region sources (source_young_scans > 1) re-probe regions, not pages.
            short_evidence=t.promote_on_reprobe and t.rank_hotness and t.reprobe_delay_ms > 0
            and self.source_young_scans == 1,
        )
        return self._ctx

    def _migrate(self) -> None:
        """Demote what must make room, then promote what is queued, hottest first."""
        t = self.tunables
        if self.demoter.nr_queued:
            # Relative to the step's start, which queued folios carry: a step that
            # outlasts the window (seconds under load) must not expire its own finds.
            window_ns = 2 * t.scan_period_max_ms * 1_000_000
            self.demoter.expire(min(self._step_start_ns - window_ns, self._prev_step_start_ns))
        if not self.migrator.nr_queued and not self.demoter.nr_queued:
            return  # nothing queued: no topology read (it re-reads every node's meminfo)
        # One read for the whole migration: the moves' results keep the free pages.
        room = FreeRoom(self.machine.topology())
        if self.demoter.nr_queued and self.demoter.wanted(room.topology(), t):
            self._note_demoted(self.demoter.demote(room.topology(), t, room))
        if not self.migrator.nr_queued:
            return
        exchange = t.rank_hotness and t.exchange_enabled and self.demoter.nr_queued
        if exchange:
            self._exchange(room)
        results = self.migrator.migrate(room.topology(), t, self._preferred, room)
        for result in results:
            self._feedback(result)
            if result.moved is not None and result.target_nid is not None:
                self._note_moves(result.proc, result.moved, result.target_nid, promoted=True)

    def _exchange(self, room: FreeRoom) -> None:
        """Per top-tier node without room for its candidates: demote colder residents."""
        t = self.tunables
        topology = room.topology()
        wanting: dict[int, list[Candidates]] = {}
        for proc in self.migrator.queue.procs():
            order = target_order(self._preferred(proc), topology, t)
            cands = self.migrator.queue.peek(proc)
            if order and cands is not None:
                wanting.setdefault(order[0], []).append(cands)
        for nid, parts in wanting.items():
            heat = np.concatenate([p.heat for p in parts])
            nr_pages = np.concatenate([p.nr_pages for p in parts])
            # Under the watermark, the deficit is made up too: the promotions after
            # the demotions must find the room they were counted against.
            need = int(nr_pages.sum()) - headroom_pages(topology.node(nid), t.target_free_min_pct)
            if need <= 0:
                continue
            hottest = np.argsort(-heat.astype(np.int16), kind="stable")
            moved = self.demoter.exchange(
                nid, heat[hottest], nr_pages[hottest], need, topology, t, room
            )
            self._note_demoted(moved)

    def _note_demoted(self, moved: list[tuple[ProcessId, Candidates]]) -> None:
        for proc, cands in moved:
            self._note_moves(proc, cands, None, promoted=False)

    def _note_moves(
        self, proc: ProcessId, cands: Candidates, target: int | None, promoted: bool
    ) -> None:
        """Record moved folios: the ping-pong count, their move times, the heat ledger."""
        slot = self.mm_list.get(proc)
        if slot is None or not len(cands):
            return
        now_s = self.machine.clock.now_ns() / 1e9
        nr_ping_pong = note_moves(slot, cands.vaddr, cands.nr_pages, now_s, PING_PONG_WINDOW_S)
        self.stats.add(proc, EngineCounter.PING_PONG, nr_ping_pong)
        self.stats.add(proc, EngineCounter.MOVED, int(cands.nr_pages.sum()))
        if not self.tunables.rank_hotness:
            return
        counts = moved_histogram(cands.heat, cands.nr_pages)
        if promoted and target is not None:
            src, dst = (target, False), (target, True)
        else:
            ctx = self.context()
            home = slot.target_nid if slot.target_nid in ctx.plans else ctx.default_target
            if home is None:
                return
            src, dst = (home, True), (home, False)
        self.ledger.sub(src, counts)
        self.ledger.add(dst, counts)
        shift_histograms(slot.heat_contrib, src, dst, counts)
        # The current pass counted the folios it already passed where they were: when
        # it ends, its histograms must hold them where they are now (they read as
        # wanting the node they sit on until the next pass, which made the node look
        # emptier of residents and shorter of room than it was).
        passed = cands.vaddr < np.uint64(slot.resume_vaddr)
        if passed.any():
            passed_counts = moved_histogram(cands.heat[passed], cands.nr_pages[passed])
            shift_histograms(slot.heat_cur, src, dst, passed_counts)

    def _reprobe(self) -> None:
        """The second look at folios found accessed reprobe_delay_ms ago."""
        due = self.reprobes.due(self.machine.clock.now_ns())
        if not due:
            return
        ctx = self.context()
        for entry in due:
            slot = self.mm_list.get(entry.proc)
            if slot is None or slot.dead:
                self.stats.add(None, MigrateDrop.REPROBE_PROC_GONE, len(entry))
                continue
            try:
                young = self.scanner.reprobe(slot, entry, ctx)
                if young is None:
                    continue
                top = is_toptier(entry.folios.nid, ctx.toptier)
                self.reprobe_delay.observe(
                    entry.delay_s, pages_in(top, entry.nr_pages),
                    pages_in(top & young, entry.nr_pages), self.tunables,
                )
            except ProcessGone:
                self._release(entry.proc)
            except AccessDenied:
                self.stats.add(entry.proc, ScanSkip.ACCESS_DENIED)

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
        entered, exited = self.mm_list.sync(
            self.machine.processes(), self._new_slot, self._retire
        )
        for proc in exited:
            self._forget(proc)
            self.trace("mm_exit", {"mm": str(proc)})
        self.stats.add(None, EngineCounter.MM_ENTER, len(entered))
        self.stats.add(None, EngineCounter.MM_EXIT, len(exited))
        return tuple(entered), tuple(exited)

    def _retire(self, slot: MmSlot) -> None:
        """A slot leaves the list: its histograms leave the engine's totals."""
        self.ledger.replace(slot.heat_contrib, {})
        slot.heat_contrib.clear()
        slot.heat_cur.clear()

    def _forget(self, proc: ProcessId) -> None:
        self.migrator.drop(proc, MigrateDrop.PROC_GONE)
        self.demoter.drop(proc, MigrateDrop.PROC_GONE)
        dropped = self.reprobes.drop(proc)
        self.stats.add(proc, MigrateDrop.REPROBE_PROC_GONE, dropped)

    def _release(self, proc: ProcessId) -> None:
        """A process vanished under the scanner: free its slot and drop its queues."""
        slot = self.mm_list.get(proc)
        if slot is not None:
            self._retire(slot)
        self.mm_list.exit(proc)
        self._forget(proc)
        self.stats.add(None, EngineCounter.MM_EXIT)
        self.stats.add(proc, ScanSkip.PROC_GONE)
        self.trace("mm_exit", {"mm": str(proc)})

    # --- scanning -----------------------------------------------------------------------------

    def scan_pass(self) -> int:
        """Scan the processes that are due, each at most once. Returns the number scanned.

        Visits at most mms_to_scan processes, looks at each listed one at most
        once: one pass's work is bounded by mms_to_scan x scan_size_max_bytes.
        The mm list jumps to the due ones in ring order (its due heap), so a pass
        costs what is due, not what is listed.
        """
        limit = self.tunables.mms_to_scan
        visited = 0
        self.mm_list.start_pass()
        while visited < limit:
            slot = self.mm_list.next_due(self.machine.clock.now_ns())
            if slot is None:
                break
            self._scan_one(slot, self.context())
            visited += 1
            self.mm_list.advance()
        for skipped in self.mm_list.end_pass():
            self.stats.add(skipped.proc, ScanSkip.SCALE0)
        return visited

    def _scan_one(self, slot: MmSlot, ctx: ScanContext) -> None:
        start_vaddr = slot.resume_vaddr
        self.trace("scan_mm_start", {"mm": str(slot.proc), "start": start_vaddr})
        before = self.stats.of(slot.proc)[EngineCounter.PTES_SCANNED]
        end = self.scanner.scan_mm(slot, ctx)
        if end is ScanEnd.GONE:
            self._release(slot.proc)
            return
        if end is ScanEnd.DENIED:  # try again after the longest period, not every pass
            retry_ns = self.tunables.scan_period_max_ms * 1_000_000
            slot.next_scan_ns = self.machine.clock.now_ns() + retry_ns
            return
        self._adapt(slot, ctx.topology, end is ScanEnd.WRAPPED)
        scanned = self.stats.of(slot.proc)[EngineCounter.PTES_SCANNED] - before
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

    def _adapt(self, slot: MmSlot, topology: Topology, wrapped: bool) -> None:
        """After a visit: the next period and size, the next due time, the target node.

        The series' X/Y rule judges a whole pass over the address space (a
        short tail visit must not stretch the period 8x); only "work appeared"
        (the last pass found none, this one already has) speeds up at once.
        """
        t = self.tunables
        slot.useful_this_pass += slot.useful_this_scan
        rate = throttle.ScanRate(slot.scan_period_ms, slot.scan_size_bytes)
        if wrapped:
            slot.prev_useful = slot.useful
            slot.useful = throttle.smooth_useful(slot.useful, slot.useful_this_pass)
            slot.useful_this_pass = 0
            rate = throttle.next_scan_rate(
                rate,
                slot.prev_useful,
                slot.useful,
                throttle.failure_ratio_pct(slot.migrate_succeeded, slot.migrate_failed),
                (t.scan_period_min_ms, t.scan_period_max_ms),
                (t.scan_size_min_bytes, t.scan_size_max_bytes),
            )
            self._end_pass(slot)
        elif throttle.work_appeared(slot.useful, slot.useful_this_pass):
            rate = throttle.next_scan_rate(
                rate, 0, slot.useful_this_pass, 0.0,
                (t.scan_period_min_ms, t.scan_period_max_ms),
                (t.scan_size_min_bytes, t.scan_size_max_bytes),
            )
            slot.useful = throttle.smooth_useful(slot.useful, slot.useful_this_pass)
        slot.scan_period_ms, slot.scan_size_bytes = rate.period_ms, rate.size_bytes
        period_ns = throttle.scaled_period_ms(rate.period_ms, slot.scale) * 1e6
        slot.next_scan_ns = self.machine.clock.now_ns() + int(period_ns)
        preferred = preferred_target(slot, topology)
        if preferred is not None:
            slot.target_nid = preferred

    def _end_pass(self, slot: MmSlot) -> None:
        """A pass completed: its histograms replace the previous pass's in the totals."""
        if slot.full_scans > 1:
            self.ledger.replace(slot.heat_contrib, slot.heat_cur)
            slot.heat_contrib = slot.heat_cur
        slot.heat_cur = {}

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
