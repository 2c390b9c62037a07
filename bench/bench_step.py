"""Engine step benchmark: the cost of one engine.step() when no process is due.

Run: .venv/bin/python bench/bench_step.py [--reps 400]
Target (issue 14): with 5,000 processes and none due, a step <= 1 ms. Builds a
simulated machine (kscand.sim) with N small processes for N = 50 and 5,000,
warms up until every process was scanned and none is due, then times
engine.step() (CPU time, many repetitions, at one virtual instant: a step with
nothing due does not move the simulated clock) and prints the median per N,
the ratio 5000/50 measured side by side in this run (flat cost: near 1), the
5,000 figure against the target. Each N is timed twice on the same engine:
with the simulator's processes() (it walks every simulated process in Python
on each call: the Machine's cost, not the engine's) and with that list taken
once and handed back unchanged (a Machine whose process list costs nothing:
the engine's own bookkeeping).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from kscand.core.engine import Kscand
from kscand.machine import MachineProxy, ProcessId
from kscand.sim.machine import SimMachine
from kscand.sim.scenario import scenario_from_mapping

TARGET_STEP_MS = 1.0
SIZES = (50, 5_000)


def scenario_of(nr_procs: int) -> dict[str, Any]:
    """nr_procs processes of 1 MiB each, on the slow node; room for all on the top tier."""
    return {
        "name": f"step-{nr_procs}",
        "seed": 1,
        "duration_s": 3600,
        "nodes": [
            {"nid": 0, "capacity": "16GiB", "cpus": True, "tier": 4},
            {"nid": 1, "capacity": "16GiB", "cpus": False, "tier": 67},
        ],
        "processes": [{
            "name": "svc", "count": nr_procs, "placement": "slow",
            "workload": {"kind": "uniform", "rate_per_s": 1e3},
            "vmas": [{"kind": "anon", "size": "1MiB"}],
        }],
    }


class FrozenProcesses(MachineProxy):
    """The simulated machine, with processes() answered from a list taken once when frozen."""

    def __init__(self, inner: SimMachine) -> None:
        super().__init__(inner)
        self.sim = inner
        self.frozen: list[ProcessId] | None = None

    def processes(self) -> list[ProcessId]:
        return list(self.frozen) if self.frozen is not None else self.inner.processes()


def quiet_engine(nr_procs: int) -> tuple[FrozenProcesses, Kscand]:
    """An engine whose processes were all scanned at least once and none is due now."""
    scenario = scenario_from_mapping(scenario_of(nr_procs))
    machine = FrozenProcesses(SimMachine(scenario))
    engine = Kscand(machine, scenario.tunables)
    pause_ns = scenario.tunables.scan_sleep_ms * 1_000_000
    for _ in range(100_000):
        result = engine.step()
        slots = list(engine.mm_list)
        now_ns = machine.clock.now_ns()
        scanned = all(s.full_scans > 0 for s in slots)
        if scanned and result.nr_scanned_mms == 0 and min(s.next_scan_ns for s in slots) > now_ns:
            return machine, engine
        machine.clock.sleep_ns(pause_ns)
    raise RuntimeError(f"N={nr_procs}: no quiet moment after warm-up")


def median_step_ms(machine: FrozenProcesses, engine: Kscand, reps: int, frozen: bool) -> float:
    """Median CPU time of one step with none due; checks that none was scanned."""
    machine.frozen = machine.sim.processes() if frozen else None
    now_ns = machine.clock.now_ns()
    times = []
    for _ in range(reps):
        cpu0 = time.process_time_ns()
        result = engine.step()
        times.append(time.process_time_ns() - cpu0)
        if result.nr_scanned_mms or machine.clock.now_ns() != now_ns:
            raise RuntimeError("a timed step scanned or moved the clock: not a quiet step")
    return statistics.median(times) / 1e6


def median_processes_ms(machine: FrozenProcesses, reps: int) -> float:
    """Median CPU time of the simulator's own processes()."""
    times = []
    for _ in range(reps):
        cpu0 = time.process_time_ns()
        machine.sim.processes()
        times.append(time.process_time_ns() - cpu0)
    return statistics.median(times) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="timed steps per N and kind")
    args = parser.parse_args()
    engines = {n: quiet_engine(n) for n in SIZES}
    kinds = ("sim", "engine", "processes")
    ms = {(n, kind): 0.0 for n in SIZES for kind in kinds}
    # Alternate sizes and kinds in rounds so that all see the same machine noise.
    rounds = 4
    reps = max(1, args.reps // rounds)
    for _ in range(rounds):
        for n, (machine, engine) in engines.items():
            ms[n, "sim"] += median_step_ms(machine, engine, reps, frozen=False) / rounds
            ms[n, "engine"] += median_step_ms(machine, engine, reps, frozen=True) / rounds
            ms[n, "processes"] += median_processes_ms(machine, reps) / rounds
    small, large = SIZES
    for n in SIZES:
        print(f"step, {n:5d} processes, none due: {ms[n, 'engine']:7.3f} ms median CPU"
              f" (process list given); {ms[n, 'sim']:7.3f} ms with the simulator's"
              f" processes(), which alone takes {ms[n, 'processes']:.3f} ms")
    ratio = {kind: ms[large, kind] / ms[small, kind] for kind in kinds}
    print(f"ratio {large}/{small}                : {ratio['engine']:7.2f} (flat cost: near 1);"
          f" {ratio['sim']:.2f} with the simulator's processes(), which alone scales"
          f" {ratio['processes']:.2f}")
    step = ms[large, "engine"]
    print(f"{large} processes vs the target  : {step:7.3f} ms vs {TARGET_STEP_MS:.1f} ms, ratio"
          f" {step / TARGET_STEP_MS:.2f} ({'met' if step <= TARGET_STEP_MS else 'MISSED'});"
          f" {ms[large, 'sim'] / TARGET_STEP_MS:.2f} with the simulator's processes()")


if __name__ == "__main__":
    main()
