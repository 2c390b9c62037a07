"""The migrator (kmigrated in the series): bounded per-process queues of candidates.

The scanner adds hot slow-tier folios; the migrator revalidates each one
right before moving it (same process, still present, same pfn, still on a
slow-tier node), picks the target node, checks it for room and moves the
folios in batches. Every drop and every failed move is counted by reason.
"""

from __future__ import annotations

import errno
from collections import deque
from dataclasses import dataclass

import numpy as np

from kscand.errors import ProcessGone
from kscand.machine import (
    BoolArray,
    I32Array,
    I64Array,
    Machine,
    NodeInfo,
    PageBatch,
    ProcessId,
    Topology,
    U64Array,
)
from kscand.stats import MigrateDrop, Stats
from kscand.tunables import Tunables


@dataclass(frozen=True, slots=True)
class Candidates:
    """Queued folios of one process: arrays of shape (n,)."""

    vaddr: U64Array
    pfn: U64Array
    nr_pages: I64Array

    def __len__(self) -> int:
        return int(self.vaddr.shape[0])

    def select(self, mask: BoolArray) -> Candidates:
        return Candidates(self.vaddr[mask], self.pfn[mask], self.nr_pages[mask])

    @staticmethod
    def concat(parts: list[Candidates]) -> Candidates:
        """One sorted, de-duplicated batch from several queued parts."""
        vaddr = np.concatenate([p.vaddr for p in parts])
        vaddr_sorted, first = np.unique(vaddr, return_index=True)
        return Candidates(
            vaddr_sorted,
            np.concatenate([p.pfn for p in parts])[first],
            np.concatenate([p.nr_pages for p in parts])[first],
        )


def move_fail_counter(status: int) -> str:
    """Counter name of a negative move_pages(2) status: move_fail_enomem, ..."""
    name = errno.errorcode.get(-status, "unknown")
    return f"move_fail_{name.lower()}"


def room_pages(node: NodeInfo, free_min_pct: float) -> int:
    """Base pages that may still be promoted to node without passing its watermark."""
    reserve = int(np.ceil(node.capacity_pages * free_min_pct / 100.0))
    return max(0, node.free_pages - reserve)


def fit_in_room(nr_pages: I64Array, room: int) -> BoolArray:
    """Which folios, taken in order, fit into room base pages. int64 (n,) -> bool (n,)."""
    return np.cumsum(nr_pages) <= room


def default_target(topology: Topology, tunables: Tunables) -> int | None:
    """The target node: the target_node tunable, else the first top-tier node.

    None when the tunable names a node that is absent or not top tier, or
    there is no top tier: promotion would be wrong, so nothing moves.
    """
    top = topology.top_tier_nids
    if tunables.target_node >= 0:
        return tunables.target_node if tunables.target_node in top else None
    return top[0] if top else None


