"""The rest of the series in the engine, on the simulated machine: delay, scale,
target choice and fallback, failure feedback, rate limit, throttling, trace events."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from simkit import (
    COLD,
    HOT,
    STEPS_PAST_REPROBE,
    machine_and_engine,
    run_steps,
    scenario,
    slot_of,
)

from kscand.core.engine import Kscand
from kscand.machine import PAGE_SIZE
from kscand.sim.machine import SimMachine
from kscand.sim.run import run_scenario
from kscand.sim.scenario import load_scenario

MiB = 1 << 20
SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SERIES = {"scan_delay_ms": 2000, "mm_scan_period_ms": 2000, "scan_period_min_ms": 600,
          "scan_period_max_ms": 5000, "default_scale": 8}  # the series' defaults


def run_for(machine: SimMachine, engine: Kscand, seconds: float) -> None:
    end_ns = machine.clock.now_ns() + int(seconds * 1e9)
    while machine.clock.now_ns() < end_ns:
        run_steps(machine, engine, 1)


def test_a_new_process_waits_for_the_initial_delay() -> None:
    sc = scenario([{"name": "p", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}],
                  tunables={**SERIES, "scan_delay_ms": 1500})
    machine, engine = machine_and_engine(sc)
    run_for(machine, engine, 1.4)
    assert engine.stats.total["nr_kscand_mm_scans"] == 0
    run_for(machine, engine, 0.2)
    assert engine.stats.total["nr_kscand_mm_scans"] == 1


def test_scale_zero_never_scans() -> None:
    sc = scenario([{"name": "off", "placement": "slow", "workload": HOT, "scale": 0,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]},
                   {"name": "on", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}])
    machine, engine = machine_and_engine(sc)
    off, on = machine.processes()
    run_steps(machine, engine, 20)
    assert engine.stats.of(off)["nr_kscand_mm_scans"] == 0
    assert engine.stats.of(off)["scan_skip_scale0"] == 20
    assert engine.stats.of(on)["nr_kscand_mm_scans"] == 20
    assert all(p == on for p, v in machine.move_log if len(v))
    assert engine.set_scale(off, 5)  # at run time, the control socket's path
    run_steps(machine, engine, 1)
    assert engine.stats.of(off)["nr_kscand_mm_scans"] == 1


def test_target_heuristic_picks_the_node_of_the_accessed_top_tier_pages() -> None:
    report = run_scenario(dataclasses.replace(load_scenario(SCENARIOS / "two-sockets.toml"),
                                              duration_s=10))
    by_label = {p.label: p for p in report.procs}
    assert by_label["east"].promoted_pages > 0 and by_label["west"].promoted_pages > 0
    counters = report.counters
    # east's accessed top-tier pages live on node 1, west's on node 0; every promoted
    # page went to its own process's node (no node-0 default for east).
    assert counters["promoted_pages_node1"] == by_label["east"].promoted_pages
    assert counters["promoted_pages_node0"] == by_label["west"].promoted_pages


def two_top_nodes(node1_capacity: str) -> Any:
    return [
        {"nid": 0, "capacity": "256MiB", "cpus": True, "tier": 4},
        {"nid": 1, "capacity": node1_capacity, "cpus": True, "tier": 4},
        {"nid": 2, "capacity": "1GiB", "cpus": False, "tier": 67},
    ]


def test_fallback_to_the_other_top_tier_node_when_the_target_is_full() -> None:
    sc = scenario(
        [{"name": "p", "placement": "interleave:1,2", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "64MiB"}]}],
        nodes=two_top_nodes("40MiB"), tunables={"target_free_min_pct": 0},
    )
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 6)
    proc = machine.processes()[0]
    assert slot_of(engine, proc).target_nid == 1
    counters = engine.stats.of(proc)
    assert counters["promoted_pages_node1"] == (40 - 32) * MiB // PAGE_SIZE  # filled up
    assert counters["promoted_pages_node0"] == 32 * MiB // PAGE_SIZE - counters[
        "promoted_pages_node1"]  # the rest went to the other top-tier node
    assert machine.topology().node(1).free_pages == 0


def test_forced_target_node_gets_no_fallback() -> None:
    sc = scenario(
        [{"name": "p", "placement": "interleave:1,2", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "64MiB"}]}],
        nodes=two_top_nodes("40MiB"), tunables={"target_free_min_pct": 0, "target_node": 1},
    )
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 6)
    assert engine.stats.total["promoted_pages_node0"] == 0
    assert engine.stats.total["drop_target_full"] > 0


def test_failure_feedback_slows_the_scan_of_a_failing_process() -> None:
    def period_after(ebusy_rate: float) -> float:
        # A slow promotion rate keeps the process busy (hot pages left on the slow tier).
        sc = scenario([{"name": "p", "placement": "slow", "workload": HOT,
                        "vmas": [{"kind": "anon", "size": "64MiB"}]}],
                      tunables={**SERIES, "scan_delay_ms": 0, "promote_rate_limit_mbps": 2},
                      sim={"ebusy_rate": ebusy_rate})
        machine, engine = machine_and_engine(sc)
        run_for(machine, engine, 4.0)
        return slot_of(engine, machine.processes()[0]).scan_period_ms

    assert period_after(0.0) == 600.0  # steady work: the minimum period
    assert period_after(0.5) > 3 * 600.0  # ~half the moves fail: x (1 + 50/10), clamped


def test_rate_limit_holds_within_ten_percent() -> None:
    limit_mbps = 40
    sc = scenario([{"name": "p", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "1GiB"}]}],
                  nodes=[{"nid": 0, "capacity": "2GiB", "cpus": True, "tier": 4},
                         {"nid": 1, "capacity": "2GiB", "cpus": False, "tier": 67}],
                  tunables={"promote_rate_limit_mbps": limit_mbps, "hot_history_depth": 1})
    machine, engine = machine_and_engine(sc)
    run_for(machine, engine, 1.0)  # past the initial burst
    start_pages, start_s = engine.stats.total["nr_kscand_migrated"], machine.clock.now_s
    run_for(machine, engine, 5.0)
    mbps = ((engine.stats.total["nr_kscand_migrated"] - start_pages) * PAGE_SIZE / 1e6
            / (machine.clock.now_s - start_s))
    assert 0.9 * limit_mbps <= mbps <= 1.1 * limit_mbps
    assert engine.stats.total["drop_rate_limited"] > 0


def test_throttling_scans_an_idle_process_at_least_4x_less_often() -> None:
    sc = scenario([{"name": "busy", "placement": "slow",
                    "workload": {"kind": "hotset", "hot_fraction": 0.5, "hot_share": 1.0,
                                 "rate_per_s": 1e7},
                    "vmas": [{"kind": "anon", "size": "512MiB"}]},
                   {"name": "idle", "placement": "slow", "workload": COLD,
                    "vmas": [{"kind": "anon", "size": "512MiB"}]}],
                  nodes=[{"nid": 0, "capacity": "128MiB", "cpus": True, "tier": 4},
                         {"nid": 1, "capacity": "2GiB", "cpus": False, "tier": 67}],
                  tunables=SERIES)
    machine, engine = machine_and_engine(sc)
    run_for(machine, engine, 75.0)  # the rule judges whole passes: one more period to the max
    busy, idle = machine.processes()
    scans_busy = engine.stats.of(busy)["nr_kscand_mm_scans"]
    scans_idle = engine.stats.of(idle)["nr_kscand_mm_scans"]
    assert scans_busy >= 4 * scans_idle, (scans_busy, scans_idle)
    assert slot_of(engine, idle).scan_period_ms == 5000.0
    assert slot_of(engine, idle).scan_size_bytes == 256 * MiB


def test_trace_events_carry_the_series_fields() -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    sc = scenario([{"name": "p", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}])
    machine = SimMachine(sc)
    engine = Kscand(machine, sc.tunables, trace=lambda e, f: events.append((e, f)))
    run_steps(machine, engine, STEPS_PAST_REPROBE)
    names = [e for e, _ in events]
    assert names[0] == "mm_enter"
    assert "scan_mm_start" in names and "scan_mm_end" in names and "scan_mm_migrate" in names
    end = next(f for e, f in events if e == "scan_mm_end")
    assert set(end) == {"mm", "start", "total", "scan_period", "scan_size", "target_node"}
    assert end["total"] == 4 * MiB // PAGE_SIZE
    migrate = next(f for e, f in events if e == "scan_mm_migrate")
    assert set(migrate) == {"mm", "rc", "node", "succeeded", "failed"}
    assert migrate["succeeded"] == 4 * MiB // PAGE_SIZE and migrate["node"] == 0
    machine.kill(machine.processes()[0])
    run_steps(machine, engine, 1)
    assert events[-1][0] == "mm_exit"


def demotion_run(watermark_pct: float, exchange: bool = False) -> tuple[SimMachine, Kscand]:
    """The watermark demoter alone (exchange off unless asked)."""
    sc = scenario(
        [{"name": "cold", "placement": "fast", "workload": COLD,
          "vmas": [{"kind": "anon", "size": "60MiB"}]},
         {"name": "hot", "placement": "slow", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "16MiB"}]}],
        nodes=[{"nid": 0, "capacity": "64MiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67}],
        tunables={"demote_watermark_pct": watermark_pct, "demote_idle_scans": 2,
                  "exchange_enabled": exchange},
    )
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 12)
    return machine, engine


def test_watermark_demotion_is_off_by_default_and_without_exchange_the_hot_set_stays_out(
) -> None:
    machine, engine = demotion_run(0.0)
    assert engine.stats.total["nr_kscand_demoted"] == 0
    assert engine.stats.total["nr_kscand_demote_added"] == 0
    hot = machine.procs[machine.processes()[1].pid]
    assert int((hot.vmas[0].nid == 0).sum()) < 4096 // 2


def test_with_exchange_by_default_the_hot_set_gets_in_without_a_watermark() -> None:
    machine, engine = demotion_run(0.0, exchange=True)
    cold, hot = (machine.procs[p.pid] for p in machine.processes())
    assert engine.stats.of(cold.proc)["nr_kscand_exchange_demoted"] > 0
    assert int((hot.vmas[0].nid == 0).sum()) == 4096


def test_demotion_makes_room_for_the_hot_set() -> None:
    machine, engine = demotion_run(30.0)
    cold, hot = (machine.procs[p.pid] for p in machine.processes())
    assert engine.stats.of(cold.proc)["nr_kscand_demoted"] > 0
    assert engine.stats.of(hot.proc)["nr_kscand_demoted"] == 0  # hot pages are never cold
    assert bool(np.all(hot.vmas[0].nid == 0))  # the whole hot set made it
    top = machine.topology().node(0)
    assert top.free_pages >= 0


def test_demotion_works_under_the_series_throttling() -> None:
    """A process living on the top tier finds no slow-tier work, so throttling alone
    would scan it every ~9 s in 256 MiB steps; while the top tier wants room its idle
    pages count as work, so its cold pages qualify and move within seconds."""
    sc = scenario(
        [{"name": "filler", "placement": "fast", "workload": COLD,
          "vmas": [{"kind": "anon", "size": "1GiB"}]},
         {"name": "hot", "placement": "slow", "workload": HOT, "start_s": 1,
          "vmas": [{"kind": "anon", "size": "128MiB"}]}],
        nodes=[{"nid": 0, "capacity": "1GiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "4GiB", "cpus": False, "tier": 67}],
        tunables={**SERIES, "demote_watermark_pct": 15, "target_free_min_pct": 1},
    )
    machine, engine = machine_and_engine(sc)
    run_for(machine, engine, 30.0)
    filler, hot = (machine.procs[p.pid] for p in machine.processes())
    assert engine.stats.of(filler.proc)["nr_kscand_demoted"] > 0
    assert float((hot.vmas[0].nid == 0).mean()) > 0.9
