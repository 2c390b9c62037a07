"""The re-probe queue: accessed folios to test again shortly after their scan.

A scan clears each folio's Accessed bit; a folio found accessed is tested
once more reprobe_delay_ms later (kscand.core.hotness: the short look that ranks
pages touched in every scan). Entries wait here, in due order, bounded by a
folio cap: what does not fit is judged on its scan alone (counted).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import I64Array, PageBatch, ProcessId


@dataclass(frozen=True, slots=True)
class Reprobe:
    """Folios of one scanned range to test again at due_ns."""

    due_ns: int
    proc: ProcessId
    chunk_base: int
    offsets: npt.NDArray[np.intp]  # index of each folio in its history chunk
    folios: PageBatch
    nr_pages: I64Array | None  # None: all base pages
    queued: npt.NDArray[np.bool_]  # already queued for promotion on the scan's evidence
    delay_s: float = 0.0  # the re-probe delay it was queued with

    def __len__(self) -> int:
        return len(self.folios)


class ReprobeQueue:
    """Re-probes in due order (one delay for all: first in, first due), under one cap."""

    def __init__(self, queue_max: int) -> None:
        self.queue_max = queue_max
        self._queue: deque[Reprobe] = deque()
        self.nr_queued = 0  # folios

    def add(self, entry: Reprobe) -> bool:
        """Queue entry; False (nothing queued) when it would pass the cap."""
        if self.nr_queued + len(entry) > self.queue_max:
            return False
        self._queue.append(entry)
        self.nr_queued += len(entry)
        return True

    def due(self, now_ns: int) -> list[Reprobe]:
        """Remove and return the entries due at now_ns."""
        out = []
        while self._queue and self._queue[0].due_ns <= now_ns:
            entry = self._queue.popleft()
            self.nr_queued -= len(entry)
            out.append(entry)
        return out

    def next_due_ns(self) -> int | None:
        return self._queue[0].due_ns if self._queue else None

    def drop(self, proc: ProcessId) -> int:
        """Drop proc's entries (it exited); returns the folios dropped."""
        kept = deque(e for e in self._queue if e.proc != proc)
        dropped = self.nr_queued - sum(len(e) for e in kept)
        self._queue = kept
        self.nr_queued -= dropped
        return dropped
