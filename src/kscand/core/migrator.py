"""The migrator (kmigrated in the series): bounded per-process queues of candidates.

The scanner adds hot slow-tier folios; the migrator revalidates each one
right before moving it (same process, still present, same pfn, still on a
slow-tier node), picks the target node, checks it for room and moves the
folios in batches. Every drop and every failed move is counted by reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core.candidates import CandidateQueue, Candidates, U8Array
from kscand.core.counters import EngineFamily, Labelled, Series, errno_reason
from kscand.core.room import FreeRoom, fit_in_room, room_pages, target_order
from kscand.core.stats import MigrateDrop, Stats
from kscand.core.tunables import Tunables
from kscand.errors import AccessDenied, ProcessGone
from kscand.machine import (
    PAGE_SIZE,
    PMD_SIZE,
    BoolArray,
    Clock,
    I32Array,
    I64Array,
    Machine,
    PageBatch,
    ProcessId,
    Topology,
)


def move_fail_counter(status: int, family: EngineFamily = EngineFamily.MOVE_FAILED) -> Labelled:
    """The counter of a negative move_pages(2) status: move_fail_enomem, ..."""
    return family.key(reason=errno_reason(status))


@dataclass(frozen=True, slots=True)
class MigrateResult:
    """What one process's migration did (the series' scan_mm_migrate trace event)."""

    proc: ProcessId
    target_nid: int | None  # the first node tried
    succeeded: int  # base pages promoted
    failed: int  # base pages whose move failed
    moved: Candidates | None = None  # the folios that moved, with their heat


def merge_results(results: list[MigrateResult]) -> MigrateResult:
    """One process's results of several rounds as one."""
    first = results[0]
    if len(results) == 1:
        return first
    moved = [r.moved for r in results if r.moved is not None]
    return MigrateResult(
        first.proc, first.target_nid, sum(r.succeeded for r in results),
        sum(r.failed for r in results), Candidates.concat(moved) if moved else None,
    )


def heat_cutoff(heat: U8Array, nr_pages: I64Array, room: int) -> int:
    """The lowest heat bin whose folios, hottest first, still fit room (whole bins)."""
    if not heat.size:
        return 0
    pages = np.bincount(heat, weights=nr_pages, minlength=256)[::-1]
    fits = np.cumsum(pages) <= room  # index i: bins >= 255 - i fit together
    if not fits.any():
        return 255
    return 255 - int(np.flatnonzero(fits)[-1])


class RateLimiter:
    """A token bucket over promoted bytes: rate_mbps sustained, bursts of BURST_S.

    Over any window of W seconds it lets through at most rate x (W + BURST_S)
    (and at least one whole THP of burst, so a huge page is never stuck).
    """

    BURST_S = 0.1

    def __init__(self, clock: Clock, rate_mbps: int) -> None:
        self.clock = clock
        self.rate_mbps = rate_mbps
        self.tokens_bytes = self.depth_bytes
        self._last_ns = clock.now_ns()

    @property
    def depth_bytes(self) -> float:
        return max(self.rate_mbps * 1e6 * self.BURST_S, float(PMD_SIZE))

    def allow(self, nr_pages: I64Array) -> BoolArray:
        """The folios, taken in order, the bucket lets through now; their bytes are spent."""
        now = self.clock.now_ns()
        self.tokens_bytes = min(
            self.depth_bytes, self.tokens_bytes + (now - self._last_ns) * self.rate_mbps * 1e-3
        )
        self._last_ns = now
        nbytes = nr_pages * PAGE_SIZE
        ok = np.cumsum(nbytes) <= self.tokens_bytes
        self.tokens_bytes -= float(nbytes[ok].sum())
        return ok


