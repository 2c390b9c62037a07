"""The scan: one process from its resume address within a byte budget (kscand_scan_mm_slot).

Layers, as in khugepaged: scan_mm() walks VMAs from the resume address until
the budget is spent; scan_range() handles one aligned run of pages inside one
VMA with array operations only: read the pages, filter, test-and-clear the
Accessed bits, update the access history, and queue hot slow-tier folios.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core import evidence, throttle
from kscand.core.counters import EngineCounter, HotSkip, ScanSkip, Series
from kscand.core.demoter import Demoter, cold_mask
from kscand.core.filters import NR_PAGE_SKIP, folio_sizes, page_skip_codes
from kscand.core.hotness import heat_histogram, heat_of
from kscand.core.migrator import Migrator
from kscand.core.mmlist import HISTORY_CHUNK_BYTES, MmSlot
from kscand.core.placement import HeatKey, HeatLedger, ScanContext, add_into
from kscand.core.reprobe import Reprobe, ReprobeQueue
from kscand.core.scanplan import (
    ScanEnd,
    history_offsets,
    hot_mask,
    is_toptier,
    pages_in,
    pages_of,
    plan_scan,
    push_history,
    sizes_at,
)
from kscand.core.stats import PageSkip, Stats
from kscand.errors import AccessDenied, AccessUnknown, ProcessGone
from kscand.machine import (
    PAGE_SHIFT,
    BoolArray,
    I64Array,
    Machine,
    PageBatch,
    ProcessId,
)

# Scans a top-tier page must have been seen in (since it arrived) to be exchanged, so
# that noise in a young estimate does not swap equals. 4 (half a register) left a full
# top tier unexchanged for 14 s on graph-powerlaw (a 16 GiB pass takes ~5 s there, so
# the first promotions could make room only after 20 s): 3 took its acc-weighted share
# from 55.9 % to 60.2 % and zipf-0.6's from 55.5 % to 57.2 %; 2 let noise swap warm
# pages (zipf-0.6 traffic 1.61x the minimum, 1.52x at 3).
EXCHANGE_MIN_SEEN = 3
# A resident is judged for exchange on its last scans only: one that cooled down
# reads cold after this many idle scans, not after a whole register.
RESIDENT_RECENT_SCANS = 4


def _idx(offsets: slice | npt.NDArray[np.intp], n: int) -> npt.NDArray[np.intp]:
    """Offsets as an index array."""
    if isinstance(offsets, slice):
        return np.arange(offsets.start, offsets.start + n, dtype=np.intp)
    return offsets


def _sub(nr_pages: I64Array | None, mask: BoolArray) -> I64Array | None:
    return None if nr_pages is None else nr_pages[mask]


@dataclass(frozen=True, slots=True)
class Judged:
    """Folios of one range whose heat is known now (a scan, or its re-probe)."""

    slot: MmSlot
    chunk_base: int
    offsets: npt.NDArray[np.intp]
    folios: PageBatch
    nr_pages: I64Array | None
    young: BoolArray


class Scanner:
    """Walks one process's address space per call, within the scan budget.

    What a scan finds goes to three sinks: the migrator's queue (promotion
    candidates), the demoter's queue (exchange and watermark demotion) and the
    re-probe queue; drain() is called when the candidate queue would overflow
    mid-scan (kmigrated running beside kscand), so a large scan does not drop
    what it found.
    """

    def __init__(
        self,
        machine: Machine,
        migrator: Migrator,
        stats: Stats,
        demoter: Demoter | None = None,
        *,
        ledger: HeatLedger | None = None,
        reprobes: ReprobeQueue | None = None,
        drain: Callable[[], None] | None = None,
    ) -> None:
        self.machine = machine
        self.migrator = migrator
        self.stats = stats
        self.demoter = demoter
        self.ledger = ledger if ledger is not None else HeatLedger()
        self.reprobes = reprobes
        self.drain = drain

    def scan_mm(self, slot: MmSlot, ctx: ScanContext) -> ScanEnd:
        """Scan slot's process from its resume address for up to scan_size_bytes (and the
        tail after them when it is at most half that: scanplan.TAIL_ABSORB_NUM)."""
        proc = slot.proc
        tunables = ctx.tunables
        self.stats.add(proc, Series.MM_SCANS)
        slot.begin_scan()
        if slot.resume_vaddr == 0:  # a pass begins: the interval since the last one began
            if slot.pass_start_ns is not None and ctx.now_ns > slot.pass_start_ns:
                slot.pass_interval_s = (ctx.now_ns - slot.pass_start_ns) / 1e9
            slot.pass_start_ns = ctx.now_ns
        try:
            budget = slot.scan_size_bytes or tunables.scan_size_bytes
            plan = plan_scan(self.machine.vmas(proc), slot.resume_vaddr, budget)
            for reason in plan.skipped:
                self.stats.add(proc, reason)
            self.stats.add(proc, Series.VMA_SCANS, plan.nr_vmas)
            for start, end in plan.ranges:
                self.scan_range(slot, start, end, ctx)
        except ProcessGone:
            return ScanEnd.GONE
        except AccessDenied:
            # Not ours to read (a privileged or protected process): skip it this time.
            self.stats.add(proc, ScanSkip.ACCESS_DENIED)
            return ScanEnd.DENIED
        slot.resume_vaddr = plan.resume_vaddr
        if not plan.wrapped:
            return ScanEnd.BUDGET
        slot.full_scans += 1
        return ScanEnd.WRAPPED

    def scan_range(self, slot: MmSlot, start: int, end: int, ctx: ScanContext) -> None:
        """Scan [start, end), inside one VMA and one history chunk. No per-page loop.

        read the pages -> filter -> test-and-clear Accessed bits -> shift them
        into the history -> count -> judge (now, or accessed folios after their
        re-probe): queue candidates for promotion and for exchange.
        """
        proc = slot.proc
        tunables = ctx.tunables
        batch = self.machine.read_range(proc, start, end)
        self.stats.add(proc, EngineCounter.PTES_SCANNED, len(batch))
        codes = page_skip_codes(batch.flags)
        nr_base, nr_thp = self._count_skips(proc, codes)
        if not nr_base + nr_thp:
            return
        chunk_base = start - start % HISTORY_CHUNK_BYTES
        nr_pages: I64Array | None = None  # None: every folio is a base page
        if nr_base == len(batch):
            folios = batch  # every page an eligible base page: the history is one slice
            first = (start - chunk_base) >> PAGE_SHIFT
            offsets: slice | npt.NDArray[np.intp] = slice(first, first + len(batch))
        else:
            eligible = np.flatnonzero(codes <= PageSkip.ELIGIBLE_THP)
            folios = batch.take(eligible)
            offsets = history_offsets(folios.vaddr, chunk_base)
            if nr_thp:
                nr_pages = folio_sizes(batch.flags)[eligible]

        try:
            young = self.machine.test_and_clear_young(proc, folios)
        except AccessUnknown:
            # Nothing new on these pages (a DAMON snapshot already reported): no look,
            # so no bit in their history, no scan counted in it.
            self.stats.add(proc, ScanSkip.ACCESS_UNKNOWN, pages_of(len(folios), nr_pages))
            return
        history = slot.history_chunk(chunk_base)
        pushed = push_history(history[offsets], young)
        history[offsets] = pushed
        seen = slot.seen_chunk(chunk_base)
        seen[offsets] = np.minimum(seen[offsets], np.uint8(254)) + np.uint8(1)
        on_top = is_toptier(folios.nid, ctx.toptier)
        self._count_tiers(proc, nr_pages, young, on_top)
        slot.useful_this_scan += pages_in(young & ~on_top, nr_pages)
        if ctx.demote_wanted or any(p.short for p in ctx.plans.values()):
            # While the top tier wants room, its idle pages are work too: without
            # this, a process living on the top tier is throttled down to one scan
            # every few seconds and its cold pages take minutes to qualify.
            slot.useful_this_scan += pages_in(on_top & ~young, nr_pages)
        slot.note_accessed(folios.nid[young], None if nr_pages is None else nr_pages[young])
        if not tunables.rank_hotness:
            self._judge_series(slot, chunk_base, offsets, folios, nr_pages, young, pushed, ctx)
            return
        idx = _idx(offsets, len(folios))
        if ctx.reprobe_s <= 0 or self.reprobes is None:
            self.judge(Judged(slot, chunk_base, idx, folios, nr_pages, young), ctx)
            return
        short = slot.short_chunk(chunk_base)
        idle = ~young
        if idle.any():
            short[idx[idle]] = short[idx[idle]] << np.uint8(1)
            self.judge(
                Judged(slot, chunk_base, idx[idle], folios.take(np.flatnonzero(idle)),
                       _sub(nr_pages, idle), young[idle]),
                ctx,
            )
        if not young.any():
            return
        at = np.flatnonzero(young)
        now = Judged(slot, chunk_base, idx[at], folios.take(at), _sub(nr_pages, young), young[at])
        # Promote on the evidence at hand (room is latency wasted): what qualifies on
        # the scan alone (promote_on_reprobe false, or a short register that already
        # saw it accessed); the re-probe ranks them and decides the rest.
        queued = self._promote_now(now, ctx)
        due_ns = self.machine.clock.now_ns() + int(ctx.reprobe_s * 1e9)
        entry = Reprobe(due_ns, proc, chunk_base, now.offsets, now.folios, now.nr_pages, queued,
                        ctx.reprobe_s)
        if self.reprobes.add(entry):
            self.stats.add(proc, EngineCounter.REPROBE_QUEUED, pages_in(young, nr_pages))
            return
        # No room to look again: judge on the scan alone (its short bit unknown, kept).
        self.stats.add(proc, HotSkip.REPROBE_QUEUE_FULL, pages_in(young, nr_pages))
        self.judge(now, ctx, queued, reprobed=False)

    def reprobe(self, slot: MmSlot, entry: Reprobe, ctx: ScanContext) -> BoolArray | None:
        """The second look at folios found accessed: shift it in, then judge them.

        Returns which folios were found accessed again (None: the source had nothing
        new on them, and they are judged on the scan alone)."""
        try:
            young = self.machine.test_and_clear_young(slot.proc, entry.folios)
        except AccessUnknown:
            nr_unknown = pages_of(len(entry), entry.nr_pages)
            self.stats.add(slot.proc, HotSkip.REPROBE_ACCESS_UNKNOWN, nr_unknown)
            judged = Judged(
                slot, entry.chunk_base, entry.offsets, entry.folios, entry.nr_pages,
                np.ones(len(entry), dtype=np.bool_),
            )
            self.judge(judged, ctx, entry.queued, reprobed=False)
            return None
        short = slot.short_chunk(entry.chunk_base)
        short[entry.offsets] = (short[entry.offsets] << np.uint8(1)) | young.astype(np.uint8)
        self.stats.add(slot.proc, EngineCounter.REPROBE_YOUNG, pages_in(young, entry.nr_pages))
        judged = Judged(
            slot, entry.chunk_base, entry.offsets, entry.folios, entry.nr_pages,
            np.ones(len(entry), dtype=np.bool_),
        )
        self.judge(judged, ctx, entry.queued)
        return young

    def _heat(
        self,
        j: Judged,
        ctx: ScanContext,
        bound: int = 0,
        recent: int = 0,
        at: npt.NDArray[np.intp] | None = None,
    ) -> npt.NDArray[np.uint8]:
        """The heat bins of judged folios, from their registers (or a bound of them).

        recent > 0: from the last `recent` looks only (a resident that cooled down
        reads cold after that many idle scans, not after a whole register).
        at: of these folios only (indices into j), in that order.
        """
        t = ctx.tunables
        slot = j.slot
        offsets = j.offsets if at is None else j.offsets[at]
        seen = slot.seen_chunk(j.chunk_base)[offsets]
        if recent:
            seen = np.minimum(seen, np.uint8(recent))
        interval_s = slot.pass_interval_s or (
            throttle.scaled_period_ms(slot.scan_period_ms or t.mm_scan_period_ms, slot.scale)
            / 1e3
        )
        heat = heat_of(
            slot.history_chunk(j.chunk_base)[offsets],
            slot.short_chunk(j.chunk_base)[offsets]
            if ctx.reprobe_s > 0
            else np.zeros_like(seen),
            seen,
            interval_s,
            ctx.reprobe_s,
            bound,
        )
        return heat

    def _promote_now(self, j: Judged, ctx: ScanContext) -> BoolArray:
        """Queue the slow-tier folios that qualify already; returns which were queued."""
        heat = self._heat(j, ctx)
        slot = j.slot
        target = slot.target_nid if slot.target_nid in ctx.plans else ctx.default_target
        want = ~is_toptier(j.folios.nid, ctx.toptier) & (heat > 0)
        want &= heat.astype(np.int16) >= ctx.threshold_for(target)
        early = evidence.too_early(j.slot, j.chunk_base, j.offsets, ctx.young_scans)
        if early is not None:
            want &= ~early  # counted when judged (judge() sees them again)
        if ctx.short_evidence:
            # The re-probe decides the others (they are judged again then).
            want &= evidence.short_evidence(j.slot, j.chunk_base, j.offsets)
        pinned = evidence.pinned(slot, j.chunk_base, j.offsets, ctx.now_s)
        if pinned is not None:
            want &= ~pinned
        self._queue_promote(slot.proc, j, np.flatnonzero(want), ctx)
        return want

    def judge(
        self,
        j: Judged,
        ctx: ScanContext,
        queued: BoolArray | None = None,
        reprobed: bool = True,
    ) -> None:
        """Heat of the folios -> the histograms -> promotion and exchange candidates.

        queued: folios already queued for promotion on an earlier look (not again).
        reprobed: False when no re-probe could look at them (its queue was full): the
        scan's evidence stands alone.
        """
        t = ctx.tunables
        slot, proc = j.slot, j.slot.proc
        seen = slot.seen_chunk(j.chunk_base)[j.offsets]
        heat = self._heat(j, ctx)
        on_top = is_toptier(j.folios.nid, ctx.toptier)
        target = slot.target_nid if slot.target_nid in ctx.plans else ctx.default_target
        promote_min = np.full(len(j.folios), ctx.threshold_for(target), dtype=np.int16)
        threshold = np.zeros(len(j.folios), dtype=np.int16)  # a resident's, when short
        self._account_heat(
            slot, heat, j.nr_pages, on_top, j.folios.nid, target, (threshold, promote_min), ctx
        )
        hot = j.young & (heat.astype(np.int16) >= promote_min) & (heat > 0)
        hot_pages = pages_in(hot, j.nr_pages)
        self.stats.add(proc, Series.HOTPAGE, hot_pages)
        self.stats.add(proc, Series.COLDPAGE, pages_in(j.young, j.nr_pages) - hot_pages)
        pinned = evidence.pinned(slot, j.chunk_base, j.offsets, ctx.now_s)
        want = hot & ~on_top
        if queued is not None:
            want &= ~queued
        early = evidence.too_early(j.slot, j.chunk_base, j.offsets, ctx.young_scans)
        if early is not None and (want & early).any():
            self.stats.add(proc, HotSkip.YOUNG_SCANS, pages_in(want & early, j.nr_pages))
            want &= ~early
        if ctx.short_evidence and reprobed:
            slow = want & ~evidence.short_evidence(j.slot, j.chunk_base, j.offsets)
            if slow.any():
                self.stats.add(proc, HotSkip.NO_SHORT_EVIDENCE, pages_in(slow, j.nr_pages))
                want &= ~slow
        if pinned is not None and (want & pinned).any():
            self.stats.add(proc, HotSkip.PING_PONG_GUARD, pages_in(want & pinned, j.nr_pages))
            want &= ~pinned
        # Queued with their lower bounds: exchange and the room cut-off rank by them.
        self._queue_promote(proc, j, np.flatnonzero(want), ctx)
        if ctx.demote_wanted:
            history = slot.history_chunk(j.chunk_base)[j.offsets]
            self._queue_watermark_cold(slot, j, history, on_top, ctx)
        if self.demoter is None or not t.exchange_enabled:
            return
        # Residents of a short node colder than its threshold by the margin may make
        # room; pages with no evidence of access always may.
        limit = np.where(threshold > 0, np.maximum(threshold - t.exchange_margin_bins, 1), 0)
        looked = np.flatnonzero(on_top & (seen >= EXCHANGE_MIN_SEEN))
        if not looked.size:
            return
        recent_heat = self._heat(j, ctx, 0, RESIDENT_RECENT_SCANS, looked)
        cold = recent_heat.astype(np.int16) < limit[looked]
        if pinned is not None:
            cold &= ~pinned[looked]
        if cold.any():
            at = looked[cold]
            # Residents are queued with their recent estimate, candidates with their
            # lower bound: a swap needs the newcomer to be surely hotter, and a page
            # that cooled down is not kept on its past.
            self.demoter.add(
                proc, j.folios.take(at), sizes_at(j.nr_pages, at), recent_heat[cold], ctx.now_ns
            )

    def _account_heat(
        self,
        slot: MmSlot,
        heat: npt.NDArray[np.uint8],
        nr_pages: I64Array | None,
        on_top: BoolArray,
        nids: npt.NDArray[np.int32],
        target: int | None,
        thresholds: tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]],
        ctx: ScanContext,
    ) -> None:
        """Add the folios to this pass's histograms; set each resident's threshold and
        promotion minimum (thresholds, updated in place) to its node's."""
        threshold, promote_min = thresholds
        parts: list[tuple[HeatKey, BoolArray]] = []
        if on_top.any():
            for nid in ctx.plans:
                mine = on_top & (nids == nid)
                if mine.any():
                    parts.append(((nid, True), mine))
                    plan = ctx.plans[nid]
                    threshold[mine] = plan.threshold if plan.short else 0
                    promote_min[mine] = plan.promote_min
        if target is not None and not on_top.all():
            parts.append(((target, False), ~on_top))
        first_pass = slot.full_scans == 0
        for key, mask in parts:
            counts = heat_histogram(heat[mask], _sub(nr_pages, mask))
            add_into(slot.heat_cur, key, counts)
            if first_pass:  # no complete pass yet: what was seen so far stands for the process
                add_into(slot.heat_contrib, key, counts)
                self.ledger.add(key, counts)

    def _queue_promote(
        self,
        proc: ProcessId,
        j: Judged,
        at: npt.NDArray[np.intp],
        ctx: ScanContext,
        bounded: bool = True,
    ) -> None:
        """Queue folios at of j; bounded: with their lower heat bounds (rank mode: the
        migrator's room cut-off and exchange rank by them)."""
        if not at.size:
            return
        lower = self._heat(j, ctx, -1, 0, at) if bounded else None  # before a drain moves any
        if self.drain is not None and (
            self.migrator.nr_queued + at.size > self.migrator.queue_max
        ):
            self.drain()  # kmigrated's turn: the queue would overflow
        self.migrator.add(
            proc, j.folios.take(at), sizes_at(j.nr_pages, at),
            lower, ctx.now_ns,
        )

    def _judge_series(
        self,
        slot: MmSlot,
        chunk_base: int,
        offsets: slice | npt.NDArray[np.intp],
        folios: PageBatch,
        nr_pages: I64Array | None,
        young: BoolArray,
        pushed: npt.NDArray[np.uint8],
        ctx: ScanContext,
    ) -> None:
        """The series' rule: hot = accessed in each of the last hot_history_depth scans."""
        proc = slot.proc
        t = ctx.tunables
        hot = young & hot_mask(pushed, t.hot_history_depth)
        on_top = is_toptier(folios.nid, ctx.toptier)
        hot_pages = pages_in(hot, nr_pages)
        self.stats.add(proc, Series.HOTPAGE, hot_pages)
        self.stats.add(proc, Series.COLDPAGE, pages_in(young, nr_pages) - hot_pages)
        idx = _idx(offsets, len(folios))
        j = Judged(slot, chunk_base, idx, folios, nr_pages, young)
        self._queue_promote(proc, j, np.flatnonzero(hot & ~on_top), ctx, bounded=False)
        self._queue_watermark_cold(slot, j, pushed, on_top, ctx)

    def _queue_watermark_cold(
        self,
        slot: MmSlot,
        j: Judged,
        pushed: npt.NDArray[np.uint8],
        on_top: BoolArray,
        ctx: ScanContext,
    ) -> None:
        """Proactive demotion (demote_watermark_pct): top-tier folios idle for a while."""
        if not ctx.demote_wanted or self.demoter is None:
            return
        seen = slot.seen_chunk(j.chunk_base)[j.offsets]
        cold_top = on_top & cold_mask(pushed, seen, ctx.tunables.demote_idle_scans)
        cold = np.flatnonzero(cold_top)
        if cold.size:
            self.demoter.add(
                slot.proc, j.folios.take(cold), sizes_at(j.nr_pages, cold), None, ctx.now_ns
            )

    def _count_skips(self, proc: ProcessId, codes: npt.NDArray[np.uint8]) -> tuple[int, int]:
        """Count the skip reasons; returns (eligible base pages, eligible THP heads)."""
        nr_base = int(np.count_nonzero(codes == PageSkip.ELIGIBLE))
        if nr_base == codes.shape[0]:
            return nr_base, 0  # the common case: nothing skipped, no histogram needed
        counts = np.bincount(codes, minlength=NR_PAGE_SKIP)
        for code in range(PageSkip.NOT_PRESENT, NR_PAGE_SKIP):
            self.stats.add(proc, PageSkip(code).counter, int(counts[code]))
        return nr_base, int(counts[PageSkip.ELIGIBLE_THP])

    def _count_tiers(
        self,
        proc: ProcessId,
        nr_pages: I64Array | None,
        young: BoolArray,
        on_top: BoolArray,
    ) -> None:
        """Add the series' per-page counters known at scan time (hot/cold: at judgement)."""
        total = young.shape[0] if nr_pages is None else int(nr_pages.sum())
        young_pages = pages_in(young, nr_pages)
        top_pages = pages_in(on_top, nr_pages)
        self.stats.add(proc, Series.IDLEPAGE, total - young_pages)
        self.stats.add(proc, Series.TOPTIER, top_pages)
        self.stats.add(proc, Series.SLOWTIER, total - top_pages)
