"""The baselines' demotion partners: kswapd's LRU demotion (numab) and DAMON's mem_tier pair."""

from __future__ import annotations

from typing import Any

import numpy as np
from simkit import scenario

from kscand.evaluation.compare import RunTask, run_one
from kscand.evaluation.costs import DEFAULT_COSTS
from kscand.evaluation.damos_kdamond import Kdamond, feed_loop_next_input
from kscand.evaluation.damos_tier import DamonTierParams, DamonTierPolicy
from kscand.evaluation.ledger import PromotionLedger
from kscand.evaluation.lru import ACTIVE, INACTIVE, Watermarks
from kscand.evaluation.numab import NumabParams, NumabPolicy
from kscand.evaluation.numab_tier import NumabTieringPolicy
from kscand.evaluation.policies import PARAMS, POLICY_KINDS, RunSpec, apply_overrides, plan_runs
from kscand.sim.machine import SimMachine

HOT = {"kind": "uniform", "rate_per_s": 1e9}
IDLE = {"kind": "idle"}


def nodes(top: str, slow: str = "1GiB") -> list[dict[str, Any]]:
    return [{"nid": 0, "capacity": top, "cpus": True, "tier": 4, "latency_ns": 80},
            {"nid": 1, "capacity": slow, "cpus": False, "tier": 67, "latency_ns": 300}]


def vma(size: str, workload: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "anon", "size": size, "workload": workload}


def one_process(placement: str, vmas: list[dict[str, Any]], top: str = "128MiB") -> SimMachine:
    sc = scenario([{"name": "p", "placement": placement, "vmas": vmas}], nodes=nodes(top))
    return SimMachine(sc)


# --- kswapd and the LRU ----------------------------------------------------------------------


def test_watermarks_of_a_128_mib_node() -> None:
    assert Watermarks.of(32768) == Watermarks(32, 65, 98, 131)


def kswapd_on_full_node() -> tuple[SimMachine, NumabTieringPolicy]:
    # 1 MiB hot (256 pages, at the LRU tail: faulted first), 127 MiB idle: the node is full.
    machine = one_process("fast", [vma("1MiB", HOT), vma("127MiB", IDLE)])
    policy = NumabTieringPolicy(machine, NumabParams(), seed=1)
    policy._sync_lru()
    machine.clock.sleep_ns(1_000_000_000)  # the hot pages get accessed
    return machine, policy


def test_kswapd_demotes_the_inactive_tail_until_the_promo_watermark_holds() -> None:
    machine, policy = kswapd_on_full_node()
    kswapd = policy.kswapd
    assert kswapd.free_pages() == 0 and policy.lru.nr_pages[INACTIVE] == 32768
    kswapd.wakeup("alloc")
    demoted = kswapd.run()
    # Priorities 12..8 scan 8+16+32+64+128 = 248 tail pages: the 256 hot ones but 8,
    # all young, rotated with PG_referenced set. Priority 7 (32768 >> 7 = 256 to scan,
    # 4 passes of 32 wanted for nr_to_reclaim = 98): 8 hot kept, 120 idle demoted; free
    # 120 <= 131 (WMARK_PROMO), so a second round at priority 7: 128 more. 248 > 131.
    assert demoted == 248 == policy.stats.total["pgdemote_kswapd"]
    assert kswapd.free_pages() == 248 > kswapd.wmark.promo_pages
    hot, idle = machine.alive()[0].vmas
    assert np.all(hot.nid == 0)  # every accessed page kept
    assert np.all(idle.nid[:248] == 1) and np.all(idle.nid[248:] == 0)  # the oldest idle ones
    assert policy.lru.vmas[0].referenced.all()  # the hot pages: PG_referenced
    assert policy.lru.nr_pages[INACTIVE] == 32768 - 248 and policy.lru.nr_pages[ACTIVE] == 0
    assert policy.stats.total["pgscan_kswapd"] == 248 + 128 + 128  # two rounds at priority 7


def test_kswapd_demotes_nothing_above_the_watermark() -> None:
    machine = one_process("fast", [vma("1MiB", HOT), vma("126MiB", IDLE)])  # 1 MiB free
    policy = NumabTieringPolicy(machine, NumabParams(), seed=1)
    policy._sync_lru()
    policy.kswapd.wakeup("promote")
    assert not policy.kswapd.woken and policy.kswapd.run() == 0
    for _ in range(300):  # 3 s of steps: no fault is short of memory, nothing is demoted
        policy.step()
        machine.clock.sleep_ns(policy.sleep_ns())
    assert policy.stats.total["pgdemote_kswapd"] == 0


