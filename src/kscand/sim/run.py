"""Run a scenario: the kscand engine on the simulated machine, sampled over virtual time."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from kscand.engine import Kscand
from kscand.machine import ProcessId
from kscand.sim.machine import SimMachine, SimProcess
from kscand.sim.metrics import ProcSample, Sample, Sampler
from kscand.sim.scenario import Scenario
from kscand.stats import Stats
from kscand.tunables import Tunables

# Fraction of the oracle's top-tier share that counts as "converged".
CONVERGED_FRACTION = 0.9
# Virtual time a step takes at least, so a run always advances.
MIN_STEP_NS = 1_000_000


@dataclass(frozen=True, slots=True)
class ProcSummary:
    """One process over the run."""

    label: str
    pid: int
    nr_pages: int
    nr_hot: int
    top_share: float  # at the last sample it was alive
    oracle_share: float
    hot_on_top: float  # fraction of its hot pages on the top tier
    t90_s: float | None  # first time it reached CONVERGED_FRACTION of the oracle's share
    promoted_pages: int
    ptes_scanned: int
    move_failures: dict[str, int]
    exited: bool


@dataclass
class SimReport:
    """Everything a run produced: timeline, per-process summary, counters."""

    scenario: str
    seed: int
    duration_s: float
    wall_s: float
    peak_rss_mib: float
    samples: list[Sample] = field(default_factory=list)
    promoted_pages_at: list[int] = field(default_factory=list)
    procs: list[ProcSummary] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    nr_exits: int = 0

    @property
    def final(self) -> Sample:
        return self.samples[-1]

    @property
    def t90_s(self) -> float | None:
        return time_to_fraction(
            [(s.t_s, s.top_share, s.oracle_share) for s in self.samples], CONVERGED_FRACTION
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (floats rounded for stable, diffable output)."""
        return {
            "scenario": self.scenario,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "wall_s": round(self.wall_s, 3),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "t90_s": self.t90_s,
            "final": {
                "top_share": round(self.final.top_share, 6),
                "oracle_share": round(self.final.oracle_share, 6),
                "hot_on_top": round(hot_fraction(self.final), 6),
                "latency_ns": round(self.final.latency_ns, 3),
            },
            "timeline": [
                {
                    "t_s": round(s.t_s, 6),
                    "top_share": round(s.top_share, 6),
                    "oracle_share": round(s.oracle_share, 6),
                    "hot_on_top": round(hot_fraction(s), 6),
                    "latency_ns": round(s.latency_ns, 3),
                    "promoted_pages": promoted,
                }
                for s, promoted in zip(self.samples, self.promoted_pages_at, strict=True)
            ],
            "processes": [asdict(p) for p in self.procs],
            "counters": self.counters,
            "nr_exits": self.nr_exits,
        }


def hot_fraction(sample: Sample) -> float:
    return sample.nr_hot_top / sample.nr_hot if sample.nr_hot else 1.0


def time_to_fraction(series: list[tuple[float, float, float]], fraction: float) -> float | None:
    """First t with share >= fraction * oracle share; series of (t, share, oracle share)."""
    for t_s, share, oracle in series:
        if oracle > 0 and share >= fraction * oracle:
            return t_s
    return None


class Policy(Protocol):
    """A promotion policy driven by the simulator: kscand, or a baseline to compare with.

    step() does one wake-up's work on the machine; sleep_ns() is how long the
    policy sleeps before its next wake-up; stats holds its counters
    (nr_kscand_migrated is read as "pages promoted" for every policy).
    """

    stats: Stats

    def step(self) -> object: ...

    def sleep_ns(self) -> int: ...


class KscandPolicy:
    """The kscand engine as a Policy."""

    def __init__(self, machine: SimMachine, tunables: Tunables) -> None:
        self.engine = Kscand(machine, tunables, scale_policy=machine.scale_of)
        self.stats = self.engine.stats

    def step(self) -> object:
        return self.engine.step()

    def sleep_ns(self) -> int:
        return self.engine.tunables.scan_sleep_ms * 1_000_000


PolicyFactory = Callable[[SimMachine, Scenario], Policy]


def kscand_policy(machine: SimMachine, scenario: Scenario) -> Policy:
    return KscandPolicy(machine, scenario.tunables)


def run_scenario(
    scenario: Scenario,
    seed: int | None = None,
    progress: Callable[[float], None] | None = None,
    machine: SimMachine | None = None,
    policy: PolicyFactory = kscand_policy,
) -> SimReport:
    """Run scenario to its end under a policy (kscand by default).

    The same scenario and seed give the same numbers.
    """
    wall_start = time.perf_counter()
    machine = machine if machine is not None else SimMachine(scenario, seed)
    engine = policy(machine, scenario)
    sampler = Sampler(machine)
    report = SimReport(
        scenario.name, scenario.seed if seed is None else seed, scenario.duration_s, 0.0, 0.0
    )
    per_proc: dict[ProcessId, list[tuple[float, float, float]]] = {}
    last_seen: dict[ProcessId, tuple[SimProcess, ProcSample]] = {}
    next_sample_s = 0.0
    clock = machine.clock
    while True:
        while clock.now_s >= next_sample_s and next_sample_s <= scenario.duration_s:
            sample = sampler.sample(next_sample_s)
            report.samples.append(sample)
            report.promoted_pages_at.append(engine.stats.total["nr_kscand_migrated"])
            for sim_proc in machine.alive():
                ps = sample.per_proc[sim_proc.proc]
                per_proc.setdefault(sim_proc.proc, []).append(
                    (sample.t_s, ps.top_share, ps.oracle_share)
                )
                last_seen[sim_proc.proc] = (sim_proc, ps)
            next_sample_s += scenario.sample_interval_s
        if clock.now_s >= scenario.duration_s:
            break
        before = clock.now_ns()
        engine.step()
        clock.sleep_ns(engine.sleep_ns())
        if clock.now_ns() - before < MIN_STEP_NS:
            clock.sleep_ns(MIN_STEP_NS - (clock.now_ns() - before))
        if progress is not None:
            progress(min(1.0, clock.now_s / scenario.duration_s))

    alive = {p.proc for p in machine.alive()}
    for proc, (sim_proc, ps) in last_seen.items():
        counters = engine.stats.of(proc)
        report.procs.append(
            ProcSummary(
                label=sim_proc.name,
                pid=sim_proc.proc.pid,
                nr_pages=sum(v.nr_pages for v in sim_proc.vmas),
                nr_hot=ps.nr_hot,
                top_share=ps.top_share,
                oracle_share=ps.oracle_share,
                hot_on_top=ps.nr_hot_top / ps.nr_hot if ps.nr_hot else 1.0,
                t90_s=time_to_fraction(per_proc[proc], CONVERGED_FRACTION),
                promoted_pages=counters["nr_kscand_migrated"],
                ptes_scanned=counters["nr_kscand_ptes_scanned"],
                move_failures={k: v for k, v in sorted(counters.items())
                               if k.startswith("move_fail_")},
                exited=proc not in alive,
            )
        )
    report.counters = engine.stats.snapshot()
    report.nr_exits = machine.nr_exits
    report.wall_s = time.perf_counter() - wall_start
    report.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report
