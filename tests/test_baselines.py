"""Baseline policies: each behaves as its kernel mechanism says, on tiny scenarios."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from simkit import scenario

from kscand.evaluation import damon as dm
from kscand.evaluation.compare import RunTask, run_one
from kscand.evaluation.costs import DEFAULT_COSTS
from kscand.evaluation.ledger import PromotionLedger
from kscand.evaluation.numab import NumabParams, NumabPolicy, PromotionGate, task_scan_min_ms
from kscand.evaluation.policies import NoPolicy, RunSpec
from kscand.machine import PAGE_SIZE
from kscand.sim.machine import SimMachine
from kscand.sim.run import run_scenario

MiB = 1 << 20
# A top tier too small for pgdat_free_space_enough() (it wants 1 GiB free): every
# promotion goes through the hot threshold and the rate limit.
SMALL_TOP = [
    {"nid": 0, "capacity": "512MiB", "cpus": True, "tier": 4, "latency_ns": 80},
    {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67, "latency_ns": 300},
]
BIG_TOP = [
    {"nid": 0, "capacity": "2GiB", "cpus": True, "tier": 4, "latency_ns": 80},
    {"nid": 1, "capacity": "2GiB", "cpus": False, "tier": 67, "latency_ns": 300},
]


def run_policy(machine: SimMachine, policy: Any, until_s: float) -> PromotionLedger:
    ledger = PromotionLedger(machine)
    while machine.clock.now_s < until_s:
        policy.step()
        ledger.drain()
        machine.clock.sleep_ns(policy.sleep_ns())
    return ledger


# --- NUMA balancing ----------------------------------------------------------------------


def test_scan_period_is_task_scan_min() -> None:
    p = NumabParams()
    assert task_scan_min_ms(8 << 18, p) == 100  # 8 GiB: 32 windows, floored at 2560 MB/s
    assert task_scan_min_ms(1 << 18, p) == 250  # 1 GiB: 4 windows of 256 MB
    assert task_scan_min_ms(1000, p) == 1000  # under one window: scan_period_min
    assert task_scan_min_ms(0, p) == 1000


def gate(**kw: Any) -> PromotionGate:
    return PromotionGate(NumabParams(**kw), capacity_pages=(512 * MiB) // PAGE_SIZE)


def test_gate_promotes_only_faults_under_the_threshold() -> None:
    g = gate()
    g.th_start_s = 0.0  # no threshold adjustment in this window
    t = np.array([0.1, 0.2, 0.3, 0.4])
    latency = np.array([500.0, 1500.0, 999.0, 1000.0])
    promote = g.decide(t, latency, np.ones(4, dtype=np.int64), free_pages=100_000)
    assert promote.tolist() == [True, False, True, False]
    assert g.nr_cand == 2 and g.counts["numab_reject_latency"] == 2


def test_gate_with_enough_free_memory_promotes_every_fault() -> None:
    g = PromotionGate(NumabParams(), capacity_pages=(4 << 30) // PAGE_SIZE)
    free = g.enough_free_pages + 3  # room above the mark for 3 more pages
    latency = np.full(5, 50_000.0)  # far above any threshold
    promote = g.decide(np.arange(5.0), latency, np.ones(5, dtype=np.int64), free)
    assert promote.tolist() == [True, True, True, False, False]
    assert g.nr_cand_nrl == 3 and g.nr_cand == 0


def test_gate_rate_limit_holds_in_every_window() -> None:
    g = gate(promote_rate_limit_mbps=1)  # 256 pages per second
    limit = g.rate_limit_pages
    t = np.sort(np.random.default_rng(1).uniform(0, 3, 5000))
    promote = g.decide(t, np.zeros(5000), np.ones(5000, dtype=np.int64), 100_000)
    assert limit == 256
    window_start = t[0]
    for _ in range(4):  # windows start at the first candidate more than 1 s after the last
        in_window = (t >= window_start) & (t <= window_start + 1.0)
        assert np.count_nonzero(promote & in_window) == limit
        after = t > window_start + 1.0
        if not after.any():
            break
        window_start = t[np.argmax(after)]
    assert g.counts["numab_reject_rate_limit"] == 5000 - np.count_nonzero(promote)


def test_threshold_adjusts_towards_the_rate_limit() -> None:
    g = gate(promote_rate_limit_mbps=1, scan_period_max_ms=1000)
    g.adjust_threshold(0.0)  # few candidates: the threshold rises by 1/8 of 1000 ms
    assert g.threshold_ms == 1125
    for step in range(1, 20):
        g.adjust_threshold(float(step) * 1.01)
    assert g.threshold_ms == 2000  # capped at 2 x hot_threshold_ms
    for step in range(20, 40):
        g.nr_cand += 10 * g.rate_limit_pages  # far more candidates than the limit
        g.adjust_threshold(float(step) * 1.01)
    assert g.threshold_ms == 125  # floored at one step


def numab_machine(**params: Any) -> tuple[SimMachine, NumabPolicy]:
    sc = scenario(
        [{"name": "app", "placement": "slow", "vmas": [
            {"kind": "anon", "size": "32MiB",
             "workload": {"kind": "uniform", "rate_per_s": 8192 * 50.0}},  # 50/s per page
            {"kind": "anon", "size": "32MiB", "workload": {"kind": "idle"}},
        ]}],
        nodes=SMALL_TOP,
    )
    machine = SimMachine(sc)
    return machine, NumabPolicy(machine, NumabParams(**params), seed=3)


def test_numab_promotes_hint_faulted_hot_pages_only_after_the_scan_delay() -> None:
    machine, policy = numab_machine()
    ledger = run_policy(machine, policy, 0.95)
    assert ledger.promoted_pages == 0 and policy.stats.total["numa_pte_updates"] == 0
    ledger_end = run_policy(machine, policy, 3.0)
    hot_vma, idle_vma = machine.alive()[0].vmas
    total = policy.stats.total
    assert total["numa_pte_updates"] == 16384  # both VMAs marked: 2 x 8192 pages
    assert total["numa_hint_faults"] > 8000  # the hot pages faulted, the idle ones never
    assert ledger_end.promoted_pages == total["pgpromote_success"] == 8192
    assert np.all(hot_vma.nid == 0) and np.all(idle_vma.nid == 1)
    assert total["pgpromote_candidate"] == 8192 and total["pgpromote_candidate_nrl"] == 0


def test_numab_rejects_faults_over_the_threshold() -> None:
    machine, policy = numab_machine(hot_threshold_ms=1)  # faults come ~20 ms after marking
    run_policy(machine, policy, 3.0)
    total = policy.stats.total
    assert total["numa_hint_faults"] > 0 and total["pgpromote_success"] < total[
        "numa_hint_faults"] // 4
    assert total["numab_reject_latency"] > 0


def test_numab_rate_limit_holds_over_a_run() -> None:
    machine, policy = numab_machine(promote_rate_limit_mbps=2)  # 512 pages per second
    run_policy(machine, policy, 4.0)
    total = policy.stats.total
    # promotion starts after the 1 s scan delay: at most 3 full windows plus one partial
    assert 0 < total["pgpromote_success"] <= 4 * 512
    assert total["numab_reject_rate_limit"] > 0


def test_numab_hint_fault_costs_are_the_applications() -> None:
    sc = scenario([{"name": "app", "placement": "slow", "vmas": [{"kind": "anon", "size": "8MiB"}],
                    "workload": {"kind": "uniform", "rate_per_s": 1e6}}], nodes=SMALL_TOP,
                  duration_s=2)
    result = run_one(RunTask(0, RunSpec("numab"), sc, 1, DEFAULT_COSTS))
    assert result.payer == "app" and result.cpu is not None
    assert result.cpu["fault_ns"] == result.counters["numa_hint_faults"] * 2000.0
    assert result.cpu["app_ns"] == result.cpu["total_ns"] > 0 and result.cpu["daemon_ns"] == 0


# --- DAMON ---------------------------------------------------------------------------------


def test_three_regions_drop_the_two_largest_gaps() -> None:
    vmas = [(0, 10), (12, 20), (100, 110), (1000, 1010), (1011, 1020)]
    assert dm.three_regions(vmas) == [(0, 20), (100, 110), (1000, 1020)]
    assert dm.three_regions([(0, 10)]) == [(0, 10)]


def test_merge_and_split_keep_the_covered_range() -> None:
    regions = dm.Regions.of([(0, 40960), (40960, 81920), (81920, 163840)])
    regions.nr_accesses[:] = [5, 6, 15]
    merged = dm.merge_regions(regions, thres=2, sz_limit=1 << 30)
    assert merged.start.tolist() == [0, 81920] and merged.end.tolist() == [81920, 163840]
    assert merged.nr_accesses.tolist() == [5, 15]  # size-weighted average, rounded down
    small_limit = dm.merge_regions(regions, thres=2, sz_limit=50_000)
    assert len(small_limit) == 3
    split = dm.split_regions(merged, 3, np.random.default_rng(0))
    assert len(split) > len(merged)
    assert split.start[0] == 0 and split.end[-1] == 163840
    assert np.all(split.start[1:] == split.end[:-1]) and np.all(split.size % PAGE_SIZE == 0)


def test_hot_score_rises_with_accesses_and_age() -> None:
    p = dm.DamonParams()
    assert dm.hot_score(0, 0, p) < dm.hot_score(5, 0, p) < dm.hot_score(20, 0, p)
    assert dm.hot_score(5, 100, p) > dm.hot_score(5, 0, p)
    assert dm.hot_score(0, 100, p) < dm.hot_score(0, 0, p)  # idle for long: colder
    assert 0 <= dm.hot_score(20, 10_000, p) <= dm.DAMOS_MAX_SCORE


def damon_machine(quota_mib: int) -> tuple[SimMachine, dm.DamonPolicy]:
    sc = scenario(
        [{"name": "gups", "placement": "slow", "vmas": [{"kind": "anon", "size": "256MiB"}],
          # 10 % contiguous hot set, each hot page ~1000 accesses/s: seen by 5 ms samples
          "workload": {"kind": "gups", "hot_fraction": 0.1, "hot_share": 0.99,
                       "rate_per_s": 6.6e6}}],
        nodes=BIG_TOP,
    )
    machine = SimMachine(sc)
    return machine, dm.DamonPolicy(machine, dm.DamonParams(quota_mib=quota_mib), seed=5)


def test_damon_finds_the_hot_region_and_migrates_it() -> None:
    machine, policy = damon_machine(quota_mib=64)
    ledger = run_policy(machine, policy, 6.0).summary()
    vma = machine.alive()[0].vmas[0]
    hot = vma.workload.hot(0.0)
    on_top = vma.nid == 0
    assert np.count_nonzero(hot & on_top) > 0.8 * np.count_nonzero(hot)
    # Regions that straddle the hot run's edges carry cold neighbours along (the young
    # filter passes cold pages touched since they were last made old), but promotion is
    # strongly enriched for the hot 10 %: random picks would be 90 % cold.
    assert ledger.cold_at_promotion_pages < 0.5 * ledger.promoted_pages
    assert 0 < len(policy.targets[machine.alive()[0].proc.pid].regions) <= 1000


def test_damon_stays_within_its_quota() -> None:
    machine, policy = damon_machine(quota_mib=4)
    run_policy(machine, policy, 5.0)
    total = policy.stats.total
    nr_windows = 5  # applied every 1 s (the first apply at 1 s), a 4 MiB quota each
    assert 0 < total["damos_sz_tried"] <= nr_windows * 4 * MiB
    assert total["damos_sz_applied"] <= total["damos_sz_tried"]
    assert total["damos_qt_exceeds"] > 0


# --- none, and the oracle as an upper bound --------------------------------------------------


def test_none_never_moves() -> None:
    sc = scenario([{"name": "app", "placement": "slow", "vmas": [{"kind": "anon", "size": "8MiB"}],
                    "workload": {"kind": "uniform", "rate_per_s": 1e6}}], duration_s=1)
    machine = SimMachine(sc)
    ledger = PromotionLedger(machine)
    report = run_scenario(sc, machine=machine, policy=lambda m, s: NoPolicy())
    ledger.drain()
    assert ledger.promoted_pages == 0 and not machine.move_log
    assert {s.top_share for s in report.samples} == {0.0}


@pytest.mark.parametrize("policy", ["none", "numab", "numab-promote", "damon", "damon-hot",
                                    "kscand"])
def test_no_policy_beats_the_oracle(policy: str) -> None:
    sc = scenario(
        [{"name": "kv", "placement": "slow",
          "vmas": [{"kind": "anon", "size": "96MiB"}, {"kind": "anon-thp", "size": "32MiB"}],
          "workload": {"kind": "zipf", "skew": 1.0, "hot_share": 0.8, "rate_per_s": 2e6}},
         {"name": "filler", "placement": "fast", "vmas": [{"kind": "anon", "size": "40MiB"}],
          "workload": {"kind": "uniform", "rate_per_s": 1e3}}],
        nodes=[{"nid": 0, "capacity": "96MiB", "cpus": True, "tier": 4, "latency_ns": 80},
               {"nid": 1, "capacity": "256MiB", "cpus": False, "tier": 67, "latency_ns": 300}],
        duration_s=6, sample_interval_s=0.25,
        tunables={"target_free_min_pct": 0.0, "scan_delay_ms": 0, "mm_scan_period_ms": 600},
    )
    result = run_one(RunTask(0, RunSpec(policy), sc, 2, DEFAULT_COSTS))
    for point in result.timeline:
        assert point["top_share"] <= point["oracle_share"] + 1e-9
    if policy not in ("none", "damon"):  # damon's goal-tuned quota ramps from 1 byte a second
        assert result.final_top_share > 0.2  # it did something worth bounding


def test_next_access_follows_the_rate_or_the_sweep() -> None:
    from kscand.evaluation.numab import epoch_boundary_s, next_access_s
    from kscand.sim import workloads as wl

    sc = scenario([{"name": "app", "placement": "slow", "vmas": [
        {"kind": "anon", "size": "4MiB", "workload": {"kind": "sequential", "pages_per_s": 1024}},
        {"kind": "anon", "size": "4MiB", "workload": {"kind": "uniform", "rate_per_s": 1024 * 10}},
    ]}])
    stream, uniform = SimMachine(sc).alive()[0].vmas
    rng = np.random.default_rng(0)
    # 1024 pages swept at 1024 pages/s: page 10 is touched at 10/1024 s, then every second.
    got = next_access_s(stream, np.array([10, 600]), 0.5, rng)
    assert got.tolist() == pytest.approx([1 + 10 / 1024, 600 / 1024])
    waits = next_access_s(uniform, np.arange(1024), 2.0, rng) - 2.0
    assert float(waits.mean()) == pytest.approx(0.1, rel=0.1)  # exponential, 10 accesses/s
    moving = wl.moving_hotset(100, 1e3, 0.1, 0.9, 2.5, 0.1, rng)
    assert epoch_boundary_s(moving, 1.0, 4.0) == pytest.approx(2.5, abs=1e-6)