def test_kswapd_activates_a_page_seen_twice() -> None:
    machine, policy = kswapd_on_full_node()
    lru = policy.lru
    keys = lru.isolate_tail(INACTIVE, 4)  # 4 hot pages, first pass: PG_referenced, kept
    assert policy.kswapd.shrink_folio_list(keys) == 0 and lru.nr_pages[ACTIVE] == 0
    machine.clock.sleep_ns(10_000_000)
    assert lru.isolate_tail(INACTIVE, 32768 - 4).shape[0] == 32768 - 4
    assert policy.kswapd.shrink_folio_list(keys.copy()) == 0  # young again + referenced
    assert lru.nr_pages[ACTIVE] == 4


def numab_run(policy_cls: type[NumabPolicy], until_s: float) -> tuple[SimMachine, Any, int]:
    sc = scenario([
        {"name": "cold", "placement": "fast", "vmas": [vma("512MiB", IDLE)]},
        {"name": "hot", "placement": "slow",
         "vmas": [vma("64MiB", {"kind": "uniform", "rate_per_s": 16384 * 50.0})]},
    ], nodes=nodes("512MiB"))
    machine = SimMachine(sc)
    policy = policy_cls(machine, NumabParams(), 3)
    ledger = PromotionLedger(machine)
    while machine.clock.now_s < until_s:
        policy.step()
        ledger.drain()
        machine.clock.sleep_ns(policy.sleep_ns())
    return machine, policy, ledger.demoted_pages


def test_numab_with_demotion_moves_the_hot_set_in_and_the_cold_out() -> None:
    machine, policy, demoted = numab_run(NumabTieringPolicy, 6.0)
    cold, hot = (p.vmas[0] for p in machine.alive())
    assert np.all(hot.nid == 0)  # the whole hot set promoted
    assert demoted == int(np.count_nonzero(cold.nid == 1)) == policy.stats.total[
        "pgdemote_kswapd"]  # only cold pages demoted
    assert policy.stats.total["pgpromote_success"] == 16384
    _, alone, _ = numab_run(NumabPolicy, 6.0)
    assert alone.stats.total["pgpromote_success"] == 0  # promotion alone: the top tier is full


# --- DAMOS: the quota goal feedback loop --------------------------------------------------------


def test_feed_loop_next_input() -> None:
    assert feed_loop_next_input(10_000, 0) == 20_000  # goal missed by 100 %: doubles
    assert feed_loop_next_input(10_000, 5_000) == 15_000
    assert feed_loop_next_input(20_000, 15_000) == 10_000  # 50 % over: halves
    assert feed_loop_next_input(1_000_000, 10_000) == 1_000_000
    assert feed_loop_next_input(1_000_000, 20_000) == 10_000  # twice the goal: the floor


def tier_policy(machine: SimMachine, **params: Any) -> tuple[DamonTierPolicy, Kdamond, Kdamond]:
    policy = DamonTierPolicy(machine, DamonTierParams(**params), seed=2)
    policy._sync()
    demote, promote = policy.kdamonds
    return policy, demote, promote


def test_effective_quota_rises_while_the_goal_is_unmet_and_falls_when_met() -> None:
    machine = one_process("slow", [vma("64MiB", IDLE)])
    _, _, promote = tier_policy(machine)
    machine.used_pages[0] = 16384  # the top node half used: node_mem_used_bp 5000 of 9970
    sizes = []
    for _ in range(3):
        promote.set_effective_quota()
        sizes.append(promote.quota.esz_bp)
    # score 5000 * 10000 // 9970 = 5015: +49.85 % a window
    assert sizes == [14_985, 22_455, 33_648]
    machine.used_pages[0] = 32768  # full: score 10030, over the goal
    promote.set_effective_quota()
    assert promote.quota.esz_bp == 33_648 - 33_648 * 30 // 10_000 < sizes[-1]


def test_migrate_cold_quota_is_exact_per_window_and_stops_at_twice_the_free_goal() -> None:
    # 256 MiB top node (65536 pages) full of idle pages; quota 1 MiB = 256 pages a window.
    machine = one_process("fast", [vma("256MiB", IDLE)], top="256MiB")
    policy, demote, _ = tier_policy(machine, quota_mib=1)
    demote.quota.esz_bp = 10**15  # past the ramp from 1 byte: esz is the 1 MiB size quota
    demoted = []
    for _ in range(5):
        machine.clock.sleep_ns(1_000_000_000)
        demote.apply(machine.clock.now_s, at_aggregation=True)
        demoted.append(policy.stats.total["pgmigrate_success"])
    # free 39 bp (score 7800: unmet), 78 bp (15600: over, esz_bp falls but esz stays at
    # the 1 MiB cap), then 117 bp (23400 >= twice the goal): esz 1 byte, nothing more.
    assert demoted == [256, 512, 768, 768, 768]
    cold = machine.alive()[0].vmas[0]
    assert np.all(cold.nid[:768] == 1) and np.all(cold.nid[768:] == 0)  # in frame order
    assert demote.quota.esz == 1
    assert policy.stats.total["damos_demote_qt_exceeds"] == 3  # windows 1-3 used it all


