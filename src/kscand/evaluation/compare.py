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
from kscand.sim.metrics import Sample
from kscand.sim.run import Policy, SimReport, hot_fraction, run_scenario, time_to_fraction
from kscand.sim.scenario import Scenario
from kscand.sim.workloads import check_trace_windows, load_trace

FRACTIONS = (0.5, 0.9)  # time to these fractions of the oracle's top-tier share
PROGRESS_STEP = 0.01  # a worker reports progress at most every 1 %
POLL_S = 0.2

Progress = Callable[[int, float], None]  # (run index, fraction done)
Pool = Callable[[list["RunTask"], Progress | None], list["RunResult"]]  # e.g. raypool's


@dataclass
class RunResult:
    """One policy run (or a bound's reference row), summarised; JSON-ready.

    acc-wt (aw_) values are access-weighted means over the run's samples
    (kscand.sim.metrics): each sample counts by the accesses it stands for.
    """

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
    mean_latency_ns: float  # time average over the samples
    ledger: dict[str, int] | None  # LedgerSummary.as_dict(); None for the bounds
    cpu: dict[str, float] | None  # CpuCost.as_dict(); None for the bounds
    counters: dict[str, int]
    timeline: list[dict[str, float]]
    wall_s: float = 0.0
    peak_rss_mib: float = 0.0
    aw_top_share: float = 0.0
    aw_oracle_share: float = 0.0
    aw_static_best_share: float = 0.0  # the static best in hindsight's access-weighted share
    aw_latency_ns: float = 0.0
    of_static_best: float = 0.0  # aw_top_share / aw_static_best_share
    aw_of_oracle: float = 0.0  # aw_top_share / aw_oracle_share
    end_s: float = 0.0  # when the run stopped (duration, or the end of its traces)
    trace_end_s: float | None = None
    top_accesses: float = 0.0  # accesses promoted pages served while on the top tier
    accesses_per_promotion: float | None = None  # top_accesses / promoted pages
    min_traffic: dict[str, int] | None = None  # MinTraffic: promote_pages, demote_pages
    traffic_ratio: float | None = None  # (promoted + demoted) / minimum; None if minimum 0
    time_varying: bool = False  # whether any workload's rates changed during the run

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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunResult:
        """A RunResult from to_json()'s dict (the derived ratios dropped)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


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

    def observe(sample: Sample, weight_s: float) -> None:
        made[0].ledger.observe(sample, weight_s)

    report = run_scenario(scenario, seed=task.seed, progress=progress, policy=factory,
                          observers=(observe,), hindsight=True)
    policy = made[0]
    ledger = policy.ledger.summary()
    cpu = kind.cost(report.counters, ledger, task.costs)
    cpu_at = policy.cpu_at + [(cpu.total_ns, cpu.app_ns)] * max(
        0, len(report.samples) - len(policy.cpu_at))
    result = summarize(
        report, spec.label, spec.policy, list(spec.overrides), kind.payer,
        params_dict(params), ledger.as_dict(), cpu.as_dict(), cpu_at,
    )
    result.top_accesses = policy.ledger.top_accesses
    if ledger.promoted_pages:
        result.accesses_per_promotion = policy.ledger.top_accesses / ledger.promoted_pages
    if report.static_best is not None:
        minimum = report.static_best.minimum_traffic(policy.machine)
        result.min_traffic = {"promote_pages": minimum.promote_pages,
                              "demote_pages": minimum.demote_pages}
        if minimum.total_pages:
            traffic = ledger.promoted_pages + ledger.demoted_pages
            result.traffic_ratio = traffic / minimum.total_pages
    result.time_varying = report.time_varying
    return result


def params_dict(params: Any) -> dict[str, Any] | None:
    if params is None:
        return None
    return dataclasses.asdict(params)


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


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
    best = report.static_best
    best_rate = best.top_rate_per_s if best is not None else [0.0] * len(samples)
    timeline = [
        {
            "t_s": round(s.t_s, 6),
            "top_share": round(s.top_share, 6),
            "oracle_share": round(s.oracle_share, 6),
            "static_best_share": round(_ratio(best_top, s.rate_per_s), 6),
            "hot_on_top": round(hot_fraction(s), 6),
            "latency_ns": round(s.latency_ns, 3),
            "rate_per_s": round(s.rate_per_s, 3),
            "weight_s": round(weight_s, 6),
            "promoted_pages": promoted,
            "cpu_ns": round(cpu_ns, 1),
            "app_cpu_ns": round(app_ns, 1),
        }
        for s, weight_s, best_top, promoted, (cpu_ns, app_ns) in zip(
            samples, report.weights_s, best_rate, report.promoted_pages_at, cpu_at, strict=False)
    ]
    aw_top = report.access_weighted([s.top_share for s in samples])
    aw_oracle = report.access_weighted([s.oracle_share for s in samples])
    aw_best = report.access_weighted([_ratio(b, s.rate_per_s)
                                      for b, s in zip(best_rate, samples, strict=True)])
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
        aw_top_share=aw_top,
        aw_oracle_share=aw_oracle,
        aw_static_best_share=aw_best,
        aw_latency_ns=report.access_weighted([s.latency_ns for s in samples]),
        of_static_best=_ratio(aw_top, aw_best),
        aw_of_oracle=_ratio(aw_top, aw_oracle),
        end_s=report.end_s,
        trace_end_s=report.trace_end_s,
    )


ORACLE_LABEL = "oracle"
CLAIRVOYANT_LABEL = "oracle (per-window, clairvoyant)"
STATIC_BEST = "static-best"
STATIC_BEST_LABEL = "static best (hindsight)"
BOUNDS = (STATIC_BEST, ORACLE)


def tier_latencies_ns(scenario: Scenario) -> tuple[float, float]:
    """(mean top-tier node latency, mean slow-tier node latency): a bound row's latency
    puts its top-tier share at the first and the rest at the second (exact on two nodes)."""
    top = top_tier_from_tiers({n.nid: n.tier for n in scenario.nodes},
                              {n.nid: n.cpus for n in scenario.nodes})
    top_lat = [n.latency_ns for n in scenario.nodes if n.nid in top]
    slow_lat = [n.latency_ns for n in scenario.nodes if n.nid not in top] or top_lat
    return sum(top_lat) / len(top_lat), sum(slow_lat) / len(slow_lat)


def bound_result(scenario: Scenario, reference: RunResult, which: str) -> RunResult:
    """A bound's reference row from any run's samples (neither bound depends on the policy):
    which = ORACLE (the per-sample oracle; clairvoyant when rates changed during the run)
    or STATIC_BEST (the best static placement in hindsight)."""
    lat_top, lat_slow = tier_latencies_ns(scenario)
    key = "oracle_share" if which == ORACLE else "static_best_share"
    timeline = [
        {**p, "top_share": p[key], "hot_on_top": 1.0, "promoted_pages": 0,
         "cpu_ns": 0.0, "app_cpu_ns": 0.0,
         "latency_ns": round(p[key] * lat_top + (1 - p[key]) * lat_slow, 3)}
        for p in reference.timeline
    ]
    n = max(1, len(timeline))
    weights = [p["rate_per_s"] * p["weight_s"] for p in timeline]

    def aw(values: list[float]) -> float:
        return _ratio(sum(v * w for v, w in zip(values, weights, strict=True)), sum(weights))

    shares = [p["top_share"] for p in timeline]
    aw_share = aw(shares)
    series = [(p["t_s"], p["top_share"], p["oracle_share"]) for p in timeline]
    label = STATIC_BEST_LABEL
    if which == ORACLE:
        label = CLAIRVOYANT_LABEL if reference.time_varying else ORACLE_LABEL
    return RunResult(
        label=label, policy=which, overrides=[], payer="none", params=None,
        final_top_share=shares[-1] if shares else 0.0,
        final_oracle_share=reference.final_oracle_share,
        mean_top_share=sum(shares) / n,
        mean_oracle_share=reference.mean_oracle_share,
        t50_s=time_to_fraction(series, FRACTIONS[0]),
        t90_s=time_to_fraction(series, FRACTIONS[1]),
        final_latency_ns=timeline[-1]["latency_ns"] if timeline else 0.0,
        mean_latency_ns=sum(p["latency_ns"] for p in timeline) / n,
        ledger=None, cpu=None, counters={}, timeline=timeline,
        aw_top_share=aw_share,
        aw_oracle_share=reference.aw_oracle_share,
        aw_static_best_share=reference.aw_static_best_share,
        aw_latency_ns=aw([p["latency_ns"] for p in timeline]),
        of_static_best=_ratio(aw_share, reference.aw_static_best_share),
        aw_of_oracle=_ratio(aw_share, reference.aw_oracle_share),
        end_s=reference.end_s, trace_end_s=reference.trace_end_s,
        min_traffic=reference.min_traffic if which == STATIC_BEST else None,
        time_varying=reference.time_varying,
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
    pool: Pool | None = None,
) -> Comparison:
    """Run every RunSpec (the oracle row comes from the first run's samples); on pool
    (a cluster: kscand.evaluation.raypool) instead of local workers when given."""
    start = time.perf_counter()
    seed = scenario.seed if seed is None else seed
    check_traces(scenario)
    specs = [r for r in runs if r.policy != ORACLE] or [RunSpec("none")]
    tasks = [RunTask(i, spec, scenario, seed, costs) for i, spec in enumerate(specs)]
    if pool is not None:
        results = pool(tasks, progress)
    elif jobs <= 1 or len(tasks) == 1:
        results = [run_one(t, _bind(progress, t.index)) for t in tasks]
    else:
        results = _run_parallel(tasks, min(jobs, len(tasks)), progress)
    ran_policies = {r.policy for r in runs}
    shown = [r for r in results if r.policy in ran_policies]
    # Both bounds, always: the table's "% of static best" and "% of oracle" refer to them.
    shown += [bound_result(scenario, results[0], which) for which in BOUNDS]
    return Comparison(scenario.name, scenario.description, seed, results[0].end_s, sweeps,
                      costs, shown, time.perf_counter() - start)


def check_traces(scenario: Scenario) -> None:
    """Refuse trace workloads whose windows would not fit the memory limit before any run
    starts (and load each trace once here: the workers then map its cache)."""
    for proc in scenario.processes:
        for vma in proc.vmas:
            w = vma.workload
            if w.kind == "trace":
                check_trace_windows(load_trace(w.path), w.trace_pid, w.window_s, w.path)


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
