"""The guest side of `make vm-compare`: one mechanism (testbed/mechanisms.py) on the
workload for a fixed time, placement sampled from outside, CPU and /proc/vmstat deltas.

Scenario "promote": the workload alone (node 0 has room). Scenario "exchange": first a
cold filler fills node 0 (testbed/scenarios.py's filler), so a hot page can only come
up if something demotes a cold one. Runs inside the guest; only the standard library.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from testbed.actors import Tunables, Workload, WorkloadSpec
from testbed.guestio import (
    POLL_S,
    VMSTAT_KEYS,
    node_free_mib,
    numa_balancing,
    proc_cpu_s,
    recorded,
    vmstat,
    wait_s,
)
from testbed.mechanisms import Mechanism, make_mechanism
from testbed.scenarios import filler_spec

COMPARE_SCENARIOS = ("promote", "exchange")
FILLER_LEAVE_MIB = 40
FILLER_REPORT_S = 5.0


def run_compare(
    mechanism_name: str,
    out: Path,
    duration_s: float,
    spec: WorkloadSpec,
    tunables: Tunables | None = None,
    scenario: str = "promote",
) -> None:
    """One mechanism on the workload for duration_s from ready: placement over time, CPU."""
    if scenario not in COMPARE_SCENARIOS:
        raise ValueError(f"unknown compare scenario {scenario!r}")
    # Off for every mechanism but numab (which turns it on itself): pages move only by
    # the mechanism under test.
    with recorded("compare", out) as result, numa_balancing(0, result):
        mechanism = make_mechanism(mechanism_name, tunables)
        result.data.update(mechanism=mechanism_name, duration_s=duration_s, workload=spec.__dict__,
                           compare_scenario=scenario, tunables=dict(tunables or {}))  # fmt: skip
        filler = (
            Workload(filler_spec(FILLER_LEAVE_MIB, FILLER_REPORT_S), out)
            if (scenario == "exchange")
            else None
        )
        workload: Workload | None = None
        started = False
        timeline: list[dict[str, Any]] = []
        try:
            if filler is not None:
                result.data["filler"] = filler.wait_ready()
            before = vmstat()
            if not mechanism.starts_after_ready:
                started = True
                mechanism.start(out)
            workload = Workload(spec, out)
            result.data["main"] = workload.wait_ready()
            result.data["node0_free_mib_at_ready"] = node_free_mib(0)
            if mechanism.starts_after_ready:
                started = True
                mechanism.start(out)
            observer = workload.observer()
            start = _sample(mechanism, workload.pid)
            deadline = time.monotonic() + duration_s
            while time.monotonic() < deadline:
                timeline.append(observer.sample())
                wait_s(min(POLL_S, deadline - time.monotonic()))
            timeline.append(observer.sample())
            end = _sample(mechanism, workload.pid)
            result.data["cpu"] = cpu_delta(start, end)
            result.data["vmstat_delta"] = vmstat_delta(start["vmstat"], end["vmstat"])
            result.data["vmstat_delta_since_mechanism_start"] = vmstat_delta(before, end["vmstat"])
            result.data["counters"] = mechanism.counters()
        finally:
            result.data["timeline"] = timeline
            if workload is not None:
                result.data["workload_exit_status"] = workload.stop()
            if started:
                result.data["mechanism_stop"] = mechanism.stop()
            if filler is not None:
                result.data["filler_exit_status"] = filler.stop()
                result.data["filler_timeline"] = filler.timeline()


def cpu_delta(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """CPU seconds spent between two samples (the numeric fields of _sample)."""
    return {k: round(end[k] - v, 3) for k, v in start.items() if isinstance(v, int | float)}


def vmstat_delta(start: dict[str, int], end: dict[str, int]) -> dict[str, int]:
    """Growth of the VMSTAT_KEYS counters (those this kernel has)."""
    return {k: end[k] - start.get(k, 0) for k in VMSTAT_KEYS if k in end}


def _sample(mechanism: Mechanism, workload_pid: int) -> dict[str, Any]:
    """CPU seconds of the mechanism and the workload, and /proc/vmstat, now."""
    cpu = proc_cpu_s(workload_pid) or (0.0, 0.0)
    return {
        "mechanism_s": mechanism.cpu_s(),
        "workload_user_s": cpu[0],
        "workload_sys_s": cpu[1],
        "vmstat": vmstat(),
    }
