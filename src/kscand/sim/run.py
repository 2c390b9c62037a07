"""Run a scenario: the kscand engine on the simulated machine, sampled over virtual time."""

from __future__ import annotations

import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from kscand.core.counters import EngineCounter, EngineFamily, family_of
from kscand.core.engine import Kscand
from kscand.core.stats import Stats
from kscand.core.tunables import Tunables
from kscand.machine import ProcessId, top_tier_from_tiers
from kscand.sim.machine import SimMachine
from kscand.sim.metrics import (
    HindsightTracker,
    ProcSample,
    Sample,
    Sampler,
    StaticBest,
    access_weighted,
)
from kscand.sim.process import UNPOPULATED_KINDS, SimProcess
from kscand.sim.scenario import Scenario
from kscand.sim.workloads import workload_end_s

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
    rate_per_s: float = 0.0  # its accesses per second at the last sample it was alive


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
    end_s: float = 0.0  # when the run stopped: duration_s, or the end of its traces
    trace_end_s: float | None = None  # the end of the replayed traces, when they all end
    weights_s: list[float] = field(default_factory=list)  # per sample: seconds it stands for
    static_best: StaticBest | None = None  # with run_scenario(hindsight=True)
    time_varying: bool = False  # whether any workload's rates changed during the run
    # Why the simulated machine cannot promote anything (one node, one tier), or None.
    nothing_to_promote: str | None = None

    def access_weighted(self, values: list[float]) -> float:
        """The access-weighted mean of one value per sample (metrics.access_weighted)."""
        return access_weighted(values, [s.rate_per_s for s in self.samples], self.weights_s)

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
            "nothing_to_promote": self.nothing_to_promote,
            "end_s": self.end_s,
            "trace_end_s": self.trace_end_s,
            "access_weighted": {
                "top_share": round(self.access_weighted([s.top_share for s in self.samples]), 6),
                "oracle_share": round(
                    self.access_weighted([s.oracle_share for s in self.samples]), 6),
                "latency_ns": round(
                    self.access_weighted([s.latency_ns for s in self.samples]), 3),
            },
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
                    "rate_per_s": round(s.rate_per_s, 3),
                    "weight_s": round(w, 6),
                    "promoted_pages": promoted,
                }
                for s, promoted, w in zip(self.samples, self.promoted_pages_at, self.weights_s,
                                          strict=True)
            ],
            "processes": [asdict(p) for p in self.procs],
            "counters": self.counters,
            "nr_exits": self.nr_exits,
        }


def nothing_to_promote(scenario: Scenario) -> str | None:
    """Why the scenario's machine has nothing to promote (one node, or every node top
    tier: every page is on the top tier already, every share 100 % by construction), or
    None when it has a slow tier."""
    nodes = scenario.nodes
    top = top_tier_from_tiers({n.nid: n.tier for n in nodes}, {n.nid: n.cpus for n in nodes})
    if any(n.nid not in top for n in nodes):
        return None
    nids = ",".join(str(n.nid) for n in nodes)
    if len(nodes) <= 1:
        return f"one NUMA node (node {nids}): nothing to promote"
    return f"no slow-tier node: every node ({nids}) is top tier, nothing to promote"


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
    policy sleeps before its next wake-up; stats holds its counters (its own: what it
    promoted is measured by the machine, SimView.promoted_pages, for every policy).
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
SampleObserver = Callable[[Sample, float], None]  # (sample, the seconds it stands for)


def run_end_s(scenario: Scenario) -> tuple[float, float | None]:
    """(when the run stops, the end of its traces or None).

    A run stops at duration_s, or earlier when every VMA that does anything replays a
    trace that does not loop and all of them have ended: after that no access is
    left to serve, and samples would only record idle time.
    """
    ends: list[float | None] = [
        workload_end_s(v.workload)
        for p in scenario.processes
        for v in p.vmas
        if v.kind not in UNPOPULATED_KINDS and v.workload.kind != "idle"
    ]
    if not ends or any(e is None for e in ends):
        return scenario.duration_s, None
    trace_end_s = max(e for e in ends if e is not None)
    return min(scenario.duration_s, trace_end_s), trace_end_s


