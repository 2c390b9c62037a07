"""Run several policies on the same scenario and seed, and summarise each run.

Every run gets a fresh SimMachine built from the same scenario and seed, so the
processes, their placement and their workloads start identical; the policies'
own random draws come from the same seed too. Runs go to worker processes
(concurrent.futures, spawn) when jobs > 1; progress comes back over a queue.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import queue
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from kscand.errors import ConfigError
from kscand.evaluation.costs import DEFAULT_COSTS, CostModel
from kscand.evaluation.ledger import LedgerSummary, PromotionLedger
from kscand.evaluation.policies import (
    ORACLE,
    POLICY_KINDS,
    PolicyKind,
    RunSpec,
    Sweep,
    apply_overrides,
)
from kscand.machine import top_tier_from_tiers
from kscand.sim.machine import SimMachine
from kscand.sim.run import Policy, SimReport, hot_fraction, run_scenario, time_to_fraction
from kscand.sim.scenario import Scenario

FRACTIONS = (0.5, 0.9)  # time to these fractions of the oracle's top-tier share
PROGRESS_STEP = 0.01  # a worker reports progress at most every 1 %
POLL_S = 0.2

Progress = Callable[[int, float], None]  # (run index, fraction done)


@dataclass
class RunResult:
    """One policy run (or the oracle reference row), summarised; JSON-ready."""

    label: str
    policy: str
    overrides: list[tuple[str, str]]
    payer: str  # who pays the CPU cost: app, daemon or none
    params: dict[str, Any] | None
    final_top_share: float
    final_oracle_share: float
    mean_top_share: float  # time average over the samples
    mean_oracle_share: float
    t50_s: float | None
    t90_s: float | None
    final_latency_ns: float
    mean_latency_ns: float
    ledger: dict[str, int] | None  # LedgerSummary.as_dict(); None for the oracle
    cpu: dict[str, float] | None  # CpuCost.as_dict(); None for the oracle
    counters: dict[str, int]
    timeline: list[dict[str, float]]
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0

    @property
    def of_oracle(self) -> float:
        return self.final_top_share / self.final_oracle_share if self.final_oracle_share else 0.0

    @property
    def mean_of_oracle(self) -> float:
        return self.mean_top_share / self.mean_oracle_share if self.mean_oracle_share else 0.0

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["of_oracle"] = round(self.of_oracle, 6)
        out["mean_of_oracle"] = round(self.mean_of_oracle, 6)
        return out


@dataclass
class Comparison:
    """Every run of one `kscand compare`."""

    scenario: str
    description: str
    seed: int
    duration_s: float
    sweeps: list[Sweep]
    costs: CostModel
    runs: list[RunResult] = field(default_factory=list)
    wall_s: float = 0.0
    commit: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "description": self.description,
            "seed": self.seed,
            "duration_s": self.duration_s,
            "commit": self.commit,
            "wall_s": round(self.wall_s, 2),
            "sweeps": [dataclasses.asdict(s) for s in self.sweeps],
            "cost_model_ns": self.costs.as_dict(),
            "runs": [r.to_json() for r in self.runs],
        }


@dataclass(frozen=True, slots=True)
class RunTask:
    """What a worker needs for one run (picklable)."""

    index: int
    spec: RunSpec
    scenario: Scenario
    seed: int
    costs: CostModel


class Instrumented:
    """A Policy wrapper: the promotion ledger, and the CPU cost at every sample time."""

    def __init__(self, inner: Policy, machine: SimMachine, kind: PolicyKind,
                 costs: CostModel, interval_s: float) -> None:
        self.inner = inner
        self.stats = inner.stats
        self.machine = machine
        self.kind = kind
        self.costs = costs
        self.ledger = PromotionLedger(machine)
        self.interval_s = interval_s
        self.cpu_at: list[tuple[float, float]] = []  # per sample time: (total ns, app ns)

    def cpu_now(self) -> tuple[float, float]:
        running = LedgerSummary(self.ledger.promoted_pages, self.ledger.demoted_pages,
                                self.ledger.move_calls, 0, 0, 0, 0, 0)
        cost = self.kind.cost(dict(self.stats.total), running, self.costs)
        return cost.total_ns, cost.app_ns

    def step(self) -> object:
        now_s = self.machine.clock.now_s
        while len(self.cpu_at) * self.interval_s <= now_s + 1e-12:
            self.cpu_at.append(self.cpu_now())
        result = self.inner.step()
        self.ledger.drain()
        return result

    def sleep_ns(self) -> int:
        return self.inner.sleep_ns()


def run_one(task: RunTask, progress: Callable[[float], None] | None = None) -> RunResult:
    """Run one policy on the scenario; the summary of the run."""
    spec, scenario = task.spec, task.scenario
    kind = POLICY_KINDS[spec.policy]
    params = apply_overrides(spec.policy, spec.overrides, scenario.tunables)
    made: list[Instrumented] = []

    def factory(machine: SimMachine, sc: Scenario) -> Policy:
        inner = kind.build(machine, sc, params, task.seed)
        made.append(Instrumented(inner, machine, kind, task.costs, sc.sample_interval_s))
        return made[0]

    report = run_scenario(scenario, seed=task.seed, progress=progress, policy=factory)
    policy = made[0]
    ledger = policy.ledger.summary()
    cpu = kind.cost(report.counters, ledger, task.costs)
    cpu_at = policy.cpu_at + [(cpu.total_ns, cpu.app_ns)] * max(
        0, len(report.samples) - len(policy.cpu_at))
    return summarize(
        report, spec.label, spec.policy, list(spec.overrides), kind.payer,
        params_dict(params), ledger.as_dict(), cpu.as_dict(), cpu_at,
    )


def params_dict(params: Any) -> dict[str, Any] | None:
    if params is None:
        return None
    return dataclasses.asdict(params)


def summarize(
    report: SimReport, label: str, policy: str, overrides: list[tuple[str, str]], payer: str,
    params: dict[str, Any] | None, ledger: dict[str, int] | None, cpu: dict[str, float] | None,
    cpu_at: list[tuple[float, float]],
) -> RunResult:
    """A RunResult from a SimReport and what the instrumentation measured."""
    samples = report.samples
    series = [(s.t_s, s.top_share, s.oracle_share) for s in samples]
    t50, t90 = (time_to_fraction(series, f) for f in FRACTIONS)
    n = max(1, len(samples))
    timeline = [
        {
            "t_s": round(s.t_s, 6),
            "top_share": round(s.top_share, 6),
            "oracle_share": round(s.oracle_share, 6),
            "hot_on_top": round(hot_fraction(s), 6),
            "latency_ns": round(s.latency_ns, 3),
            "promoted_pages": promoted,
            "cpu_ns": round(cpu_ns, 1),
            "app_cpu_ns": round(app_ns, 1),
        }
        for s, promoted, (cpu_ns, app_ns) in zip(samples, report.promoted_pages_at, cpu_at,
                                                 strict=False)
    ]
    return RunResult(
        label=label,
        policy=policy,
        overrides=overrides,
        payer=payer,
        params=params,
        final_top_share=report.final.top_share,
        final_oracle_share=report.final.oracle_share,
        mean_top_share=sum(s.top_share for s in samples) / n,
        mean_oracle_share=sum(s.oracle_share for s in samples) / n,
        t50_s=t50,
        t90_s=t90,
        final_latency_ns=report.final.latency_ns,
        mean_latency_ns=sum(s.latency_ns for s in samples) / n,
        ledger=ledger,
        cpu=cpu,
        counters=dict(report.counters),
        timeline=timeline,
        wall_s=report.wall_s,
        peak_rss_mib=report.peak_rss_mib,
    )


def oracle_result(scenario: Scenario, reference: RunResult) -> RunResult:
    """The oracle's reference row, from any run's samples (the oracle does not depend on
    the policy). Its latency: the oracle's share at the mean top-tier node latency, the
    rest at the mean slow-tier node latency."""
    top = top_tier_from_tiers({n.nid: n.tier for n in scenario.nodes},
                              {n.nid: n.cpus for n in scenario.nodes})
    top_lat = [n.latency_ns for n in scenario.nodes if n.nid in top]
    slow_lat = [n.latency_ns for n in scenario.nodes if n.nid not in top] or top_lat
    lat_top, lat_slow = sum(top_lat) / len(top_lat), sum(slow_lat) / len(slow_lat)
    timeline = [
        {**p, "top_share": p["oracle_share"], "hot_on_top": 1.0, "promoted_pages": 0,
         "cpu_ns": 0.0, "app_cpu_ns": 0.0,
         "latency_ns": round(p["oracle_share"] * lat_top + (1 - p["oracle_share"]) * lat_slow,
                             3)}
        for p in reference.timeline
    ]
    n = max(1, len(timeline))
    return RunResult(
        label=ORACLE, policy=ORACLE, overrides=[], payer="none", params=None,
        final_top_share=reference.final_oracle_share,
        final_oracle_share=reference.final_oracle_share,
        mean_top_share=reference.mean_oracle_share,
        mean_oracle_share=reference.mean_oracle_share,
        t50_s=timeline[0]["t_s"] if timeline else None,
        t90_s=timeline[0]["t_s"] if timeline else None,
        final_latency_ns=timeline[-1]["latency_ns"] if timeline else 0.0,
        mean_latency_ns=sum(p["latency_ns"] for p in timeline) / n,
        ledger=None, cpu=None, counters={}, timeline=timeline,
    )


# --- running them -------------------------------------------------------------------------

_worker_queue: Any = None


def _init_worker(progress_queue: Any) -> None:
    global _worker_queue
    _worker_queue = progress_queue


def _run_in_worker(task: RunTask) -> RunResult:
    last = [0.0]

    def report(fraction: float) -> None:
        if fraction - last[0] >= PROGRESS_STEP or fraction >= 1.0:
            last[0] = fraction
            if _worker_queue is not None:
                _worker_queue.put((task.index, fraction))

    return run_one(task, report)


def compare(
    scenario: Scenario,
    runs: list[RunSpec],
    sweeps: list[Sweep],
    seed: int | None = None,
    jobs: int = 1,
    costs: CostModel = DEFAULT_COSTS,
    progress: Progress | None = None,
) -> Comparison:
    """Run every RunSpec (the oracle row comes from the first run's samples)."""
    start = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    want_oracle = any(r.policy == ORACLE for r in runs)
    specs = [r for r in runs if r.policy != ORACLE] or [RunSpec("none")]
    tasks = [RunTask(i, spec, scenario, seed, costs) for i, spec in enumerate(specs)]
    if jobs <= 1 or len(tasks) == 1:
        results = [run_one(t, _bind(progress, t.index)) for t in tasks]
    else:
        results = _run_parallel(tasks, min(jobs, len(tasks)), progress)
    ran_policies = {r.policy for r in runs}
    shown = [r for r in results if r.policy in ran_policies]
    if want_oracle:
        shown.append(oracle_result(scenario, results[0]))
    return Comparison(scenario.name, scenario.description, seed, scenario.duration_s, sweeps,
                      costs, shown, time.perf_counter() - start)


def _bind(progress: Progress | None, index: int) -> Callable[[float], None] | None:
    if progress is None:
        return None
    return lambda fraction: progress(index, fraction)


def _run_parallel(tasks: list[RunTask], jobs: int, progress: Progress | None) -> list[RunResult]:
    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()
    results: dict[int, RunResult] = {}
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(progress_queue,)) as pool:
        pending: dict[Future[RunResult], int] = {
            pool.submit(_run_in_worker, t): t.index for t in tasks}
        try:
            while pending:
                done, _ = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                _drain(progress_queue, progress)
                for fut in done:
                    results[pending.pop(fut)] = fut.result()
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
        _drain(progress_queue, progress)
    return [results[t.index] for t in tasks]


def _drain(progress_queue: Any, progress: Progress | None) -> None:
    while True:
        try:
            index, fraction = progress_queue.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(index, fraction)


def check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise ConfigError(f"--jobs: must be at least 1, got {jobs}")
    return jobs
