"""Candidate folios and their bounded per-process queues (promotion and demotion).

A Candidates batch is what the scanner found in one visit: each folio's head
vaddr, pfn, size and heat bin. A CandidateQueue holds them per process under
one cap (overflow is counted, never an unbounded list), with the time each
process's entries were queued, so that stale ones expire by a named reason.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core.counters import CounterKey
from kscand.core.stats import MigrateDrop, Stats
from kscand.machine import BoolArray, I64Array, PageBatch, ProcessId, U64Array

U8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True, slots=True)
class Candidates:
    """Queued folios of one process: arrays of shape (n,).

    heat is the folio's heat bin when it was queued (kscand.core.hotness; 0 in the
    series' mode, where every hot folio is equal).
    """

    vaddr: U64Array
    pfn: U64Array
    nr_pages: I64Array
    heat: U8Array

    def __len__(self) -> int:
        return int(self.vaddr.shape[0])

    def select(self, mask: BoolArray | npt.NDArray[np.intp]) -> Candidates:
        return Candidates(self.vaddr[mask], self.pfn[mask], self.nr_pages[mask], self.heat[mask])

    def hottest_first(self) -> Candidates:
        """The same folios, hottest first (stable: by address within a bin)."""
        return self.select(np.argsort(-self.heat.astype(np.int16), kind="stable"))

    @staticmethod
    def concat(parts: list[Candidates]) -> Candidates:
        """One sorted, de-duplicated batch from several queued parts (the newest part wins)."""
        vaddr = np.concatenate([p.vaddr for p in reversed(parts)])
        vaddr_sorted, first = np.unique(vaddr, return_index=True)
        return Candidates(
            vaddr_sorted,
            np.concatenate([p.pfn for p in reversed(parts)])[first],
            np.concatenate([p.nr_pages for p in reversed(parts)])[first],
            np.concatenate([p.heat for p in reversed(parts)])[first],
        )


def empty_candidates() -> Candidates:
    empty_u = np.zeros(0, dtype=np.uint64)
    return Candidates(empty_u, empty_u, np.zeros(0, np.int64), np.zeros(0, np.uint8))


class CandidateQueue:
    """Per-process queues of candidate folios under one cap (never an unbounded list)."""

    def __init__(
        self,
        stats: Stats,
        queue_max: int,
        added_counter: CounterKey,
        full_counter: CounterKey = MigrateDrop.QUEUE_FULL,
    ) -> None:
        self.stats = stats
        self.queue_max = queue_max
        self.added_counter = added_counter
        self.full_counter = full_counter
        self._queues: dict[ProcessId, deque[Candidates]] = {}
        self._queued_ns: dict[ProcessId, int] = {}  # when each process's oldest part was queued
        self.nr_queued = 0  # folios over all queues, <= queue_max

    def procs(self) -> list[ProcessId]:
        return list(self._queues)

    def queued(self, proc: ProcessId) -> int:
        return sum(len(part) for part in self._queues.get(proc, ()))

    def add(
        self,
        proc: ProcessId,
        folios: PageBatch,
        nr_pages: I64Array,
        heat: U8Array | None = None,
        now_ns: int = 0,
    ) -> int:
        """Queue candidate folios of proc; what exceeds queue_max is counted and dropped."""
        room = max(0, self.queue_max - self.nr_queued)
        take = min(room, len(folios))
        if take < len(folios):
            self.stats.add(proc, self.full_counter, int(nr_pages[take:].sum()))
        if not take:
            return 0
        heat_part = (
            heat[:take].copy() if heat is not None else np.zeros(take, dtype=np.uint8)
        )
        part = Candidates(
            folios.vaddr[:take].copy(), folios.pfn[:take].copy(), nr_pages[:take], heat_part
        )
        if proc not in self._queues:
            self._queued_ns[proc] = now_ns
        self._queues.setdefault(proc, deque()).append(part)
        self.nr_queued += take
        self.stats.add(proc, self.added_counter, int(nr_pages[:take].sum()))
        return take

    def drop(self, proc: ProcessId, reason: MigrateDrop = MigrateDrop.PROC_GONE) -> int:
        """Drop every queued folio of proc (it exited); returns the folios dropped."""
        parts = self._queues.pop(proc, None)
        self._queued_ns.pop(proc, None)
        if not parts:
            return 0
        nr_folios = sum(len(p) for p in parts)
        self.nr_queued -= nr_folios
        self.stats.add(proc, reason, int(sum(int(p.nr_pages.sum()) for p in parts)))
        return nr_folios

    def take(self, proc: ProcessId) -> Candidates | None:
        """Remove and return proc's queued folios, sorted by address, de-duplicated."""
        parts = self._queues.pop(proc, None)
        self._queued_ns.pop(proc, None)
        if not parts:
            return None
        self.nr_queued -= sum(len(p) for p in parts)
        return Candidates.concat(list(parts))

    def peek(self, proc: ProcessId) -> Candidates | None:
        """proc's queued folios (sorted, de-duplicated), left queued."""
        parts = self._queues.get(proc)
        if not parts:
            return None
        merged = Candidates.concat(list(parts))
        self.nr_queued -= sum(len(p) for p in parts) - len(merged)
        self._queues[proc] = deque([merged])
        return merged

    def requeue(self, proc: ProcessId, cands: Candidates, queued_ns: int) -> None:
        """Put back folios take() returned and nothing used (they were within the cap)."""
        if not len(cands):
            return
        self._queues.setdefault(proc, deque()).appendleft(cands)
        self._queued_ns[proc] = min(queued_ns, self._queued_ns.get(proc, queued_ns))
        self.nr_queued += len(cands)

    def queued_ns(self, proc: ProcessId) -> int:
        """When proc's oldest queued part was queued (0 when nothing is)."""
        return self._queued_ns.get(proc, 0)

    def expire(self, older_than_ns: int, reason: CounterKey) -> None:
        """Drop the queues whose oldest part was queued before older_than_ns (stale)."""
        for proc, queued_ns in list(self._queued_ns.items()):
            if queued_ns >= older_than_ns:
                continue
            parts = self._queues.pop(proc, None)
            del self._queued_ns[proc]
            if not parts:
                continue
            self.nr_queued -= sum(len(p) for p in parts)
            self.stats.add(proc, reason, int(sum(int(p.nr_pages.sum()) for p in parts)))
