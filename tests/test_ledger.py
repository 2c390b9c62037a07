"""The promotion ledger: promoted, cold (hot-set) and outside-the-oracle counts, exactly."""

from __future__ import annotations

import numpy as np
from simkit import scenario

from kscand.evaluation.ledger import PromotionLedger, kth_largest
from kscand.machine import PAGE_SIZE
from kscand.sim.machine import SimMachine


def machine(top: str) -> SimMachine:
    sc = scenario(
        [{"name": "app", "placement": "slow",
          "workload": {"kind": "hotset", "hot_fraction": 0.25, "hot_share": 0.9,
                       "rate_per_s": 1e4},
          "vmas": [{"kind": "anon", "size": "1MiB"}, {"kind": "anon-thp", "size": "2MiB"}]}],
        nodes=[{"nid": 0, "capacity": top, "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "64MiB", "tier": 67}],
    )
    return SimMachine(sc)


def test_ledger_counts_hot_cold_and_thp_folios() -> None:
    m = machine("64MiB")
    ledger = PromotionLedger(m)
    proc = m.alive()[0]
    anon, thp = proc.vmas
    hot = np.flatnonzero(anon.workload.hot(0.0))[:3]
    cold = np.flatnonzero(~anon.workload.hot(0.0))[:2]
    vaddrs = np.sort(np.uint64(anon.start) + np.concatenate([hot, cold]).astype(np.uint64)
                     * np.uint64(PAGE_SIZE))
    m.move_pages(proc.proc, vaddrs, 0)
    m.move_pages(proc.proc, np.array([thp.start + 5 * PAGE_SIZE], dtype=np.uint64), 0)
    ledger.drain()  # the policies' wrapper drains after every step
    m.move_pages(proc.proc, vaddrs[:1], 1)  # a demotion back to the slow node
    summary = ledger.summary()
    thp_cold = int(np.count_nonzero(~thp.workload.hot(0.0)))
    assert summary.promoted_pages == 5 + 512 and summary.move_calls == 3
    assert summary.demoted_pages == 1
    assert summary.cold_at_promotion_pages == 2 + thp_cold
    assert summary.promoted_live_at_end_pages == 5 + 512 - 1
    # The 64 MiB top tier holds everything: nothing promoted is outside the oracle's set.
    assert summary.outside_oracle_at_promotion_pages == summary.outside_oracle_at_end_pages == 0


def test_outside_the_oracle_when_only_the_hot_pages_fit() -> None:
    sc = scenario(
        [{"name": "app", "placement": "slow",
          "workload": {"kind": "hotset", "hot_fraction": 0.25, "hot_share": 0.9,
                       "rate_per_s": 1e4},
          "vmas": [{"kind": "anon", "size": "8MiB"}]}],  # 2048 pages, 512 hot
        nodes=[{"nid": 0, "capacity": "2MiB", "cpus": True, "tier": 4},  # 512 pages
               {"nid": 1, "capacity": "64MiB", "tier": 67}],
    )
    m = SimMachine(sc)
    proc = m.alive()[0]
    vma = proc.vmas[0]
    ledger = PromotionLedger(m)
    hot = vma.workload.hot(0.0)
    assert np.count_nonzero(hot) == 512
    picks = np.sort(np.concatenate([np.flatnonzero(hot)[:6], np.flatnonzero(~hot)[:4]]))
    m.move_pages(proc.proc, np.uint64(vma.start) + picks.astype(np.uint64) * np.uint64(PAGE_SIZE),
                 0)
    summary = ledger.summary()
    assert summary.promoted_pages == 10 and summary.cold_at_promotion_pages == 4
    # Only the 512 hot pages fit the oracle's top tier: the 4 cold ones are outside it.
    assert summary.outside_oracle_at_promotion_pages == summary.outside_oracle_at_end_pages == 4


def test_a_larger_top_tier_takes_cold_pages_into_the_oracle_set() -> None:
    m = machine("2MiB")  # 512 pages for 768 pages of which 192 hot: the cut is the cold rate
    proc = m.alive()[0]
    anon = proc.vmas[0]
    ledger = PromotionLedger(m)
    cold = np.flatnonzero(~anon.workload.hot(0.0))[:4].astype(np.uint64)
    m.move_pages(proc.proc, np.uint64(anon.start) + cold * np.uint64(PAGE_SIZE), 0)
    summary = ledger.summary()
    assert summary.cold_at_promotion_pages == 4
    assert summary.outside_oracle_at_promotion_pages == 0  # cold, but worth their place


def test_kth_largest_handles_ties_and_bounds() -> None:
    values = np.array([5, 1, 1, 1, 3], dtype=np.float32)
    assert kth_largest(values, 1) == 5 and kth_largest(values, 2) == 3
    assert kth_largest(values, 3) == 1 and kth_largest(values, 5) == float("-inf")
    assert kth_largest(values, 0) == float("inf")