def test_young_filters_promote_only_young_and_demote_only_old_folios() -> None:
    machine = one_process("slow", [vma("512KiB", HOT), vma("512KiB", IDLE)])
    policy, _, promote = tier_policy(machine)
    promote.quota.esz_bp = 10**15
    machine.clock.sleep_ns(1_000_000_000)
    promote.regions.nr_accesses[:] = 20  # every region looks hot to the access pattern
    promote.apply(machine.clock.now_s, at_aggregation=True)
    hot, idle = machine.alive()[0].vmas
    assert np.all(hot.nid == 0) and np.all(idle.nid == 1)
    assert policy.stats.total["pgmigrate_success"] == 128
    assert policy.stats.total["damos_promote_filtered_out"] == 128

    machine = one_process("fast", [vma("1MiB", HOT), vma("1MiB", IDLE)], top="2MiB")  # full
    policy, demote, _ = tier_policy(machine)
    demote.quota.esz_bp = 10**15
    machine.clock.sleep_ns(1_000_000_000)
    demote.apply(machine.clock.now_s, at_aggregation=True)
    hot, idle = machine.alive()[0].vmas
    assert np.all(hot.nid == 0) and np.all(idle.nid == 1)
    assert policy.stats.total["pgmigrate_success"] == 256
    assert policy.stats.total["damos_demote_filtered_out"] == 256


def test_intervals_tune_toward_four_percent_of_access_events() -> None:
    machine = one_process("slow", [vma("64MiB", IDLE)])
    _, demote, _ = tier_policy(machine)
    demote.tune_intervals()  # no access seen: score 0, the intervals double
    assert demote.sample_us == 10_000
    demote.regions.nr_accesses[:] = 20  # every sample accessed: 25x the goal
    demote.tune_intervals()  # adaptation 5000 bp: halved, at the 5 ms floor
    assert demote.sample_us == 5_000
    demote.tune_intervals()
    assert demote.sample_us == 5_000


def test_damon_pair_runs_and_promotes_once_the_quota_ramped() -> None:
    machine = one_process("slow", [vma("32MiB", HOT), vma("32MiB", IDLE)])
    policy, _, promote = tier_policy(machine)
    while machine.clock.now_s < 20:
        policy.step()
        machine.clock.sleep_ns(policy.sleep_ns())
    hot, idle = machine.alive()[0].vmas
    # esz doubles from 1 byte each 1 s window (the top node is empty: score 0); about
    # 2^19 bytes = 128 pages by t = 20 s, so some of the hot set is in, no idle page.
    assert 0 < int(np.count_nonzero(hot.nid == 0)) < 8192 and np.all(idle.nid == 1)
    assert policy.stats.total["damos_demote_sz_applied"] == 0  # the top node has room
    assert 2**18 <= promote.quota.esz <= 2**20  # about 19 windows of doubling


# --- the registry --------------------------------------------------------------------------------


def test_every_variant_is_registered_and_takes_its_parameters() -> None:
    runs = plan_runs(["none", "numab", "numab-promote", "damon", "damon-hot", "oracle"], [])
    assert [r.policy for r in runs] == ["none", "numab", "numab-promote", "damon", "damon-hot",
                                       "oracle"]
    assert set(PARAMS) <= set(POLICY_KINDS)
    params = apply_overrides("damon", (("damon.quota_mib", "50"),), None)  # type: ignore[arg-type]
    assert isinstance(params, DamonTierParams) and params.quota_mib == 50


def test_numab_kswapd_work_is_a_kernel_threads() -> None:
    sc = scenario([
        {"name": "cold", "placement": "fast", "vmas": [vma("128MiB", IDLE)]},
        {"name": "hot", "placement": "slow",
         "vmas": [vma("16MiB", {"kind": "uniform", "rate_per_s": 4096 * 50.0})]},
    ], nodes=nodes("128MiB"), duration_s=3)
    result = run_one(RunTask(0, RunSpec("numab"), sc, 1, DEFAULT_COSTS))
    assert result.payer == "app" and result.cpu is not None and result.ledger is not None
    demoted = result.ledger["demoted_pages"]
    assert demoted == result.counters["pgdemote_kswapd"] > 0
    kswapd_ns = (result.counters["kswapd_ptes_checked"] * DEFAULT_COSTS.pte_ns
                 + demoted * DEFAULT_COSTS.migrate_page_ns)
    assert result.cpu["daemon_ns"] == round(kswapd_ns, 1)
    assert result.cpu["app_ns"] >= result.counters["numa_hint_faults"] * 2000.0