def kscand_policy(machine: SimMachine, scenario: Scenario) -> Policy:
    return KscandPolicy(machine, scenario.tunables)


def run_scenario(
    scenario: Scenario,
    seed: int | None = None,
    progress: Callable[[float], None] | None = None,
    machine: SimMachine | None = None,
    policy: PolicyFactory = kscand_policy,
    observers: tuple[SampleObserver, ...] = (),
    hindsight: bool = False,
) -> SimReport:
    """Run scenario to its end under a policy (kscand by default).

    Samples every sample_interval_s from t=0 to the end (run_end_s): at duration_s
    included, but not at the end of a trace (nothing is accessed from then on).
    observers see every sample; hindsight computes the static best at the end.
    The same scenario and seed give the same numbers.
    """
    wall_start = time.perf_counter()
    machine = machine if machine is not None else SimMachine(scenario, seed)
    engine = policy(machine, scenario)
    sampler = Sampler(machine)
    report = SimReport(
        scenario.name, scenario.seed if seed is None else seed, scenario.duration_s, 0.0, 0.0
    )
    report.nothing_to_promote = nothing_to_promote(scenario)
    per_proc: dict[ProcessId, list[tuple[float, float, float]]] = {}
    last_seen: dict[ProcessId, tuple[SimProcess, ProcSample]] = {}
    tracker = HindsightTracker(machine) if hindsight else None
    end_s, trace_end_s = run_end_s(scenario)
    report.end_s, report.trace_end_s = end_s, trace_end_s
    interval_s = scenario.sample_interval_s

    def sample_due(t_s: float) -> bool:
        return t_s < end_s if trace_end_s is not None and trace_end_s <= end_s else t_s <= end_s

    next_sample_s = 0.0
    nr_samples = 0
    clock = machine.clock
    while True:
        while clock.now_s >= next_sample_s and sample_due(next_sample_s):
            sample = sampler.sample(next_sample_s)
            weight_s = max(0.0, min(interval_s, end_s - next_sample_s))
            report.samples.append(sample)
            report.weights_s.append(weight_s)
            if tracker is not None:
                tracker.add(sample, weight_s)
            for observe in observers:
                observe(sample, weight_s)
            report.promoted_pages_at.append(machine.view.promoted_pages())
            for sim_proc in machine.alive():
                ps = sample.per_proc[sim_proc.proc]
                per_proc.setdefault(sim_proc.proc, []).append(
                    (sample.t_s, ps.top_share, ps.oracle_share)
                )
                last_seen[sim_proc.proc] = (sim_proc, ps)
            nr_samples += 1
            next_sample_s = nr_samples * interval_s  # no drift from repeated additions
        if clock.now_s >= end_s:
            break
        before = clock.now_ns()
        engine.step()
        clock.sleep_ns(engine.sleep_ns())
        if clock.now_ns() - before < MIN_STEP_NS:
            clock.sleep_ns(MIN_STEP_NS - (clock.now_ns() - before))
        if progress is not None:
            progress(min(1.0, clock.now_s / end_s) if end_s > 0 else 1.0)

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
                promoted_pages=machine.view.promoted_pages(proc),
                ptes_scanned=counters[EngineCounter.PTES_SCANNED],
                move_failures={k: v for k, v in sorted(counters.items())
                               if family_of(k) is EngineFamily.MOVE_FAILED},
                exited=proc not in alive,
                rate_per_s=ps.rate_per_s,
            )
        )
    if tracker is not None:
        report.static_best = tracker.static_best()
        report.time_varying = tracker.time_varying
    report.counters = engine.stats.snapshot()
    report.nr_exits = machine.nr_exits
    report.wall_s = time.perf_counter() - wall_start
    report.peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report
