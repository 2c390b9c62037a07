"""Scenario-level acceptance: the shipped scenarios load, and the default one converges."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from kscand.sim.run import run_scenario
from kscand.sim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_shipped_scenarios_load(path: Path) -> None:
    scenario = load_scenario(path)
    assert scenario.processes and scenario.nodes
    assert scenario.description


def test_default_hotset_scenario_promotes_the_hot_set() -> None:
    scenario = load_scenario(SCENARIOS / "hotset.toml")
    report = run_scenario(dataclasses.replace(scenario, duration_s=12.0))
    final = report.final
    assert final.nr_hot > 0
    assert final.nr_hot_top / final.nr_hot >= 0.90  # >= 90 % of hot pages on the top tier
    assert final.top_share >= 0.90 * final.oracle_share  # >= 90 % of the oracle's share
    assert report.t90_s is not None and report.t90_s <= 10.0
    # The hot pages of the excluded VMAs never moved: every promotion came from the anon VMA.
    assert report.counters["nr_kscand_migrated"] > 0
    assert report.counters["page_shared"] > 0 and report.counters["page_unevictable"] > 0


def test_oracle_is_an_upper_bound_over_time() -> None:
    scenario = load_scenario(SCENARIOS / "moving-hotset.toml")
    scenario = dataclasses.replace(
        scenario,
        duration_s=12.0,
        processes=tuple(
            dataclasses.replace(
                p, vmas=tuple(dataclasses.replace(v, size_bytes=v.size_bytes // 16)
                              for v in p.vmas)
            )
            for p in scenario.processes
        ),
    )
    report = run_scenario(scenario)
    for sample in report.samples:
        assert sample.top_share <= sample.oracle_share + 1e-6