class Migrator:
    """Bounded per-process candidate queues and the batched, revalidated moves."""

    def __init__(self, machine: Machine, stats: Stats, queue_max: int) -> None:
        self.machine = machine
        self.stats = stats
        self.queue_max = queue_max
        self._queues: dict[ProcessId, deque[Candidates]] = {}
        self.nr_queued = 0  # folios over all queues, <= queue_max

    def queued(self, proc: ProcessId) -> int:
        return sum(len(part) for part in self._queues.get(proc, ()))

    def add(self, proc: ProcessId, folios: PageBatch, nr_pages: I64Array) -> int:
        """Queue candidate folios of proc; what exceeds queue_max is counted and dropped."""
        room = max(0, self.queue_max - self.nr_queued)
        take = min(room, len(folios))
        if take < len(folios):
            self.stats.add(proc, MigrateDrop.QUEUE_FULL.value, int(nr_pages[take:].sum()))
        if not take:
            return 0
        part = Candidates(folios.vaddr[:take].copy(), folios.pfn[:take].copy(), nr_pages[:take])
        self._queues.setdefault(proc, deque()).append(part)
        self.nr_queued += take
        self.stats.add(proc, "nr_kscand_migadded", int(nr_pages[:take].sum()))
        return take

    def drop(self, proc: ProcessId, reason: MigrateDrop = MigrateDrop.PROC_GONE) -> int:
        """Drop every queued folio of proc (it exited); returns the folios dropped."""
        parts = self._queues.pop(proc, None)
        if not parts:
            return 0
        nr_folios = sum(len(p) for p in parts)
        self.nr_queued -= nr_folios
        self.stats.add(proc, reason.value, int(sum(int(p.nr_pages.sum()) for p in parts)))
        return nr_folios

    def _take(self, proc: ProcessId) -> Candidates | None:
        parts = self._queues.pop(proc, None)
        if not parts:
            return None
        self.nr_queued -= sum(len(p) for p in parts)
        return Candidates.concat(list(parts))

    def migrate(self, topology: Topology, tunables: Tunables) -> int:
        """Drain every queue: revalidate, check room, move. Returns base pages promoted."""
        promoted = 0
        for proc in list(self._queues):
            cands = self._take(proc)
            if cands is None:
                continue
            target = default_target(topology, tunables)
            if target is None:
                self.stats.add(proc, MigrateDrop.NO_TARGET.value, int(cands.nr_pages.sum()))
                continue
            promoted += self._migrate_proc(proc, cands, target, topology, tunables)
            topology = self.machine.topology()
        return promoted

    def _migrate_proc(
        self,
        proc: ProcessId,
        cands: Candidates,
        target: int,
        topology: Topology,
        tunables: Tunables,
    ) -> int:
        try:
            if not self.machine.is_alive(proc):
                raise ProcessGone(str(proc))
            cands = self._revalidate(proc, cands, topology)
            cands = self._check_room(proc, cands, topology.node(target), tunables)
            return self._move(proc, cands, target, tunables.migrate_batch_folios)
        except ProcessGone:
            self.stats.add(proc, MigrateDrop.PROC_GONE.value, int(cands.nr_pages.sum()))
            return 0

    def _revalidate(self, proc: ProcessId, cands: Candidates, topology: Topology) -> Candidates:
        """Keep candidates still present, with the same pfn, on a slow-tier node."""
        now = self.machine.read_pages(proc, cands.vaddr)
        present = now.nid >= 0
        same = present & (now.pfn == cands.pfn)
        slow = same & ~topology.toptier_table()[now.nid + 1]
        self._count(proc, MigrateDrop.PAGE_GONE, cands.nr_pages, ~present)
        self._count(proc, MigrateDrop.PAGE_CHANGED, cands.nr_pages, present & ~same)
        self._count(proc, MigrateDrop.ALREADY_TOPTIER, cands.nr_pages, same & ~slow)
        return cands.select(slow)

    def _check_room(
        self, proc: ProcessId, cands: Candidates, node: NodeInfo, tunables: Tunables
    ) -> Candidates:
        fits = fit_in_room(cands.nr_pages, room_pages(node, tunables.target_free_min_pct))
        self._count(proc, MigrateDrop.TARGET_FULL, cands.nr_pages, ~fits)
        return cands.select(fits)

    def _move(self, proc: ProcessId, cands: Candidates, target: int, batch_folios: int) -> int:
        promoted = 0
        for lo in range(0, len(cands), batch_folios):
            vaddr = cands.vaddr[lo : lo + batch_folios]
            nr_pages = cands.nr_pages[lo : lo + batch_folios]
            try:
                status = self.machine.move_pages(proc, vaddr, target)
            except ProcessGone:
                self.stats.add(
                    proc, MigrateDrop.PROC_GONE.value, int(cands.nr_pages[lo:].sum())
                )
                return promoted
            promoted += self._account_moves(proc, status, nr_pages, target)
        return promoted

    def _account_moves(
        self, proc: ProcessId, status: I32Array, nr_pages: I64Array, target: int
    ) -> int:
        moved = status == target
        moved_pages = int(nr_pages[moved].sum())
        self.stats.add(proc, "nr_kscand_migrated", moved_pages)
        self.stats.add(proc, f"promoted_pages_node{target}", moved_pages)
        failed = status < 0
        if failed.any():
            self.stats.add(proc, "nr_kscand_migrate_failed", int(nr_pages[failed].sum()))
            codes, inverse = np.unique(status[failed], return_inverse=True)
            pages_per_code = np.bincount(inverse, weights=nr_pages[failed])
            for code, pages in zip(codes, pages_per_code, strict=True):
                self.stats.add(proc, move_fail_counter(int(code)), int(pages))
        # A status >= 0 other than target: the kernel left the page on another node.
        self.stats.add(proc, "move_fail_stayed", int(nr_pages[~moved & ~failed].sum()))
        return moved_pages

    def _count(
        self, proc: ProcessId, reason: MigrateDrop, nr_pages: I64Array, mask: BoolArray
    ) -> None:
        self.stats.add(proc, reason.value, int(nr_pages[mask].sum()))
