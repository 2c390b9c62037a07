"""The policies `kscand compare` runs, their parameters, and parameter sweeps.

Policies: none (no tiering); numab (numa_balancing=2 with demotion_enabled=1:
hint-fault promotion, kswapd demoting the inactive LRU tail) and numab-promote
(its promotion alone); damon (damo's mem_tier pair: paddr migrate_cold from the
top node, migrate_hot to it, goal-tuned quotas) and damon-hot (DAMON vaddr +
DAMOS migrate_hot alone); kscand (the engine with the scenario's tunables); and
the oracle (a reference row from the samples, not a run). A parameter is named
`policy.field` (numab.hot_threshold_ms, damon.quota_mib, kscand.scan_sleep_ms),
a bare kscand tunable name, or one of the kscand shorthands `scan_size` (a fixed
scan size: scan_size_bytes = its min = its max) and `scan_period` (a fixed scan
period: mm_scan_period_ms = its min = its max). The sweep value `default` leaves
the parameter as the scenario (or the policy) has it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kscand.core.stats import Stats
from kscand.core.tunables import Tunables, parse_assignment, tunable_fields
from kscand.errors import ConfigError
from kscand.evaluation.costs import CostModel, CpuCost, cost_of
from kscand.evaluation.damon import DamonParams, DamonPolicy
from kscand.evaluation.damos_tier import DamonTierParams, DamonTierPolicy
from kscand.evaluation.ledger import LedgerSummary
from kscand.evaluation.numab import NumabParams, NumabPolicy
from kscand.evaluation.numab_tier import NumabTieringPolicy
from kscand.sim.machine import SimMachine
from kscand.sim.run import KscandPolicy, Policy
from kscand.sim.scenario import Scenario

ORACLE = "oracle"
POLICY_NAMES = ("none", "numab", "numab-promote", "damon", "damon-hot", "kscand", ORACLE)
DEFAULT_POLICIES = ("none", "numab", "damon", "kscand", ORACLE)
# The parameters of each baseline (policy.field on the command line).
PARAMS: dict[str, type] = {"numab": NumabParams, "numab-promote": NumabParams,
                           "damon": DamonTierParams, "damon-hot": DamonParams}
# kscand shorthands: one value fixes a tunable and its adaptive clamps.
KSCAND_FIXED = {
    "scan_size": ("scan_size_bytes", "scan_size_min_bytes", "scan_size_max_bytes"),
    "scan_period": ("mm_scan_period_ms", "scan_period_min_ms", "scan_period_max_ms"),
}
NONE_SLEEP_NS = 100_000_000
ZERO_OK = ("min_nr_accesses", "min_age", "quota_mib", "weight_nr_accesses", "weight_age",
           "intervals_goal_aggrs", "promote_min_access_pct")
DEFAULT_VALUE = "default"  # a sweep value that leaves the parameter as it is


class NoPolicy:
    """No tiering: pages stay where they were placed."""

    def __init__(self) -> None:
        self.stats = Stats()

    def step(self) -> None:
        return None

    def sleep_ns(self) -> int:
        return NONE_SLEEP_NS


Overrides = tuple[tuple[str, str], ...]  # (parameter, value as given), in sweep order


@dataclass(frozen=True, slots=True)
class Sweep:
    """One --sweep: a parameter and the values to try."""

    policy: str
    param: str  # as given on the command line
    values: tuple[str, ...]


def parse_sweep(text: str) -> Sweep:
    """NAME=V1,V2,... -> Sweep; raises ConfigError with one line on bad input."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not sep or not name or not values:
        raise ConfigError(f"--sweep {text!r}: expected NAME=V1,V2,...")
    policy = policy_of_param(name)
    for value in values:  # validate every value now, not in a worker
        apply_overrides(policy, ((name, value),), Tunables())
    return Sweep(policy, name, values)


