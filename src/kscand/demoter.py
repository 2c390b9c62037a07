"""Optional demotion of cold top-tier pages, to make room for hot ones.

kscand in the series relies on reclaim to free the top tier; memtierd and
DAMOS migrate_cold demote instead. Off by default: while a top-tier node's
free memory is under demote_watermark_pct of its capacity, the scanner queues
the top-tier folios of scanned processes that were idle in each of the last
demote_idle_scans scans, and the demoter moves just enough of them to the
slow-tier node with the most room to bring the node back to its watermark.
"""

from __future__ import annotations

import numpy as np

from kscand.errors import AccessDenied, ProcessGone
from kscand.machine import BoolArray, I64Array, Machine, ProcessId, Topology
from kscand.migrator import CandidateQueue, Candidates, fit_in_room, move_fail_counter, room_pages
from kscand.stats import MigrateDrop, Stats
from kscand.tunables import Tunables


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
    return ((history & window) == 0) & (seen >= idle_scans)


def demotion_target(topology: Topology, tunables: Tunables) -> int | None:
    """The slow-tier node with the most room, or None."""
    slow = [n for n in topology.nodes if not n.top_tier]
    if not slow:
        return None
    best = max(slow, key=lambda n: (room_pages(n, tunables.target_free_min_pct), -n.nid))
    return best.nid if room_pages(best, tunables.target_free_min_pct) > 0 else None


class Demoter:
    """A bounded queue of cold top-tier folios and the moves that demote them."""

    def __init__(self, machine: Machine, stats: Stats, queue_max: int) -> None:
        self.machine = machine
        self.stats = stats
        self.queue = CandidateQueue(stats, queue_max, "nr_kscand_demote_added")

    def wanted(self, topology: Topology, tunables: Tunables) -> bool:
        """Whether cold folios are worth queueing now (some top-tier node is short)."""
        if tunables.demote_watermark_pct <= 0:
            return False
        return bool(deficit_pages(topology, tunables.demote_watermark_pct))

    def demote(self, topology: Topology, tunables: Tunables) -> int:
        """Demote queued cold folios until each top-tier node is back at its watermark."""
        deficits = deficit_pages(topology, tunables.demote_watermark_pct)
        target = demotion_target(topology, tunables)
        demoted = 0
        for proc in self.queue.procs():
            cands = self.queue.take(proc)
            if cands is None:
                continue
            if not deficits or target is None:
                self.stats.add(proc, "drop_demote_not_needed", int(cands.nr_pages.sum()))
                continue
            try:
                demoted += self._demote_proc(proc, cands, deficits, target, tunables)
            except ProcessGone:
                self.stats.add(proc, MigrateDrop.PROC_GONE.value, int(cands.nr_pages.sum()))
            except AccessDenied:
                self.stats.add(proc, "demote_move_fail_eperm", int(cands.nr_pages.sum()))
        return demoted

    def _demote_proc(
        self,
        proc: ProcessId,
        cands: Candidates,
        deficits: dict[int, int],
        target: int,
        tunables: Tunables,
    ) -> int:
        if not self.machine.is_alive(proc):
            raise ProcessGone(str(proc))
        now = self.machine.read_pages(proc, cands.vaddr)
        still = (now.nid >= 0) & (now.pfn == cands.pfn)
        take = np.zeros(len(cands), dtype=np.bool_)
        for nid, need in list(deficits.items()):
            on_node = np.flatnonzero(still & (now.nid == nid))
            fits = fit_in_room(cands.nr_pages[on_node], need)
            take[on_node[fits]] = True
            deficits[nid] = need - int(cands.nr_pages[on_node[fits]].sum())
            if deficits[nid] <= 0:
                del deficits[nid]
        room = room_pages(self.machine.topology().node(target), tunables.target_free_min_pct)
        chosen = cands.select(take)
        chosen = chosen.select(fit_in_room(chosen.nr_pages, room))
        if not len(chosen):
            return 0
        status = self.machine.move_pages(proc, chosen.vaddr, target)
        return self._account(proc, status, chosen.nr_pages, target)

    def _account(self, proc: ProcessId, status: np.ndarray, nr_pages: I64Array, target: int) -> int:
        moved = status == target
        pages = int(nr_pages[moved].sum())
        self.stats.add(proc, "nr_kscand_demoted", pages)
        failed = status < 0
        for code in np.unique(status[failed]).tolist():
            self.stats.add(
                proc, "demote_" + move_fail_counter(int(code)),
                int(nr_pages[status == code].sum()),
            )
        return pages
