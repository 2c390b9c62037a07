"""A top-tier node's LRU lists and kswapd reclaiming them by demotion (mm/vmscan.c, v6.x).

The rules, each after the kernel function named:

- Lists: one inactive and one active list of folios per node, new folios at the
  head, reclaim from the tail. A page faulted in goes to the inactive list
  (lru_cache_add_inactive_or_unevictable, since v5.9 for anon too); a folio that
  migrates in (a promotion) keeps its flags (folio_migrate_flags), and a folio on
  the slow tier is never aged there, so it arrives inactive and unreferenced.
- kswapd (balance_pgdat): woken on the node, it reclaims until pgdat_balanced()
  holds: free pages above the promotion watermark WMARK_PROMO in memory-tiering
  mode (numa_balancing=2), else the high watermark. Each round
  (kswapd_shrink_node) wants nr_to_reclaim = max(high watermark,
  SWAP_CLUSTER_MAX) pages and scans each list's size >> priority
  (get_scan_count, anon only); priority starts at DEF_PRIORITY (12) and drops
  when a round scanned less than nr_to_reclaim or reclaimed nothing; at priority
  0 kswapd gives up, and a run that reclaimed nothing counts a kswapd failure
  (after MAX_RECLAIM_RETRIES of them kswapd is not woken any more).
- shrink_lruvec: passes of SWAP_CLUSTER_MAX pages, each the inactive tail then
  (when inactive_is_low() held at the start: may_deactivate) the active tail,
  until the inactive target is scanned or nr_to_reclaim is reclaimed; then one
  more active batch if the inactive list is (still) low.
- shrink_folio_list / folio_check_references for an inactive folio: its
  Accessed bit is tested and cleared (folio_referenced, an rmap walk); accessed
  and PG_referenced already set -> activate; accessed only -> set PG_referenced
  and rotate it to the inactive head (another trip); not accessed -> reclaim,
  here demote (demote_folio_list) to the next lower tier (next_demotion_node,
  mm/memory-tiers.c). A folio that fails to demote is activated (no swap).
- shrink_active_list: active-tail folios have their Accessed bits cleared and
  all go to the inactive head (anon folios are never kept active for being
  referenced); PG_referenced is left as it is.
- inactive_is_low: inactive * inactive_ratio < active, ratio = int_sqrt(10 x the
  list sizes in GiB), or 1 under 1 GiB.

Simplifications: one node-wide LRU (no memcgs, no file LRU: every movable page
is on the anon lists; other VMA kinds are unevictable here); no MGLRU; kswapd
runs to completion at the instant it is woken, not concurrently; the scan order
within a pass is taken in chunks of whole SWAP_CLUSTER_MAX passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core.stats import Stats
from kscand.evaluation.counters import BaselineFamily, KswapdCounter, Vmstat
from kscand.evaluation.folios import FolioIndex, I64Array, VmaEntry, keys_of, split_keys
from kscand.evaluation.numab_gate import (
    WMARK_HIGH_FRACTION,
    WMARK_LOW_FRACTION,
    WMARK_MIN_FRACTION,
    WMARK_PROMO_FRACTION,
)
from kscand.machine import PAGE_SHIFT
from kscand.sim.machine import SimMachine

SWAP_CLUSTER_MAX = 32
DEF_PRIORITY = 12
MAX_RECLAIM_RETRIES = 16
INACTIVE, ACTIVE = 1, 2
MIN_QUEUE = 1024


class _Queue:
    """A list as a log: entries (key, seq) appended at the head, taken from the tail.

    An entry is stale once its folio left the list or was re-added (its seq
    moved on); stale entries are skipped when taken."""

    def __init__(self) -> None:
        self.keys = np.zeros(MIN_QUEUE, dtype=np.int64)
        self.seqs = np.zeros(MIN_QUEUE, dtype=np.int64)
        self.lo = 0
        self.hi = 0

    def __len__(self) -> int:
        return self.hi - self.lo

    def push(self, keys: I64Array, seqs: I64Array) -> None:
        n = keys.shape[0]
        if self.hi + n > self.keys.shape[0]:
            live = self.hi - self.lo
            size = max(MIN_QUEUE, 2 * (live + n))
            new_keys, new_seqs = np.zeros(size, np.int64), np.zeros(size, np.int64)
            new_keys[:live] = self.keys[self.lo:self.hi]
            new_seqs[:live] = self.seqs[self.lo:self.hi]
            self.keys, self.seqs, self.lo, self.hi = new_keys, new_seqs, 0, live
        self.keys[self.hi:self.hi + n], self.seqs[self.hi:self.hi + n] = keys, seqs
        self.hi += n

    def peek(self, n: int) -> tuple[I64Array, I64Array]:
        return self.keys[self.lo:self.lo + n], self.seqs[self.lo:self.lo + n]


@dataclass
class _VmaLru:
    per_unit: int
    seq: I64Array  # per unit: the seq of its list entry, -1 when off the lists
    lru: npt.NDArray[np.int8]  # 0 off, INACTIVE or ACTIVE
    referenced: npt.NDArray[np.bool_]  # PG_referenced


class NodeLru:
    """The inactive and active lists of one node."""

    def __init__(self, nid: int) -> None:
        self.nid = nid
        self.vmas: dict[int, _VmaLru] = {}
        self.queues = {INACTIVE: _Queue(), ACTIVE: _Queue()}
        self.nr_pages = {INACTIVE: 0, ACTIVE: 0}
        self._seq = 0

    def track(self, entry: VmaEntry) -> None:
        """A new VMA: its present pages on this node go to the inactive list, in order."""
        n = entry.nr_units
        self.vmas[entry.vid] = _VmaLru(entry.per_unit, np.full(n, -1, np.int64),
                                       np.zeros(n, np.int8), np.zeros(n, np.bool_))
        if entry.movable:
            units = np.flatnonzero(entry.unit_nid(np.arange(n, dtype=np.int64)) == self.nid)
            self.add(keys_of(entry.vid, units), INACTIVE)

    def forget(self, entry: VmaEntry) -> None:
        st = self.vmas.pop(entry.vid, None)
        if st is not None:
            for lst in (INACTIVE, ACTIVE):
                self.nr_pages[lst] -= int(np.count_nonzero(st.lru == lst)) * st.per_unit

    def _by_vma(self, keys: I64Array) -> list[tuple[_VmaLru, npt.NDArray[np.bool_], I64Array]]:
        vids, units = split_keys(keys)
        if not keys.size:
            return []
        first = int(vids[0])
        if bool((vids == first).all()):  # the common case: one VMA
            st = self.vmas.get(first)
            return [] if st is None else [(st, np.ones(keys.shape[0], dtype=np.bool_), units)]
        out = []
        for vid in np.unique(vids).tolist():
            st = self.vmas.get(vid)
            if st is not None:
                where = vids == vid
                out.append((st, where, units[where]))
        return out

    def add(self, keys: I64Array, lst: int) -> None:
        """Put folios (off the lists) at the head of a list."""
        if not keys.size:
            return
        seqs = self._seq + np.arange(keys.shape[0], dtype=np.int64)
        self._seq += keys.shape[0]
        for st, where, units in self._by_vma(keys):
            st.seq[units], st.lru[units] = seqs[where], lst
            self.nr_pages[lst] += units.shape[0] * st.per_unit
        self.queues[lst].push(keys, seqs)

    def remove(self, keys: I64Array) -> None:
        """Take folios off whatever list holds them (they left the node)."""
        for st, _, units in self._by_vma(keys):
            on = st.lru[units] > 0
            for lst in (INACTIVE, ACTIVE):
                self.nr_pages[lst] -= int(np.count_nonzero(st.lru[units] == lst)) * st.per_unit
            st.seq[units[on]], st.lru[units[on]] = -1, 0

    def referenced(self, keys: I64Array) -> npt.NDArray[np.bool_]:
        out = np.zeros(keys.shape[0], dtype=np.bool_)
        for st, where, units in self._by_vma(keys):
            out[where] = st.referenced[units]
        return out

    def set_referenced(self, keys: I64Array, value: bool) -> None:
        for st, _, units in self._by_vma(keys):
            st.referenced[units] = value

    def pages(self, keys: I64Array) -> I64Array:
        out = np.zeros(keys.shape[0], dtype=np.int64)
        for st, where, _ in self._by_vma(keys):
            out[where] = st.per_unit
        return out

    def _valid(self, keys: I64Array, seqs: I64Array, lst: int) -> I64Array:
        """Pages of each entry still on lst (0: stale)."""
        out = np.zeros(keys.shape[0], dtype=np.int64)
        for st, where, units in self._by_vma(keys):
            ok = (st.seq[units] == seqs[where]) & (st.lru[units] == lst)
            out[np.flatnonzero(where)[ok]] = st.per_unit
        return out

    def isolate_tail(self, lst: int, nr_pages: int) -> I64Array:
        """isolate_lru_folios(): folios off the tail until nr_pages pages are taken."""
        queue, taken, got = self.queues[lst], [], 0
        while got < nr_pages and len(queue):
            keys, seqs = queue.peek(max(SWAP_CLUSTER_MAX, nr_pages - got))
            pages = self._valid(keys, seqs, lst)
            cum = np.cumsum(pages)
            cut = int(np.searchsorted(cum, nr_pages - got, side="left"))
            n = min(cut + 1, keys.shape[0])
            taken.append(keys[:n][pages[:n] > 0].copy())
            got += int(cum[n - 1])
            queue.lo += n
        out = np.concatenate(taken) if taken else np.zeros(0, dtype=np.int64)
        self.remove(out)
        return out

    def inactive_is_low(self) -> bool:
        inactive, active = self.nr_pages[INACTIVE], self.nr_pages[ACTIVE]
        gb = (inactive + active) >> (30 - PAGE_SHIFT)
        ratio = math.isqrt(10 * gb) if gb else 1
        return inactive * ratio < active


@dataclass(frozen=True, slots=True)
class Watermarks:
    """A node's zone watermarks in pages (see numab_gate's fractions)."""

    min_pages: int
    low_pages: int
    high_pages: int
    promo_pages: int

    @staticmethod
    def of(capacity_pages: int) -> Watermarks:
        return Watermarks(*(int(capacity_pages * f) for f in (
            WMARK_MIN_FRACTION, WMARK_LOW_FRACTION, WMARK_HIGH_FRACTION, WMARK_PROMO_FRACTION)))


class Kswapd:
    """kswapd of one top-tier node, reclaiming its LRU by demotion to demote_nid."""

    def __init__(self, machine: SimMachine, index: FolioIndex, lru: NodeLru,
                 demote_nid: int | None, stats: Stats, tiering: bool = True) -> None:
        self.machine = machine
        self.index = index
        self.lru = lru
        self.nid = lru.nid
        self.demote_nid = demote_nid
        self.stats = stats
        self.wmark = Watermarks.of(int(machine.view.capacity_pages[self.nid]))
        self.balance_pages = self.wmark.promo_pages if tiering else self.wmark.high_pages
        self.failures = 0
        self.woken = False

    def free_pages(self) -> int:
        return self.machine.view.free_pages(self.nid)

    def balanced(self) -> bool:
        """pgdat_balanced(): free pages above the (promotion) watermark."""
        return self.free_pages() > self.balance_pages

    def wakeup(self, reason: str) -> None:
        """wakeup_kswapd() for reason (a WakeReason): wakes it unless the node is balanced or
        kswapd gave up."""
        if self.balanced():
            return
        if self.failures >= MAX_RECLAIM_RETRIES:
            self.stats.add(None, KswapdCounter.WAKE_HOPELESS)
            return
        if not self.woken:
            self.stats.add(None, BaselineFamily.KSWAPD_WAKE, reason=reason)
        self.woken = True

    def run(self) -> int:
        """If woken: balance_pgdat(). Returns the pages reclaimed (demoted)."""
        if not self.woken:
            return 0
        self.woken = False
        self.stats.add(None, KswapdCounter.RUNS)
        priority, total = DEF_PRIORITY, 0
        while priority >= 1 and not self.balanced():
            nr_to_reclaim = max(self.wmark.high_pages, SWAP_CLUSTER_MAX)
            reclaimed, scanned = self.shrink_node(priority, nr_to_reclaim)
            total += reclaimed
            if scanned < nr_to_reclaim or not reclaimed:
                priority -= 1
        if total:
            self.failures = 0
        else:
            self.failures += 1
            self.stats.add(None, KswapdCounter.FAILURES)
        return total

    def shrink_node(self, priority: int, nr_to_reclaim: int) -> tuple[int, int]:
        """One shrink_lruvec() round: (pages reclaimed, inactive pages scanned)."""
        lru = self.lru
        nr_inactive = lru.nr_pages[INACTIVE] >> priority
        nr_active = lru.nr_pages[ACTIVE] >> priority
        may_deactivate = lru.inactive_is_low()
        reclaimed = scanned = 0
        while nr_inactive > 0:
            passes = max(1, -(-(nr_to_reclaim - reclaimed) // SWAP_CLUSTER_MAX))
            batch = min(nr_inactive, passes * SWAP_CLUSTER_MAX)
            nr_inactive -= batch
            keys = lru.isolate_tail(INACTIVE, batch)
            if not keys.size:
                break
            scanned += int(lru.pages(keys).sum())
            reclaimed += self.shrink_folio_list(keys)
            if may_deactivate and nr_active > 0:
                n = min(nr_active, -(-batch // SWAP_CLUSTER_MAX) * SWAP_CLUSTER_MAX)
                nr_active -= n
                self.shrink_active_list(n)
            if reclaimed >= nr_to_reclaim:
                break
        if lru.inactive_is_low():
            self.shrink_active_list(SWAP_CLUSTER_MAX)
        self.stats.add(None, Vmstat.PGSCAN_KSWAPD, scanned)
        return reclaimed, scanned

    def shrink_folio_list(self, keys: I64Array) -> int:
        """Isolated inactive folios: activate, keep, or demote. Returns pages demoted."""
        lru = self.lru
        young = self.index.young(keys)
        self.stats.add(None, KswapdCounter.PTES_CHECKED, int(keys.shape[0]))
        referenced = lru.referenced(keys)
        lru.set_referenced(keys[young], True)
        lru.set_referenced(keys[~young], False)
        lru.add(keys[young & ~referenced], INACTIVE)  # FOLIOREF_KEEP: another trip
        lru.add(keys[young & referenced], ACTIVE)  # FOLIOREF_ACTIVATE
        self.stats.add(None, Vmstat.PGACTIVATE, int(np.count_nonzero(young & referenced)))
        candidates = keys[~young]
        if not candidates.size:
            return 0
        if self.demote_nid is None:
            lru.add(candidates, ACTIVE)  # nowhere to demote, no swap: activate_locked
            self.stats.add(None, KswapdCounter.NO_DEMOTION_TARGET, int(candidates.shape[0]))
            return 0
        pages = self.index.pages_of(candidates)
        moved = self.index.move(candidates, self.demote_nid)
        lru.add(candidates[~moved], ACTIVE)
        nr_demoted = int(pages[moved].sum())
        self.stats.add(None, Vmstat.PGDEMOTE_KSWAPD, nr_demoted)
        self.stats.add(None, KswapdCounter.DEMOTE_FAIL, int(pages[~moved].sum()))
        return nr_demoted

    def shrink_active_list(self, nr_pages: int) -> None:
        """Active-tail folios: Accessed bits cleared, all to the inactive head."""
        keys = self.lru.isolate_tail(ACTIVE, nr_pages)
        if not keys.size:
            return
        self.index.young(keys)
        self.stats.add(None, KswapdCounter.PTES_CHECKED, int(keys.shape[0]))
        self.lru.add(keys, INACTIVE)
        self.stats.add(None, Vmstat.PGDEACTIVATE, int(self.lru.pages(keys).sum()))


def next_demotion_node(machine: SimMachine, nid: int) -> int | None:
    """mm/memory-tiers.c next_demotion_node(): a node of the next slower tier.

    Tiers are ordered by abstract distance (the scenario's tier); among the nodes
    of the nearest slower tier the lowest nid is taken (the kernel picks at random
    among the nearest by NUMA distance, which the simulator does not have)."""
    nodes = {n.nid: n for n in machine.topology().nodes}
    here = nodes[nid].tier
    lower = sorted((n.tier, n.nid) for n in nodes.values() if not n.top_tier and n.tier > here)
    return lower[0][1] if lower else None