def policy_of_param(name: str) -> str:
    """Which policy a parameter name belongs to; raises ConfigError for unknown names."""
    policy, dot, field_name = name.partition(".")
    if dot:
        known = PARAMS
        if policy == "kscand":
            if policy_of_param(field_name) != "kscand" or "." in field_name:
                raise ConfigError(f"--sweep {name}: not a kscand tunable")
            return "kscand"
        if policy not in known:
            raise ConfigError(f"--sweep {name}: unknown policy {policy!r} "
                              f"({', '.join([*PARAMS, 'kscand'])})")
        fields = {f.name for f in dataclasses.fields(known[policy])}
        if field_name not in fields:
            raise ConfigError(
                f"--sweep {name}: unknown parameter (known: {', '.join(sorted(fields))})")
        return policy
    if name in KSCAND_FIXED or name in {f.name for f in tunable_fields()}:
        return "kscand"
    raise ConfigError(
        f"--sweep {name}: not a kscand tunable, scan_size, scan_period, numab.X or damon.X")


def _typed(cls: type, field_name: str, text: str, where: str) -> Any:
    f = next(f for f in dataclasses.fields(cls) if f.name == field_name)
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    try:
        if kind == "bool":
            if text.lower() not in ("0", "1", "true", "false"):
                raise ValueError(text)
            return text.lower() in ("1", "true")
        return float(text) if kind == "float" else int(text, 0)
    except ValueError:
        raise ConfigError(f"{where}: expected a {kind}, got {text!r}") from None


def apply_overrides(policy: str, overrides: Overrides, tunables: Tunables) -> Any:
    """The parameters of a run: the policy's defaults (kscand: tunables) with overrides."""
    overrides = tuple((n, v) for n, v in overrides if v.lower() != DEFAULT_VALUE)
    if policy == "kscand":
        changes: dict[str, Any] = {}
        for name, value in overrides:
            bare = name.removeprefix("kscand.")
            for target in KSCAND_FIXED.get(bare, (bare,)):
                _, changes[target] = parse_assignment(f"{target}={value}")
        try:
            return tunables.replace(**changes)
        except ConfigError as err:
            raise ConfigError(f"--sweep: {err}") from None
    cls: type = PARAMS.get(policy, type(None))
    if cls is type(None):
        return None
    values = {name.partition(".")[2]: _typed(cls, name.partition(".")[2], value, name)
              for name, value in overrides}
    params = cls(**values)
    check_params(params)
    return params


