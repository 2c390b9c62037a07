"""The machine the daemon drives (Backend), and its factories: this Linux host (after the
feature probe) or a simulation.

Each factory returns a Backend: the machine plus what the daemon tells the operator
at start (which access source and why). Imports of the live and simulated backends
are local, so neither pays for the other. Nothing here imports the daemon.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kscand.config import Config
from kscand.core.engine import ScalePolicy
from kscand.core.tunables import Tunables
from kscand.errors import KscandError, Unsupported
from kscand.machine import Machine


def _no_counters() -> dict[str, int]:
    return {}


def _noop() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Backend:
    """The machine the daemon drives, and what to tell the operator about it."""

    machine: Machine
    kind: str  # "live", or "sim:<scenario>"
    access_source: str  # page_idle | damon | simulated
    access_source_reason: str  # one sentence: why this source
    close: Callable[[], None] = _noop
    # The access source's own counters (DAMON snapshots, pages it could not judge, ...).
    access_counters: Callable[[], dict[str, int]] = _no_counters
    # Simulated machines keep virtual time: told how long the daemon really slept.
    after_sleep: Callable[[int], None] | None = None
    # Tunables the machine comes with (a scenario's [tunables]), used without --config.
    tunables: Tunables | None = None
    # Scales the machine gives processes no [[process]] rule matches (a scenario's `scale`).
    scale_policy: ScalePolicy | None = None
    # What promote_young_scans = 0 means here: consecutive accessed scans the access source
    # needs before a page's evidence counts (kscand.live.damon.DAMON_YOUNG_SCANS for DAMON).
    source_young_scans: int = 1


def open_live_backend(config: Config, procfs: str = "/proc", sysfs: str = "/sys") -> Backend:
    """The LinuxMachine for config; Unsupported/AccessDenied with the probe's one-line reason."""
    from kscand import live

    topology = config.topology
    features = live.probe(
        procfs, sysfs, top_tier_nodes=topology.top_tier_nodes, slow_nodes=topology.slow_nodes
    )
    reason = features.blocking_reason()
    if reason is not None:
        raise Unsupported(reason)
    selection = live.ProcessSelection(
        pids=config.scan.pids,
        cgroups=config.scan.cgroups,
        comm_patterns=config.scan.comm_patterns,
    )
    machine = live.LinuxMachine(
        procfs,
        sysfs,
        selection=selection,
        access_source=config.scan.access_source,
        top_tier_nodes=topology.top_tier_nodes,
        slow_nodes=topology.slow_nodes,
        self_pid=os.getpid(),
    )
    if machine.access_source_name == "none":  # nothing can tell hot from cold here
        machine.close()
        raise Unsupported(machine.access_source_reason)
    try:
        machine.topology()  # every node's meminfo readable: say so now, not at every step
    except KscandError:
        machine.close()
        raise
    return Backend(
        machine=machine,
        kind="live",
        access_source=machine.access_source_name,
        access_source_reason=machine.access_source_reason,
        close=machine.close,
        access_counters=machine.access_counters,
        source_young_scans=live.DAMON_YOUNG_SCANS if machine.access_source_name == "damon" else 1,
    )


def open_sim_backend(scenario_path: Path) -> Backend:
    """A simulated machine running the scenario; its virtual clock follows the daemon's sleeps.

    The daemon sleeps in real time and then advances the simulated clock by
    the time it slept, so the simulated processes run at roughly real speed.
    """
    try:
        from kscand.sim.machine import SimMachine
        from kscand.sim.scenario import load_scenario
    except ImportError as err:
        raise Unsupported(f"the simulator is not available: {err}") from err
    scenario = load_scenario(scenario_path)
    machine = SimMachine(scenario)
    return Backend(
        machine=machine,
        kind=f"sim:{scenario_path.name}",
        access_source="simulated",
        access_source_reason=f"Accessed bits of the simulated processes of {scenario_path}",
        after_sleep=machine.clock.sleep_ns,
        tunables=scenario.tunables,
        scale_policy=machine.scale_of,
    )
