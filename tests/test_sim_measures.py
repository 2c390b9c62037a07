"""The honest measures of `kscand compare`, exactly, on tiny seeded scenarios.

The trace scenario: two pages, A (page 0) and B (page 1), and one top-tier page free
for them (an immovable, never accessed filler holds the other 511 of the 2 MiB node).
Window 0 (0-1 s): A takes 100 accesses; window 1 (1-2 s): B takes 300. The trace
does not loop, so the run stops at 2 s (samples at 0, 0.5, 1 and 1.5 s, 0.5 s each).
The per-window oracle serves everything (100 %); the best static placement in
hindsight holds B (300 accesses over the run against A's 100): 300 / 400 = 75 %
access-weighted, but 50 % as a time average (0 % in window 0, 100 % in window 1).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from simkit import scenario

from kscand.core.stats import Stats
from kscand.evaluation.compare import STATIC_BEST_LABEL, compare, summarize
from kscand.evaluation.ledger import PromotionLedger, ping_pong
from kscand.evaluation.policies import RunSpec
from kscand.machine import PAGE_SIZE
from kscand.sim.machine import SimMachine
from kscand.sim.metrics import access_weighted, sample_weights_s
from kscand.sim.run import SimReport, run_end_s, run_scenario
from kscand.sim.scenario import Scenario

TRACE = "time_s,pid,address,count\n0.5,7,0x10000000,100\n1.5,7,0x10001000,300\n"
NODES = [{"nid": 0, "capacity": "2MiB", "cpus": True, "tier": 4, "latency_ns": 100},
         {"nid": 1, "capacity": "4MiB", "tier": 67, "latency_ns": 300}]


def trace_scenario(tmp_path: Path, placement: str = "slow", loop: bool = False,
                   duration_s: float = 10.0) -> Scenario:
    path = tmp_path / "two.csv"
    path.write_text(TRACE)
    return scenario(
        [{"name": "filler", "placement": "fast", "workload": {"kind": "idle"},
          "vmas": [{"kind": "file-ro", "size": "2044KiB"}]},
         {"name": "replay", "placement": placement,
          "vmas": [{"kind": "anon", "size": "8KiB",
                    "workload": {"kind": "trace", "path": str(path), "trace_pid": 7,
                                 "window_s": 1.0, "hot_share": 0.9, "loop": loop}}]}],
        nodes=NODES, duration_s=duration_s)


class Scripted:
    """A policy that moves pages at given virtual times: [(t_s, page, nid), ...]."""

    def __init__(self, machine: SimMachine, moves: list[tuple[float, int, int]]) -> None:
        self.machine = machine
        self.moves = sorted(moves)
        self.stats = Stats()

    def step(self) -> None:
        now_s = self.machine.clock.now_s
        while self.moves and self.moves[0][0] <= now_s:
            _, page, nid = self.moves.pop(0)
            proc = replay(self.machine)
            vaddr = np.array([proc.vmas[0].start + page * PAGE_SIZE], dtype=np.uint64)
            self.machine.move_pages(proc.proc, vaddr, nid)

    def sleep_ns(self) -> int:
        return 50_000_000


def replay(machine: SimMachine):  # type: ignore[no-untyped-def]
    return next(p for p in machine.alive() if p.name == "replay")


def run_scripted(
    sc: Scenario, moves: list[tuple[float, int, int]]
) -> tuple[SimMachine, PromotionLedger, SimReport]:
    machine = SimMachine(sc)
    ledger = PromotionLedger(machine)
    report = run_scenario(sc, machine=machine, policy=lambda m, s: Scripted(m, moves),
                          observers=(ledger.observe,), hindsight=True)
    return machine, ledger, report


def test_access_weighted_mean_and_weights() -> None:
    assert sample_weights_s([0.0, 0.5, 1.0, 1.5, 2.0], 0.5, 2.0) == [0.5, 0.5, 0.5, 0.5, 0.0]
    assert sample_weights_s([0.0, 0.5], 0.5, 0.7) == [0.5, pytest.approx(0.2)]
    # A burst: 10 % of the time at 9x the rate. The time average says 0.1, the accesses 0.5.
    shares, rates = [1.0] + [0.0] * 9, [9.0] + [1.0] * 9
    assert access_weighted(shares, rates, [1.0] * 10) == pytest.approx(0.5)
    assert access_weighted([1.0], [0.0], [1.0]) == 0.0


def test_a_trace_that_ends_stops_the_samples(tmp_path: Path) -> None:
    sc = trace_scenario(tmp_path)
    assert run_end_s(sc) == (2.0, 2.0)
    _, _, report = run_scripted(sc, [])
    assert [s.t_s for s in report.samples] == [0.0, 0.5, 1.0, 1.5]
    assert report.weights_s == [0.5] * 4 and report.end_s == 2.0
    # Every sample served accesses: none records the 0 ns of an idle machine.
    assert [s.latency_ns for s in report.samples] == [300.0] * 4
    assert all(s.rate_per_s > 0 for s in report.samples)
    looping = trace_scenario(tmp_path, loop=True, duration_s=3.0)
    assert run_end_s(looping) == (3.0, None)
    assert len(run_scripted(looping, [])[2].samples) == 7  # 0 .. 3 s, the end included


def test_static_best_in_hindsight_by_hand(tmp_path: Path) -> None:
    sc = trace_scenario(tmp_path)
    machine, _, report = run_scripted(sc, [])
    best = report.static_best
    assert best is not None and report.time_varying
    assert best.capacity_pages == 1
    vma = replay(machine).vmas[0]
    assert best.selection(vma).tolist() == [0.0, 1.0]  # B, not A
    assert best.top_rate_per_s == [0.0, 0.0, 300.0, 300.0]
    result = summarize(report, "none", "none", [], "none", None, None, None,
                       [(0.0, 0.0)] * len(report.samples))
    assert result.aw_static_best_share == pytest.approx(0.75)
    assert result.aw_oracle_share == pytest.approx(1.0)
    assert [p["static_best_share"] for p in result.timeline] == [0.0, 0.0, 1.0, 1.0]
    # Minimum traffic from the slow node: promote B, nothing to make room for.
    assert best.minimum_traffic(machine).total_pages == 1


def test_minimum_traffic_counts_the_demotion_that_makes_room(tmp_path: Path) -> None:
    sc = trace_scenario(tmp_path, placement="fast")  # A (page 0) fills the top tier
    machine, _, report = run_scripted(sc, [])
    assert replay(machine).vmas[0].nid.tolist() == [0, 1]
    assert report.static_best is not None
    minimum = report.static_best.minimum_traffic(machine)
    assert (minimum.promote_pages, minimum.demote_pages) == (1, 1)
    # The initial placement comes from the move history, whatever moved since.
    machine2, _, report2 = run_scripted(sc, [(0.0, 0, 1), (0.1, 1, 0)])
    assert replay(machine2).vmas[0].nid.tolist() == [1, 0]
    assert report2.static_best is not None
    assert report2.static_best.minimum_traffic(machine2).total_pages == 2


def test_benefit_per_promotion_counts_accesses_while_on_top(tmp_path: Path) -> None:
    sc = trace_scenario(tmp_path)
    # B promoted at t=0: it serves window 1's 300 accesses from the top tier.
    _, ledger, _ = run_scripted(sc, [(0.0, 1, 0)])
    summary = ledger.summary()
    assert summary.promoted_pages == 1 and summary.demoted_pages == 0
    assert ledger.top_accesses == pytest.approx(300.0)
    # A promoted by the first step (after the sample at 0), demoted at 0.6 s: only the
    # sample at 0.5 s counts, 100 accesses/s x 0.5 s.
    _, ledger, _ = run_scripted(sc, [(0.0, 0, 0), (0.6, 0, 1)])
    summary = ledger.summary()
    assert (summary.promoted_pages, summary.demoted_pages, summary.moved_pages) == (1, 1, 2)
    assert ledger.top_accesses == pytest.approx(50.0)


def test_ping_pong_from_the_move_history(tmp_path: Path) -> None:
    sc = trace_scenario(tmp_path)
    # A moves three times within 60 s, B once: 1 ping-pong page, 3 of the 4 moves.
    _, ledger, _ = run_scripted(sc, [(0.0, 0, 0), (0.5, 0, 1), (1.0, 0, 0), (1.2, 1, 1)])
    summary = ledger.summary()
    assert summary.moved_pages == 3  # B was on node 1 already: not a move
    assert (summary.ping_pong_pages, summary.ping_pong_moves) == (1, 3)
    assert (summary.promoted_pages, summary.demoted_pages) == (2, 1)


def test_ping_pong_window_is_inclusive_at_60_s() -> None:
    ids = np.array([5, 5, 5, 6, 6, 6, 7], dtype=np.int64)
    times = np.array([0.0, 30.0, 60.0, 0.0, 30.0, 60.001, 1.0])
    assert ping_pong(ids, times) == (1, 3)
    assert ping_pong(ids[:2], times[:2]) == (0, 0)
    unsorted = np.array([2, 1, 2, 2], dtype=np.int64), np.array([9.0, 0.0, 1.0, 5.0])
    assert ping_pong(*unsorted) == (1, 3)


def test_compare_reports_both_bounds_and_every_measure(tmp_path: Path) -> None:
    sc = trace_scenario(tmp_path)
    result = compare(sc, [RunSpec("none"), RunSpec("kscand")], [], jobs=1)
    labels = [r.label for r in result.runs]
    assert labels == ["none", "kscand", STATIC_BEST_LABEL, "oracle (per-window, clairvoyant)"]
    none, _, best, oracle = result.runs
    assert result.duration_s == 2.0  # the trace's end, not the scenario's 10 s
    assert best.aw_top_share == pytest.approx(0.75) and best.mean_top_share == pytest.approx(0.5)
    assert oracle.aw_top_share == pytest.approx(1.0) and best.aw_of_oracle == pytest.approx(0.75)
    assert none.aw_latency_ns == pytest.approx(300.0) and none.traffic_ratio == 0.0
    assert best.aw_latency_ns == pytest.approx(0.75 * 100 + 0.25 * 300)
    assert none.min_traffic == {"promote_pages": 1, "demote_pages": 0}
    data = result.to_json()["runs"][0]
    for key in ("aw_top_share", "aw_latency_ns", "of_static_best", "aw_of_oracle",
                "accesses_per_promotion", "traffic_ratio", "min_traffic", "end_s"):
        assert key in data
    assert {"ping_pong_pages", "ping_pong_moves", "moved_pages", "demoted_pages"} <= set(
        data["ledger"])


def test_static_best_splits_ties_at_the_cut() -> None:
    # 1024 equally hot pages, 512 top-tier pages: any half is best, half the accesses.
    sc = scenario([{"name": "flat", "placement": "slow",
                    "workload": {"kind": "uniform", "rate_per_s": 1024.0},
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}],
                  nodes=[{"nid": 0, "capacity": "2MiB", "cpus": True, "tier": 4},
                         {"nid": 1, "capacity": "8MiB", "tier": 67}], duration_s=2.0)
    machine, _, report = run_scripted(sc, [])
    best = report.static_best
    assert best is not None and not report.time_varying
    assert best.cut.tie_fraction == 0.5
    assert best.top_rate_per_s == [512.0] * len(report.samples)
    minimum = best.minimum_traffic(machine)
    assert (minimum.promote_pages, minimum.demote_pages) == (512, 0)
