"""When simulated processes exit: a heap by exit time, so advancing the clock costs
the processes whose time has come, not every process (kscand.sim.machine).

Exits due at the same advance come out in start order, the order a walk over the
machine's process map (insertion order) met them before this queue existed: the
same processes exit in the same order, the same pids are freed for reuse.
"""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kscand.sim.process import SimProcess


class ExitQueue:
    """Running processes with an exit time, by (exit time, start order).

    A process that left otherwise (SimMachine.kill) stays in the heap until its
    time comes and is dropped then: due() returns only processes still running.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, SimProcess]] = []
        self._nr_started = 0

    def __len__(self) -> int:
        return len(self._heap)

    def started(self, sim_proc: SimProcess) -> None:
        """Note a process that just started (in start order); one without exit_s never exits."""
        self._nr_started += 1
        if sim_proc.exit_s is not None:
            heapq.heappush(self._heap, (sim_proc.exit_s, self._nr_started, sim_proc))

    def due(self, now_s: float, running: dict[int, SimProcess]) -> list[SimProcess]:
        """Pop the processes of running whose exit time is <= now_s, in start order."""
        heap = self._heap
        if not heap or heap[0][0] > now_s:
            return []
        popped: list[tuple[int, SimProcess]] = []
        while heap and heap[0][0] <= now_s:
            _exit_s, order, sim_proc = heapq.heappop(heap)
            if running.get(sim_proc.proc.pid) is sim_proc:
                popped.append((order, sim_proc))
        popped.sort(key=lambda e: e[0])
        return [sim_proc for _order, sim_proc in popped]