class Migrator:
    """Bounded per-process candidate queues and the batched, revalidated moves."""

    def __init__(self, machine: Machine, stats: Stats, queue_max: int, rate_mbps: int) -> None:
        self.machine = machine
        self.stats = stats
        self.limiter = RateLimiter(machine.clock, rate_mbps)
        self.queue = CandidateQueue(stats, queue_max, Series.MIGADDED)

    @property
    def queue_max(self) -> int:
        return self.queue.queue_max

    @queue_max.setter
    def queue_max(self, value: int) -> None:
        self.queue.queue_max = value

    @property
    def nr_queued(self) -> int:
        return self.queue.nr_queued

    def queued(self, proc: ProcessId) -> int:
        return self.queue.queued(proc)

    def add(
        self,
        proc: ProcessId,
        folios: PageBatch,
        nr_pages: I64Array,
        heat: U8Array | None = None,
        now_ns: int = 0,
    ) -> int:
        """Queue promotion candidates (bounded; overflow counted as drop_queue_full)."""
        return self.queue.add(proc, folios, nr_pages, heat, now_ns)

    def drop(self, proc: ProcessId, reason: MigrateDrop = MigrateDrop.PROC_GONE) -> int:
        return self.queue.drop(proc, reason)

    def migrate(
        self,
        topology: Topology,
        tunables: Tunables,
        preferred: Callable[[ProcessId], int | None] = lambda proc: None,
        room: FreeRoom | None = None,
    ) -> list[MigrateResult]:
        """Drain every queue: revalidate, pick targets with room, rate-limit, move.

        Hottest first: when the candidates for a node do not all fit its room,
        the coldest heat bins are dropped (drop_target_full) before any move,
        whichever process they belong to. room: the free pages kept across the
        moves (one from topology when None); each process's moves update it.
        """
        room = room if room is not None else FreeRoom(topology)
        self.limiter.rate_mbps = tunables.promote_rate_limit_mbps
        taken: dict[ProcessId, Candidates] = {}
        orders: dict[ProcessId, list[int]] = {}
        for proc in self.queue.procs():
            cands = self.queue.take(proc)
            if cands is None:
                continue
            order = target_order(preferred(proc), topology, tunables)
            if not order:
                self.stats.add(proc, MigrateDrop.NO_TARGET, int(cands.nr_pages.sum()))
                continue
            taken[proc] = cands.hottest_first()
            orders[proc] = order
        cutoffs = self._cutoffs(taken, orders, topology, tunables)
        # Two rounds: the whole bins that fit, then the bin that fits only in part, so
        # that one process's partial bin never takes the room of another's hotter pages.
        rounds: list[list[tuple[ProcessId, Candidates]]] = [[], []]
        for proc, cands in taken.items():
            cutoff = cutoffs.get(orders[proc][0], 0)
            if cutoff:
                keep = cands.heat >= cutoff
                self._count(proc, MigrateDrop.TARGET_FULL, cands.nr_pages, ~keep)
                cands = cands.select(keep)
                partial = cands.heat == cutoff
                rounds[1].append((proc, cands.select(partial)))
                cands = cands.select(~partial)
            rounds[0].append((proc, cands))
        done: dict[ProcessId, list[MigrateResult]] = {}
        for part in rounds:
            for proc, cands in part:
                if not len(cands) and proc in done:
                    continue
                result = self._migrate_proc(proc, cands, orders[proc], room, tunables)
                done.setdefault(proc, []).append(result)
        return [merge_results(results) for results in done.values()]

    def _cutoffs(
        self,
        taken: dict[ProcessId, Candidates],
        orders: dict[ProcessId, list[int]],
        topology: Topology,
        tunables: Tunables,
    ) -> dict[int, int]:
        """Per first-choice node, the lowest heat bin worth trying (0: all fit)."""
        by_node: dict[int, list[Candidates]] = {}
        for proc, cands in taken.items():
            by_node.setdefault(orders[proc][0], []).append(cands)
        cutoffs = {}
        for nid, parts in by_node.items():
            heat = np.concatenate([p.heat for p in parts])
            nr_pages = np.concatenate([p.nr_pages for p in parts])
            room = sum(
                room_pages(topology.node(other), tunables.target_free_min_pct)
                for other in {nid, *topology.top_tier_nids}
                if tunables.target_node < 0 or other == nid
            )
            if int(nr_pages.sum()) <= room:
                continue
            # Whole bins at or above the cutoff fit; the bin under it fills what is left.
            cutoffs[nid] = max(0, heat_cutoff(heat, nr_pages, room) - 1)
        return cutoffs

    def _migrate_proc(
        self,
        proc: ProcessId,
        cands: Candidates,
        order: list[int],
        room: FreeRoom,
        tunables: Tunables,
    ) -> MigrateResult:
        succeeded = failed = 0
        moved: list[Candidates] = []
        try:
            if not self.machine.is_alive(proc):
                raise ProcessGone(str(proc))
            topology = room.topology()
            cands, src_nid = self._revalidate(proc, cands, topology)
            src_vaddr = cands.vaddr
            cands = cands.hottest_first()
            for nid, part in self._assign_targets(proc, cands, order, topology, tunables):
                part = part.select(self._rate_limit(proc, part))
                ok, lost = self._move(proc, part, nid, tunables.migrate_batch_folios)
                room.moved(src_nid[np.searchsorted(src_vaddr, ok.vaddr)], ok.nr_pages, nid)
                succeeded += int(ok.nr_pages.sum())
                failed += lost
                moved.append(ok)
        except ProcessGone:
            self.stats.add(proc, MigrateDrop.PROC_GONE, int(cands.nr_pages.sum()))
        except AccessDenied:
            self.stats.add(proc, MigrateDrop.ACCESS_DENIED, int(cands.nr_pages.sum()))
        done = Candidates.concat(moved) if moved else None
        return MigrateResult(proc, order[0], succeeded, failed, done)

    def _assign_targets(
        self,
        proc: ProcessId,
        cands: Candidates,
        order: list[int],
        topology: Topology,
        tunables: Tunables,
    ) -> list[tuple[int, Candidates]]:
        """Split the candidates over the target nodes in order, each up to its room."""
        parts = []
        rest = cands
        for nid in order:
            if not len(rest):
                break
            room = room_pages(topology.node(nid), tunables.target_free_min_pct)
            fits = fit_in_room(rest.nr_pages, room)
            if fits.any():
                parts.append((nid, rest.select(fits)))
            rest = rest.select(~fits)
        self.stats.add(proc, MigrateDrop.TARGET_FULL, int(rest.nr_pages.sum()))
        return parts

    def _rate_limit(self, proc: ProcessId, cands: Candidates) -> BoolArray:
        ok = self.limiter.allow(cands.nr_pages)
        self._count(proc, MigrateDrop.RATE_LIMITED, cands.nr_pages, ~ok)
        return ok

    def _revalidate(
        self, proc: ProcessId, cands: Candidates, topology: Topology
    ) -> tuple[Candidates, npt.NDArray[np.int32]]:
        """Keep candidates still present, with the same pfn, on a slow-tier node.

        Returns them by address (the Machine reads ascending addresses only), and
        the node each is on.
        """
        cands = cands.select(np.argsort(cands.vaddr, kind="stable"))
        now = self.machine.read_pages(proc, cands.vaddr)
        present = now.nid >= 0
        same = present & (now.pfn == cands.pfn)
        slow = same & ~topology.toptier_table()[now.nid + 1]
        self._count(proc, MigrateDrop.PAGE_GONE, cands.nr_pages, ~present)
        self._count(proc, MigrateDrop.PAGE_CHANGED, cands.nr_pages, present & ~same)
        self._count(proc, MigrateDrop.ALREADY_TOPTIER, cands.nr_pages, same & ~slow)
        return cands.select(slow), now.nid[slow]

    def _move(
        self, proc: ProcessId, cands: Candidates, target: int, batch_folios: int
    ) -> tuple[Candidates, int]:
        """Move in batches (by address); returns (the folios promoted, pages failed)."""
        cands = cands.select(np.argsort(cands.vaddr, kind="stable"))
        moved = np.zeros(len(cands), dtype=np.bool_)
        failed = 0
        for lo in range(0, len(cands), batch_folios):
            vaddr = cands.vaddr[lo : lo + batch_folios]
            nr_pages = cands.nr_pages[lo : lo + batch_folios]
            try:
                status = self.machine.move_pages(proc, vaddr, target)
            except ProcessGone:
                self.stats.add(
                    proc, MigrateDrop.PROC_GONE, int(cands.nr_pages[lo:].sum())
                )
                break
            except AccessDenied:
                # EPERM for the whole call: count every page of the rest as failed, stop.
                lost = int(cands.nr_pages[lo:].sum())
                self.stats.add(proc, Series.MIGRATE_FAILED, lost)
                self.stats.add(proc, EngineFamily.MOVE_FAILED, lost, reason="eperm")
                failed += lost
                break
            moved[lo : lo + batch_folios] = status == target
            failed += self._account_moves(proc, status, nr_pages, target)[1]
        return cands.select(moved), failed

    def _account_moves(
        self, proc: ProcessId, status: I32Array, nr_pages: I64Array, target: int
    ) -> tuple[int, int]:
        moved = status == target
        moved_pages = int(nr_pages[moved].sum())
        self.stats.add(proc, Series.MIGRATED, moved_pages)
        self.stats.add(proc, EngineFamily.PROMOTED_PAGES_NODE, moved_pages, node=target)
        failed = status < 0
        failed_pages = int(nr_pages[failed].sum())
        if failed_pages:
            self.stats.add(proc, Series.MIGRATE_FAILED, failed_pages)
            codes, inverse = np.unique(status[failed], return_inverse=True)
            pages_per_code = np.bincount(inverse, weights=nr_pages[failed])
            for code, pages in zip(codes, pages_per_code, strict=True):
                self.stats.add(proc, move_fail_counter(int(code)), int(pages))
        # A status >= 0 other than target: the kernel left the page on another node.
        self.stats.add(proc, EngineFamily.MOVE_FAILED, int(nr_pages[~moved & ~failed].sum()),
                       reason="stayed")
        return moved_pages, failed_pages

    def _count(
        self, proc: ProcessId, reason: MigrateDrop, nr_pages: I64Array, mask: BoolArray
    ) -> None:
        self.stats.add(proc, reason, int(nr_pages[mask].sum()))
