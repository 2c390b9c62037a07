"""Demotion: cold top-tier pages to the slow tier, to make room for hotter ones.

Two ways in. Exchange (on by default, rank mode): when a top-tier node is
short (kscand.core.placement), the scanner queues its residents colder than the
node's threshold; when the node has no room for the promotion candidates,
the demoter moves the coldest queued residents to the slow tier, one for
each candidate at least exchange_margin_bins hotter, pairing the hottest
candidate with the coldest resident (MEMTIS and TPP make room the same way;
the kernel's kswapd demotes the inactive LRU tail instead). Watermark
(demote_watermark_pct > 0): while a top-tier node's free memory is under the
watermark, folios idle in each of the last demote_idle_scans scans are
queued, and just enough of them are demoted to bring the node back to it
(DAMOS migrate_cold and memtierd do this proactively).

Both revalidate each folio right before moving it (same process, still
present, same pfn, still on that top-tier node), spend a token bucket at the
promotion rate limit, and count every outcome by reason.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kscand.core.candidates import CandidateQueue, Candidates
from kscand.core.counters import EngineCounter, EngineFamily
from kscand.core.hotness import exchange_pairs
from kscand.core.migrator import RateLimiter, move_fail_counter
from kscand.core.room import FreeRoom, fit_in_room, room_pages
from kscand.core.stats import MigrateDrop, Stats
from kscand.core.tunables import Tunables
from kscand.errors import AccessDenied, ProcessGone
from kscand.machine import BoolArray, I32Array, I64Array, Machine, PageBatch, ProcessId, Topology

U8Array = npt.NDArray[np.uint8]


def deficit_pages(topology: Topology, watermark_pct: float) -> dict[int, int]:
    """Base pages each top-tier node must free to get back to its watermark (> 0 only)."""
    out = {}
    for node in topology.nodes:
        if not node.top_tier:
            continue
        want_free = int(np.ceil(node.capacity_pages * watermark_pct / 100.0))
        if node.free_pages < want_free:
            out[node.nid] = want_free - node.free_pages
    return out


def cold_mask(history: np.ndarray, seen: np.ndarray, idle_scans: int) -> BoolArray:
    """Folios idle in each of the last idle_scans scans (and seen at least that often)."""
    window = np.uint8((1 << idle_scans) - 1)
    out: BoolArray = ((history & window) == 0) & (seen >= idle_scans)
    return out


def demotion_target(topology: Topology, tunables: Tunables) -> int | None:
    """The slow-tier node with the most room, or None."""
    slow = [n for n in topology.nodes if not n.top_tier]
    if not slow:
        return None
    best = max(slow, key=lambda n: (room_pages(n, tunables.target_free_min_pct), -n.nid))
    return best.nid if room_pages(best, tunables.target_free_min_pct) > 0 else None


def pages_to_cover(nr_pages: I64Array, need: int) -> BoolArray:
    """The leading folios whose pages, in order, first reach need. int64 (n,) -> bool (n,)."""
    return (np.cumsum(nr_pages) - nr_pages) < need


class Demoter:
    """Per top-tier node bounded queues of cold folios, and the moves that demote them."""

    def __init__(self, machine: Machine, stats: Stats, queue_max: int, rate_mbps: int) -> None:
        self.machine = machine
        self.stats = stats
        self.queue_max = queue_max
        self.limiter = RateLimiter(machine.clock, rate_mbps)
        self.queues: dict[int, CandidateQueue] = {}

    @property
    def nr_queued(self) -> int:
        return sum(q.nr_queued for q in self.queues.values())

    def set_queue_max(self, queue_max: int) -> None:
        self.queue_max = queue_max
        for queue in self.queues.values():
            queue.queue_max = queue_max

    def _queue(self, nid: int) -> CandidateQueue:
        queue = self.queues.get(nid)
        if queue is None:
            queue = CandidateQueue(self.stats, self.queue_max, EngineCounter.DEMOTE_ADDED,
                                   MigrateDrop.DEMOTE_QUEUE_FULL)
            self.queues[nid] = queue
        return queue

    def add(
        self,
        proc: ProcessId,
        folios: PageBatch,
        nr_pages: I64Array,
        heat: U8Array | None,
        now_ns: int,
    ) -> None:
        """Queue cold top-tier folios of proc, by the node they are on."""
        heat = heat if heat is not None else np.zeros(len(folios), dtype=np.uint8)
        for nid in np.unique(folios.nid).tolist():
            at = np.flatnonzero(folios.nid == nid)
            self._queue(int(nid)).add(proc, folios.take(at), nr_pages[at], heat[at], now_ns)

    def drop(self, proc: ProcessId, reason: MigrateDrop = MigrateDrop.PROC_GONE) -> None:
        for queue in self.queues.values():
            queue.drop(proc, reason)

    def expire(self, older_than_ns: int) -> None:
        """Forget cold folios queued before older_than_ns: a rescan queues them afresh."""
        for queue in self.queues.values():
            queue.expire(older_than_ns, MigrateDrop.DEMOTE_STALE)

    def wanted(self, topology: Topology, tunables: Tunables) -> bool:
        """Whether the watermark demoter wants cold folios now (some top-tier node is short)."""
        if tunables.demote_watermark_pct <= 0:
            return False
        return bool(deficit_pages(topology, tunables.demote_watermark_pct))

    # --- exchange -------------------------------------------------------------------------

    def exchange(
        self,
        nid: int,
        cand_heat: U8Array,
        cand_pages: I64Array,
        need_pages: int,
        topology: Topology,
        tunables: Tunables,
        room: FreeRoom | None = None,
    ) -> list[tuple[ProcessId, Candidates]]:
        """Demote up to need_pages of nid's coldest queued residents for hotter candidates.

        cand_heat, cand_pages: the candidates waiting for nid, hottest first.
        Returns the folios demoted, per process. room: the free pages kept across
        the moves (one from topology when None).
        """
        room = room if room is not None else FreeRoom(topology)
        queue = self.queues.get(nid)
        target = demotion_target(topology, tunables)
        if queue is None or not queue.nr_queued or need_pages <= 0 or target is None:
            return []
        taken = [(proc, queue.queued_ns(proc), queue.take(proc)) for proc in queue.procs()]
        parts = [(proc, at, c) for proc, at, c in taken if c is not None]
        heat = np.concatenate([c.heat for _, _, c in parts])
        nr_pages = np.concatenate([c.nr_pages for _, _, c in parts])
        order = np.argsort(heat, kind="stable")  # coldest first
        nr_pairs = exchange_pairs(
            cand_heat, cand_pages, heat[order], nr_pages[order], tunables.exchange_margin_bins
        )
        chosen = order[:nr_pairs]
        chosen = chosen[pages_to_cover(nr_pages[chosen], need_pages)]
        use = np.zeros(heat.size, dtype=np.bool_)
        use[chosen] = True
        moved = []
        offset = 0
        for proc, queued_ns, cands in parts:
            mine = use[offset : offset + len(cands)]
            offset += len(cands)
            queue.requeue(proc, cands.select(~mine), queued_ns)
            if not mine.any():
                continue
            done = self._demote_proc(proc, cands.select(mine), nid, target, tunables, room)
            if done is not None and len(done):
                self.stats.add(proc, EngineCounter.EXCHANGE_DEMOTED, int(done.nr_pages.sum()))
                moved.append((proc, done))
        return moved

    # --- watermark ------------------------------------------------------------------------

    def demote(
        self, topology: Topology, tunables: Tunables, room: FreeRoom | None = None
    ) -> list[tuple[ProcessId, Candidates]]:
        """Demote queued cold folios until each top-tier node is back at its watermark.

        room: the free pages kept across the moves (one from topology when None).
        """
        room = room if room is not None else FreeRoom(topology)
        deficits = deficit_pages(topology, tunables.demote_watermark_pct)
        target = demotion_target(topology, tunables)
        moved = []
        for nid, queue in self.queues.items():
            for proc in queue.procs():
                cands = queue.take(proc)
                if cands is None:
                    continue
                need = deficits.get(nid, 0)
                if need <= 0 or target is None or tunables.demote_watermark_pct <= 0:
                    self.stats.add(proc, MigrateDrop.DEMOTE_NOT_NEEDED, int(cands.nr_pages.sum()))
                    continue
                chosen = cands.select(pages_to_cover(cands.nr_pages, need))
                done = self._demote_proc(proc, chosen, nid, target, tunables, room)
                if done is None or not len(done):
                    continue
                deficits[nid] = need - int(done.nr_pages.sum())
                moved.append((proc, done))
        return moved

    # --- moves ----------------------------------------------------------------------------

    def _demote_proc(
        self, proc: ProcessId, cands: Candidates, nid: int, target: int, tunables: Tunables,
        room: FreeRoom,
    ) -> Candidates | None:
        """Revalidate, rate-limit and move; returns the folios demoted (None: proc gone)."""
        try:
            if not self.machine.is_alive(proc):
                raise ProcessGone(str(proc))
            now = self.machine.read_pages(proc, cands.vaddr)
            still = (now.nid == nid) & (now.pfn == cands.pfn)
            self.stats.add(proc, MigrateDrop.DEMOTE_CHANGED, int(cands.nr_pages[~still].sum()))
            cands = cands.select(still)
            free = room_pages(room.topology().node(target), tunables.target_free_min_pct)
            fits = fit_in_room(cands.nr_pages, free)
            self.stats.add(proc, MigrateDrop.DEMOTE_TARGET_FULL, int(cands.nr_pages[~fits].sum()))
            cands = cands.select(fits)
            self.limiter.rate_mbps = tunables.promote_rate_limit_mbps
            ok = self.limiter.allow(cands.nr_pages)
            self.stats.add(proc, MigrateDrop.DEMOTE_RATE_LIMITED, int(cands.nr_pages[~ok].sum()))
            cands = cands.select(ok)
            if not len(cands):
                return cands
            moved = np.zeros(len(cands), dtype=np.bool_)
            batch = tunables.migrate_batch_folios
            for lo in range(0, len(cands), batch):
                part = cands.select(np.arange(lo, min(lo + batch, len(cands))))
                status = self.machine.move_pages(proc, part.vaddr, target)
                moved[lo : lo + len(part)] = self._account(proc, status, part.nr_pages, target)
            done = cands.select(moved)
            room.moved(np.full(len(done), nid, dtype=np.int32), done.nr_pages, target)
            return done
        except ProcessGone:
            self.stats.add(proc, MigrateDrop.PROC_GONE, int(cands.nr_pages.sum()))
        except AccessDenied:
            self.stats.add(proc, EngineFamily.DEMOTE_MOVE_FAILED, int(cands.nr_pages.sum()),
                           reason="eperm")
        return None

    def _account(
        self, proc: ProcessId, status: I32Array, nr_pages: I64Array, target: int
    ) -> BoolArray:
        moved = status == target
        self.stats.add(proc, EngineCounter.DEMOTED, int(nr_pages[moved].sum()))
        failed = status < 0
        for code in np.unique(status[failed]).tolist():
            self.stats.add(
                proc, move_fail_counter(int(code), EngineFamily.DEMOTE_MOVE_FAILED),
                int(nr_pages[status == code].sum()),
            )
        return np.asarray(moved)