def check_params(params: NumabParams | DamonParams | DamonTierParams) -> None:
    """Range checks of a baseline's parameters (ConfigError naming the field)."""
    for f in dataclasses.fields(params):
        value = getattr(params, f.name)
        if isinstance(value, bool):
            continue
        if value < 0 or (value == 0 and f.name not in ZERO_OK):
            raise ConfigError(f"{f.name}: must be positive, got {value}")
    if isinstance(params, DamonParams):
        if params.aggr_us < params.sample_us:
            raise ConfigError("aggr_us: must be at least sample_us")
        if params.min_nr_regions < 3 or params.min_nr_regions > params.max_nr_regions:
            raise ConfigError("min_nr_regions: must be in [3, max_nr_regions]")
    if isinstance(params, DamonTierParams):
        if params.min_sample_us > params.max_sample_us:
            raise ConfigError("min_sample_us: must not exceed max_sample_us")
        if params.min_nr_regions < 3 or params.min_nr_regions > params.max_nr_regions:
            raise ConfigError("min_nr_regions: must be in [3, max_nr_regions]")
        if params.promote_min_access_pct > 100 or params.intervals_goal_bp > 10000:
            raise ConfigError("promote_min_access_pct, intervals_goal_bp: at most 100 %")
    if isinstance(params, NumabParams) and params.scan_period_min_ms > params.scan_period_max_ms:
        raise ConfigError("scan_period_min_ms: must not exceed scan_period_max_ms")


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run of a comparison: a policy with its parameter overrides."""

    policy: str
    overrides: Overrides = ()

    @property
    def label(self) -> str:
        return " ".join([self.policy, *(f"{n.removeprefix(self.policy + '.')}={v}"
                                        for n, v in self.overrides)])


def plan_runs(policies: list[str], sweeps: list[Sweep]) -> list[RunSpec]:
    """Every run: each policy once, or once per combination of the sweeps that concern it."""
    unknown = [p for p in policies if p not in POLICY_NAMES]
    if unknown:
        raise ConfigError(
            f"--policies: unknown policy {unknown[0]!r} (known: {', '.join(POLICY_NAMES)})")
    if not policies:
        raise ConfigError("--policies: at least one policy")
    for sweep in sweeps:
        if sweep.policy not in policies:
            raise ConfigError(f"--sweep {sweep.param}: policy {sweep.policy} is not in --policies")
    runs: list[RunSpec] = []
    for policy in dict.fromkeys(policies):
        mine = [s for s in sweeps if s.policy == policy]
        if not mine:
            runs.append(RunSpec(policy))
            continue
        for combo in itertools.product(*(s.values for s in mine)):
            runs.append(RunSpec(policy, tuple(zip((s.param for s in mine), combo, strict=True))))
    return runs


@dataclass(frozen=True, slots=True)
class PolicyKind:
    """How to build a policy and what its work costs."""

    payer: str  # "app", "daemon" or "none"
    build: Callable[[SimMachine, Scenario, Any, int], Policy]
    cost: Callable[[dict[str, int], LedgerSummary, CostModel], CpuCost]


def _kscand_cost(counters: dict[str, int], ledger: LedgerSummary, model: CostModel) -> CpuCost:
    return cost_of("daemon", model, ptes=counters.get("nr_kscand_ptes_scanned", 0),
                   migrated_pages=ledger.promoted_pages + ledger.demoted_pages,
                   migrate_calls=ledger.move_calls)


def _numab_cost(counters: dict[str, int], ledger: LedgerSummary, model: CostModel) -> CpuCost:
    """The application's (scan, hint faults, promotions) plus kswapd's (rmap walks,
    demotions: a kernel thread, the daemon column)."""
    app = cost_of("app", model, ptes=counters.get("numab_ptes_walked", 0),
                  faults=counters.get("numa_hint_faults", 0),
                  migrated_pages=ledger.promoted_pages)
    kswapd = cost_of("daemon", model, ptes=counters.get("kswapd_ptes_checked", 0),
                     migrated_pages=ledger.demoted_pages)
    return CpuCost(*(getattr(app, f.name) + getattr(kswapd, f.name)
                     for f in dataclasses.fields(CpuCost)))


def _damon_cost(counters: dict[str, int], ledger: LedgerSummary, model: CostModel) -> CpuCost:
    return cost_of("daemon", model, ptes=counters.get("damos_ptes_walked", 0),
                   samples=counters.get("damon_samples", 0),
                   migrated_pages=ledger.promoted_pages + ledger.demoted_pages,
                   migrate_calls=ledger.move_calls)


def _no_cost(counters: dict[str, int], ledger: LedgerSummary, model: CostModel) -> CpuCost:
    return CpuCost()


POLICY_KINDS: dict[str, PolicyKind] = {
    "none": PolicyKind("none", lambda m, sc, p, seed: NoPolicy(), _no_cost),
    "numab": PolicyKind("app", lambda m, sc, p, seed: NumabTieringPolicy(m, p, seed),
                        _numab_cost),
    "numab-promote": PolicyKind("app", lambda m, sc, p, seed: NumabPolicy(m, p, seed),
                                _numab_cost),
    "damon": PolicyKind("daemon", lambda m, sc, p, seed: DamonTierPolicy(m, p, seed),
                        _damon_cost),
    "damon-hot": PolicyKind("daemon", lambda m, sc, p, seed: DamonPolicy(m, p, seed),
                            _damon_cost),
    "kscand": PolicyKind("daemon", lambda m, sc, p, seed: KscandPolicy(m, p), _kscand_cost),
}
