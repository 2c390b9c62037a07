"""Simulator metrics: incremental per-node sums, the oracle."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from simkit import machine_and_engine, run_steps, scenario

from kscand.sim.metrics import Sampler, oracle_top_rates


@pytest.mark.parametrize(
    "workload",
    [
        {"kind": "hotset", "hot_fraction": 0.2, "hot_share": 0.9, "rate_per_s": 1e5},
        {"kind": "moving-hotset", "hot_fraction": 0.2, "hot_share": 0.9, "rate_per_s": 1e5,
         "period_s": 0.3, "shift_fraction": 0.1},
        {"kind": "zipf", "skew": 1.1, "rate_per_s": 1e5},
    ],
    ids=lambda w: w["kind"],
)
def test_incremental_node_sums_match_a_full_recount(workload: dict[str, Any]) -> None:
    sc = scenario([{"name": "app", "placement": "slow", "workload": workload,
                    "vmas": [{"kind": "anon", "size": "32MiB"}, {"kind": "anon-thp", "size": "8MiB"}]}])
    machine, engine = machine_and_engine(sc)
    sampler = Sampler(machine)
    for _ in range(6):
        sampler.sample(machine.clock.now_s)  # caches per-node sums ...
        run_steps(machine, engine, 3)  # ... which moves then update
    assert engine.stats.total["nr_kscand_migrated"] > 0
    t_s = machine.clock.now_s
    for vma in machine.alive()[0].vmas:
        cached = vma.node_stats(t_s, machine.capacity_pages.shape[0])
        vma._stats = None
        fresh = vma.node_stats(t_s, machine.capacity_pages.shape[0])
        np.testing.assert_allclose(cached.rate, fresh.rate, rtol=1e-6, atol=1e-6)
        assert cached.hot.tolist() == fresh.hot.tolist()
        assert cached.pages.tolist() == fresh.pages.tolist()


def test_oracle_takes_the_hottest_pages_and_splits_ties() -> None:
    a = np.array([5, 1, 1, 0], dtype=np.float32)
    b = np.array([3, 1, 1], dtype=np.float32)
    # 3 pages fit: 5 and 3, then one of the four rate-1 pages (tie split 2:2).
    out = oracle_top_rates([a, b], [0.0, 10.0], 3)
    assert out == pytest.approx([5 + 0.5, 3 + 0.5 + 10.0])
    assert oracle_top_rates([a, b], [0.0, 0.0], 100) == pytest.approx([7, 5])
    assert oracle_top_rates([a, b], [1.0, 2.0], 0) == pytest.approx([1, 2])
