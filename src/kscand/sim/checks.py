"""The checks of a whole scenario, before anything is allocated: its target node, that
the processes alive at start fit the nodes, and the memory one simulated run needs."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kscand.core.tunables import Tunables
from kscand.errors import ConfigError
from kscand.machine import PAGE_SIZE, top_tier_from_tiers

if TYPE_CHECKING:
    from kscand.sim.scenario import NodeSpec, ProcessSpec, Scenario

# What one simulated run may hold in memory, estimated before anything is allocated: the
# machine has 24 GiB; the 1 TiB stress scenario (make stress) needs ~6 GiB.
SIM_MEMORY_LIMIT_BYTES = 16 << 30
SIM_BYTES_PER_PAGE = 24  # node and clear time per page, workload rates, metrics temporaries
SIM_BYTES_PER_SAMPLE = 512  # one timeline sample and its bookkeeping
SIM_BYTES_PER_PROC_SAMPLE = 256  # ... plus this per process alive in it


def gib(nr_bytes: float) -> str:
    return f"{nr_bytes / (1 << 30):,.1f} GiB"


def check_target_node(tunables: Tunables, nodes: tuple[NodeSpec, ...]) -> None:
    """tunables.target_node, when set, must be a top-tier node of the scenario."""
    target = tunables.target_node
    if target < 0:
        return
    top = top_tier_from_tiers({n.nid: n.tier for n in nodes}, {n.nid: n.cpus for n in nodes})
    if target in top:
        return
    tops = ", ".join(str(n) for n in sorted(top)) or "none"
    if any(n.nid == target for n in nodes):
        raise ConfigError(f"tunables.target_node: node {target} is on the slow tier "
                          f"(top-tier nodes: {tops})")
    raise ConfigError(f"tunables.target_node: node {target} is not in nodes "
                      f"(top-tier nodes: {tops})")


def _max_alive(proc: ProcessSpec) -> int:
    """At most this many copies of proc are alive at once."""
    if proc.count == 1 or proc.stagger_s == 0:
        return proc.count
    span_s = proc.lifetime_s
    if proc.exit_s is not None:
        span_s = min(span_s, proc.exit_s - proc.start_s) if span_s is not None else (
            proc.exit_s - proc.start_s)
    if span_s is None:
        return proc.count
    return min(proc.count, math.ceil(span_s / proc.stagger_s) + 1)


def estimated_memory_bytes(scenario: Scenario) -> int:
    """An upper estimate of what running scenario holds in memory: every page of every
    process that can be alive at once, and the timeline samples."""
    peak_pages = sum(p.nr_pages * _max_alive(p) for p in scenario.processes)
    peak_procs = sum(_max_alive(p) for p in scenario.processes)
    nr_samples = math.floor(scenario.duration_s / scenario.sample_interval_s) + 1
    per_sample = SIM_BYTES_PER_SAMPLE + SIM_BYTES_PER_PROC_SAMPLE * peak_procs
    return peak_pages * SIM_BYTES_PER_PAGE + nr_samples * per_sample


def check_memory(scenario: Scenario) -> None:
    """Refuse, before allocating anything, a run that would not fit the stated limit."""
    need = estimated_memory_bytes(scenario)
    if need <= SIM_MEMORY_LIMIT_BYTES:
        return
    nr_samples = math.floor(scenario.duration_s / scenario.sample_interval_s) + 1
    raise ConfigError(
        f"scenario: needs about {gib(need)} of memory to simulate ({nr_samples:,} samples of "
        f"duration_s / sample_interval_s, the processes' pages), over the "
        f"{gib(SIM_MEMORY_LIMIT_BYTES)} limit of one simulated run"
    )


def check_fits(scenario: Scenario) -> None:
    """Processes alive at time 0 must fit in the machine's memory."""
    total_pages = sum(n.capacity_pages for n in scenario.nodes)
    at_start = sum(
        p.nr_pages * (p.count if p.stagger_s == 0 else 1)
        for p in scenario.processes if p.start_s == 0
    )
    if at_start > total_pages:
        raise ConfigError(
            f"processes: {at_start * PAGE_SIZE >> 20} MiB at start do not fit in the nodes' "
            f"{total_pages * PAGE_SIZE >> 20} MiB"
        )
    for i, proc in enumerate(scenario.processes):
        if proc.placement == "node" and len(proc.placement_nids) == 1:
            node = next(n for n in scenario.nodes if n.nid == proc.placement_nids[0])
            if proc.nr_pages > node.capacity_pages:
                raise ConfigError(
                    f"processes[{i}].placement: {proc.nr_pages * PAGE_SIZE >> 20} MiB do not "
                    f"fit on node {node.nid} ({node.capacity_bytes >> 20} MiB)"
                )
