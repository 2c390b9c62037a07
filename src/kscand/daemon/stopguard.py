"""The stop guard: the Machine as the engine sees it in the daemon (a Machine decorator).

Each range read or move batch first checks for a stop request, so a stop ends a
step at the next such boundary (kscand.daemon explains the bound); move batches
are timed into the move-batch histogram.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kscand.daemon.metrics import DurationHistogram
from kscand.machine import I32Array, Machine, MachineProxy, PageBatch, ProcessId, U64Array, Vma


class StepAbandoned(Exception):
    """Raised into the engine by StopGuard when a stop is requested mid-step."""


class StopGuard(MachineProxy):
    """The Machine as the engine sees it in the daemon: each range read or move batch
    first checks for a stop request (see kscand.daemon); move batches are timed."""

    def __init__(
        self,
        machine: Machine,
        stopping: Callable[[], bool],
        move_batch: DurationHistogram | None = None,
    ) -> None:
        super().__init__(machine)
        self._stopping = stopping
        self._move_batch = move_batch

    def _check(self) -> None:
        if self._stopping():
            raise StepAbandoned

    def vmas(self, proc: ProcessId) -> list[Vma]:
        self._check()
        return self.inner.vmas(proc)

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        self._check()
        return self.inner.read_range(proc, start, end)

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        self._check()
        return self.inner.read_pages(proc, vaddrs)

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        self._check()
        start_ns = time.monotonic_ns()
        try:
            return self.inner.move_pages(proc, vaddrs, nid)
        finally:
            if self._move_batch is not None:
                self._move_batch.observe_ns(time.monotonic_ns() - start_ns)
