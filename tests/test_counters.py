"""Typed counters: only enum members and labelled family counters are counted; each
labelled family reaches the Prometheus text with its label; what a policy promoted is
measured by the machine, the same for kscand and the baselines."""

from __future__ import annotations

import enum
import errno
import json
import pickle
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from simkit import scenario

from kscand.core import counters
from kscand.core.counters import EngineFamily, Labelled, Series, family_of
from kscand.core.migrator import move_fail_counter
from kscand.core.stats import Stats
from kscand.daemon.metrics import REASON_FAMILIES
from kscand.daemon.prometheus import total_families
from kscand.evaluation.compare import RunTask, run_one
from kscand.evaluation.costs import DEFAULT_COSTS
from kscand.evaluation.counters import BaselineFamily, DamosStat, WakeReason
from kscand.evaluation.policies import RunSpec
from kscand.machine import PAGE_SIZE, ProcessId

PROC = ProcessId(100, 1)


class NotACounter(enum.StrEnum):
    MIGRATED = "nr_kscand_migrated"


@pytest.mark.parametrize("name", ["nr_kscand_migrated", "something_new",
                                  NotACounter.MIGRATED, "promoted_pages_node0"])
def test_stats_add_rejects_a_name_that_is_not_a_counter(name: Any) -> None:
    stats = Stats()
    for value in (1, 0):  # rejected before the zero shortcut, too
        with pytest.raises(TypeError, match="CounterName or CounterFamily"):
            stats.add(PROC, name, value)
    assert not stats.total and not stats.per_proc


def test_families_take_exactly_their_labels() -> None:
    stats = Stats()
    with pytest.raises(TypeError, match="takes the labels node, not none"):
        stats.add(PROC, EngineFamily.PROMOTED_PAGES_NODE, 1)
    with pytest.raises(TypeError, match="takes the labels node, not nid"):
        stats.add(PROC, EngineFamily.PROMOTED_PAGES_NODE, 1, nid=0)
    with pytest.raises(TypeError, match="takes no labels"):
        stats.add(PROC, Series.MIGRATED, 1, node=0)
    stats.add(PROC, EngineFamily.PROMOTED_PAGES_NODE, 3, node=1)
    stats.add(None, EngineFamily.PROMOTED_PAGES_NODE.key(node=1), 2)  # a built key
    assert stats.total == {"promoted_pages_node1": 5} and stats.of(PROC) == {
        "promoted_pages_node1": 3}


def test_labelled_keys_are_their_names_in_json_and_survive_pickle() -> None:
    stats = Stats()
    stats.add(PROC, move_fail_counter(-errno.ENOMEM), 4)
    stats.add(None, BaselineFamily.DAMOS_SCHEME, 7, scheme="promote", stat=DamosStat.NR_TRIED)
    stats.add(None, BaselineFamily.KSWAPD_WAKE, reason=WakeReason.ALLOC)
    snapshot = stats.snapshot()
    text = json.dumps(snapshot, sort_keys=True)
    assert '"damos_promote_nr_tried": 7' in text and '"kswapd_wake_alloc": 1' in text
    assert '"move_fail_enomem": 4' in text and '"nr_kscand_migrated": 0' in text
    back = pickle.loads(pickle.dumps(snapshot))  # compare's worker processes send reports
    assert back == snapshot
    key = next(k for k in back if k == "damos_promote_nr_tried")
    assert isinstance(key, Labelled) and key.family is BaselineFamily.DAMOS_SCHEME
    assert key.labels == (("scheme", "promote"), ("stat", "nr_tried"))
    assert family_of(key) is BaselineFamily.DAMOS_SCHEME and family_of(Series.MIGRATED) is None


class _Totals(Collector):
    def __init__(self, totals: dict[str, int]) -> None:
        self.totals = totals

    def collect(self) -> Any:
        return total_families(self.totals)


def exposition(stats: Stats) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The Prometheus text of stats' totals, parsed: (sample, sorted labels) -> value."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Totals(stats.snapshot()))
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.mark.parametrize(("family", "label", "metric", "factor"), [
    (EngineFamily.PROMOTED_PAGES_NODE, ("node", "2"), "kscand_promoted_bytes_total", PAGE_SIZE),
    (EngineFamily.MOVE_FAILED, ("reason", "ebusy"), "kscand_move_failed_pages_total", 1),
    (EngineFamily.DEMOTE_MOVE_FAILED, ("reason", "enomem"), "kscand_demote_failed_pages_total",
     1),
])
def test_each_engine_family_reaches_prometheus_with_its_label(
    family: EngineFamily, label: tuple[str, str], metric: str, factor: int,
) -> None:
    stats = Stats()
    stats.add(PROC, family, 5, **dict([label]))
    samples = exposition(stats)
    assert samples[(metric, (label,))] == 5 * factor
    assert samples[("nr_kscand_migrated_total", ())] == 0  # the series, always present


def test_every_engine_family_is_mapped_and_every_reason_ends_its_name() -> None:
    from kscand.daemon.metrics import LABELLED_FAMILIES

    assert set(LABELLED_FAMILIES) == set(EngineFamily)
    for kind, _metric in REASON_FAMILIES.items():
        for member in kind:
            assert member.value.endswith("_" + member.name.lower()), member
    names = [m.value for kind in vars(counters).values()
             if isinstance(kind, type) and issubclass(kind, counters.CounterName) for m in kind]
    assert len(names) == len(set(names))  # no two members count under one name


# -- what a policy promoted: measured by the machine, for every policy --------------------

def two_tier() -> Any:
    return scenario([
        {"name": "cold", "placement": "fast", "vmas": [
            {"kind": "anon", "size": "48MiB", "workload": {"kind": "idle"}}]},
        {"name": "hot", "placement": "slow", "vmas": [
            {"kind": "anon", "size": "16MiB",
             "workload": {"kind": "uniform", "rate_per_s": 4096 * 50.0}}]},
    ], nodes=[{"nid": 0, "capacity": "64MiB", "cpus": True, "tier": 4, "latency_ns": 80},
              {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67, "latency_ns": 300}],
        duration_s=4)


@pytest.mark.parametrize("policy", ["kscand", "numab", "numab-promote", "damon-hot", "damon"])
def test_promoted_is_the_machines_count_and_baselines_keep_off_kscands_counters(
    policy: str,
) -> None:
    result = run_one(RunTask(0, RunSpec(policy), two_tier(), 1, DEFAULT_COSTS))
    assert result.ledger is not None
    promoted = result.ledger["promoted_pages"]
    assert promoted > 0 or policy == "damon"  # the DAMOS pair's quota ramps for longer
    assert result.timeline[-1]["promoted_pages"] == promoted  # the runner reads the machine
    kscand_counted = {n: v for n, v in result.counters.items() if n.startswith("nr_kscand_") and v}
    if policy == "kscand":
        assert kscand_counted["nr_kscand_migrated"] == promoted
    else:
        assert kscand_counted == {}  # the series' names stay kscand's
