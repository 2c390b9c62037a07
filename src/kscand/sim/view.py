"""A read-only view of a SimMachine, for what measures it from outside: the metrics
(kscand.sim.metrics) and the baselines (kscand.evaluation).

The Machine interface is what a policy may do on any machine; this view is what
only a simulator can show: node capacities and use, which nodes are top tier and
their latencies, the running processes with their page tables, and the history
of the moves made. Its arrays are read-only views of the machine's own (they
follow it), its process map a read-only mapping: nothing reads or writes the
machine's internals around it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from kscand.machine import ProcessId
    from kscand.sim.machine import SimMachine
    from kscand.sim.process import MoveHistory, SimProcess


_Array = TypeVar("_Array", bound=np.ndarray[Any, Any])


def _read_only(array: _Array) -> _Array:
    view = array.view()
    view.flags.writeable = False
    return view


class SimView:
    """What the metrics and the baselines read of a SimMachine (never write)."""

    __slots__ = ("_machine",)

    def __init__(self, machine: SimMachine) -> None:
        self._machine = machine

    # --- nodes, indexed by nid ------------------------------------------------------------

    @property
    def nids(self) -> npt.NDArray[np.int32]:
        """The nodes' ids, ascending."""
        return _read_only(self._machine.nids)

    @property
    def capacity_pages(self) -> npt.NDArray[np.int64]:
        """Pages each node holds, by nid."""
        return _read_only(self._machine.capacity_pages)

    @property
    def used_pages(self) -> npt.NDArray[np.int64]:
        """Pages in use on each node, by nid."""
        return _read_only(self._machine.used_pages)

    @property
    def latency_ns(self) -> npt.NDArray[np.float64]:
        """Access latency of each node, by nid."""
        return _read_only(self._machine.latency_ns)

    @property
    def toptier(self) -> npt.NDArray[np.bool_]:
        """Whether a node is top tier, indexed by nid + 1 (index 0: not present, False)."""
        return _read_only(self._machine.toptier)

    @property
    def top_nids(self) -> tuple[int, ...]:
        return self._machine.top_nids

    @property
    def slow_nids(self) -> tuple[int, ...]:
        return self._machine.slow_nids

    def free_pages(self, nid: int) -> int:
        """Pages free on node nid (capacity - used, the reserve not taken off)."""
        return int(self._machine.capacity_pages[nid] - self._machine.used_pages[nid])

    def top_capacity_pages(self) -> int:
        """Pages the top-tier nodes hold together."""
        capacity = self._machine.capacity_pages
        return int(sum(capacity[nid] for nid in self._machine.top_nids))

    # --- processes and moves --------------------------------------------------------------

    @property
    def procs(self) -> Mapping[int, SimProcess]:
        """The running processes by pid, as of the machine's last advance of time."""
        return MappingProxyType(self._machine.procs)

    def alive(self) -> list[SimProcess]:
        """The running processes, in start order."""
        return self._machine.alive()

    @property
    def move_history(self) -> MoveHistory:
        """The moves made while the machine records them (SimMachine.record_moves)."""
        return self._machine.move_history

    def promoted_pages(self, proc: ProcessId | None = None) -> int:
        """Pages moved from a slow-tier to a top-tier node, by any policy (always counted):
        of proc, or of every process."""
        return self._machine.tier_moves.promoted(proc)

    def demoted_pages(self, proc: ProcessId | None = None) -> int:
        """Pages moved from a top-tier to a slow-tier node (as promoted_pages)."""
        return self._machine.tier_moves.demoted(proc)
