"""Small builders of simulated machines for tests: scenarios from plain dicts."""

from __future__ import annotations

from typing import Any

from kscand.core.engine import Kscand
from kscand.core.mmlist import MmSlot
from kscand.machine import ProcessId
from kscand.sim.machine import SimMachine
from kscand.sim.scenario import Scenario, scenario_from_mapping

TWO_TIER_NODES = [
    {"nid": 0, "capacity": "1GiB", "cpus": True, "tier": 4, "latency_ns": 80},
    {"nid": 1, "capacity": "4GiB", "cpus": False, "tier": 67, "latency_ns": 300},
]
# Throttling off: every process is scanned at every step, from the first one.
UNTHROTTLED = {"scan_delay_ms": 0, "mm_scan_period_ms": 1, "scan_period_min_ms": 1,
               "scan_period_max_ms": 1, "default_scale": 1}
# Steps (20 ms apart) that reach past the default 100 ms re-probe, which a promotion
# waits for on page-exact sources (kscand.core.scanner: short evidence).
STEPS_PAST_REPROBE = 8
HOT = {"kind": "uniform", "rate_per_s": 1e9}  # every page accessed between any two scans
COLD = {"kind": "idle"}


def scenario(
    processes: list[dict[str, Any]],
    nodes: list[dict[str, Any]] | None = None,
    tunables: dict[str, Any] | None = None,
    **top: Any,
) -> Scenario:
    raw: dict[str, Any] = {
        "name": "test",
        "seed": 7,
        "duration_s": 5,
        "sample_interval_s": 0.5,
        "nodes": nodes or TWO_TIER_NODES,
        "processes": processes,
        "tunables": {**UNTHROTTLED, **(tunables or {})},
        **top,
    }
    return scenario_from_mapping(raw)


def machine_and_engine(sc: Scenario) -> tuple[SimMachine, Kscand]:
    machine = SimMachine(sc)
    machine.record_moves = True
    return machine, Kscand(machine, sc.tunables, scale_policy=machine.scale_of)


def slot_of(engine: Kscand, proc: ProcessId) -> MmSlot:
    """The engine's slot of proc, which the test expects to be listed."""
    slot = engine.mm_list.get(proc)
    assert slot is not None, f"{proc} is not on the mm list"
    return slot


def run_steps(machine: SimMachine, engine: Kscand, nr_steps: int) -> None:
    for _ in range(nr_steps):
        engine.step()
        machine.clock.sleep_ns(engine.tunables.scan_sleep_ms * 1_000_000)


def moved_vaddrs(machine: SimMachine) -> set[int]:
    return {int(v) for _, vaddrs in machine.move_log for v in vaddrs}
