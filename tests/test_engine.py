"""The engine on the simulated machine: filters, hotness, cap, target room, determinism."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from simkit import (
    COLD,
    HOT,
    STEPS_PAST_REPROBE,
    machine_and_engine,
    moved_vaddrs,
    run_steps,
    scenario,
)

from kscand.core.engine import Kscand
from kscand.machine import PAGE_SIZE, ProcessId
from kscand.sim import workloads as wl
from kscand.sim.machine import SimMachine
from kscand.sim.run import run_scenario
from kscand.sim.scenario import VMA_KINDS

MiB = 1 << 20


def test_no_page_of_an_excluded_kind_is_ever_moved() -> None:
    kinds = [k for k in VMA_KINDS if k not in ("anon", "anon-thp", "file-rw")]
    vmas = [{"kind": "anon", "size": "8MiB"}] + [{"kind": k, "size": "8MiB"} for k in kinds]
    sc = scenario([{"name": "all", "placement": "slow", "workload": HOT, "vmas": vmas}])
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 6)
    proc = machine.processes()[0]
    vma_list = machine.vmas(proc)
    anon = vma_list[0]
    moved = moved_vaddrs(machine)
    assert moved, "the hot anon pages were never promoted"
    assert all(anon.start <= v < anon.end for v in moved)
    counters = engine.stats.of(proc)
    for reason in ("vma_file_readonly", "vma_hugetlb", "vma_inaccessible",
                   "vma_not_migratable", "page_shared", "page_unevictable"):
        assert counters[reason] > 0, reason
    # The excluded pages are still on the slow node.
    sim_proc = machine.procs[proc.pid]
    for vma in sim_proc.vmas[1:]:
        assert not np.any(vma.nid == 0), vma.kind_name


def test_thp_is_promoted_as_one_folio() -> None:
    sc = scenario([{"name": "thp", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon-thp", "size": "8MiB"}]}])
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, STEPS_PAST_REPROBE)
    moved = sorted(moved_vaddrs(machine))
    assert len(moved) == 4  # four 2 MiB folios, one address each
    assert all(v % (2 * MiB) == 0 for v in moved)
    assert engine.stats.total["nr_kscand_migrated"] == 8 * MiB // PAGE_SIZE
    assert np.all(machine.procs[machine.processes()[0].pid].vmas[0].nid == 0)


class OneTouch:
    """A workload that accesses every page once, at time 0, and never again."""

    def __init__(self, nr_pages: int) -> None:
        self.nr_pages = nr_pages

    def epoch(self, t_s: float) -> int:
        return 0

    def rates(self, t_s: float) -> wl.F32Array:
        return np.zeros(self.nr_pages, dtype=np.float32)

    def hot(self, t_s: float) -> npt.NDArray[np.bool_]:
        return np.zeros(self.nr_pages, dtype=bool)

    def rates_of(self, idx: wl.IdxArray, t_s: float) -> wl.F32Array:
        return np.zeros(len(idx), dtype=np.float32)

    def hot_of(self, idx: wl.IdxArray, t_s: float) -> npt.NDArray[np.bool_]:
        return np.zeros(len(idx), dtype=bool)

    def epoch_bounds(self, t_s: float) -> tuple[float, float]:
        return wl.FOREVER

    def next_access_s(
        self, units: wl.IdxArray, unit_pages: int, t0_s: float, rng: np.random.Generator
    ) -> wl.F64Array:
        return np.full(units.shape[0], np.inf)  # never again after time 0

    def integral(self, idx: wl.PageIndex, t0_s: wl.F32Array, t1_s: float) -> wl.F32Array:
        touched = t0_s <= 0.0  # the interval since the last clear holds time 0
        return np.where(touched, np.float32(wl.CERTAIN), np.float32(0.0))


def one_touch_engine(depth: int) -> tuple[SimMachine, Kscand, ProcessId]:
    sc = scenario(
        [
            {"name": "once", "placement": "slow", "workload": COLD,
             "vmas": [{"kind": "anon", "size": "4MiB"}]},
            {"name": "cold", "placement": "slow", "workload": COLD,
             "vmas": [{"kind": "anon", "size": "4MiB"}]},
        ],
        tunables={"hot_history_depth": depth, "rank_hotness": False},
    )
    machine, engine = machine_and_engine(sc)
    once = machine.procs[machine.processes()[0].pid]
    once.vmas[0].workload = OneTouch(once.vmas[0].nr_pages)
    return machine, engine, once.proc


def test_a_page_touched_once_is_not_promoted_under_second_access() -> None:
    machine, engine, _ = one_touch_engine(depth=2)
    run_steps(machine, engine, 10)
    assert machine.move_log == [] or not moved_vaddrs(machine)
    assert engine.stats.total["nr_kscand_coldpage"] == 4 * MiB // PAGE_SIZE
    assert engine.stats.total["nr_kscand_hotpage"] == 0


def test_a_page_touched_once_is_promoted_when_first_access_suffices() -> None:
    machine, engine, once = one_touch_engine(depth=1)
    run_steps(machine, engine, 10)
    moved = moved_vaddrs(machine)
    assert len(moved) == 4 * MiB // PAGE_SIZE
    assert {p for p, v in machine.move_log if len(v)} == {once}


def test_cold_pages_on_the_slow_node_are_never_promoted() -> None:
    sc = scenario([{"name": "cold", "placement": "slow", "workload": COLD,
                    "vmas": [{"kind": "anon", "size": "16MiB"}]}])
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 20)
    assert not moved_vaddrs(machine)
    assert engine.stats.total["nr_kscand_idlepage"] > 0
    assert engine.stats.total["nr_kscand_migadded"] == 0


def test_candidate_list_is_capped_and_overflow_counted() -> None:
    sc = scenario([{"name": "hot", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "64MiB"}]}],
                  tunables={"migrate_queue_max": 100, "hot_history_depth": 1,
                            "rank_hotness": False})
    _machine, engine = machine_and_engine(sc)
    peak = 0
    original_add = engine.migrator.add

    def add_and_watch(*args: Any, **kwargs: Any) -> Any:
        nonlocal peak
        out = original_add(*args, **kwargs)
        peak = max(peak, engine.migrator.nr_queued)
        return out

    engine.migrator.add = add_and_watch  # type: ignore[method-assign]
    engine.step()
    assert peak == 100
    assert engine.stats.total["drop_queue_full"] == 64 * MiB // PAGE_SIZE - 100
    assert engine.stats.total["nr_kscand_migrated"] == 100
    assert engine.migrator.nr_queued == 0


@pytest.mark.parametrize("exchange", [False, True])
def test_target_full_stops_at_the_watermark_and_counts(exchange: bool) -> None:
    """The target fills exactly to its watermark; with exchange, the cold filler is
    demoted first (every page of it: the hot process wants far more than the node)."""
    nodes = [
        {"nid": 0, "capacity": "64MiB", "cpus": True, "tier": 4},
        {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67},
    ]
    sc = scenario(
        [{"name": "filler", "placement": "fast", "workload": COLD,
          "vmas": [{"kind": "anon", "size": "40MiB"}]},
         {"name": "hot", "placement": "slow", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "256MiB"}]}],
        nodes=nodes, tunables={"target_free_min_pct": 10, "exchange_enabled": exchange},
    )
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 10)
    top = machine.topology().node(0)
    reserve = int(np.ceil(top.capacity_pages * 0.10))
    assert top.free_pages == reserve  # filled exactly to the watermark, not beyond
    assert engine.stats.total["drop_target_full"] > 0
    filler = 40 * MiB // PAGE_SIZE
    demoted = filler if exchange else 0
    assert engine.stats.total["nr_kscand_demoted"] == demoted
    assert engine.stats.total["nr_kscand_exchange_demoted"] == demoted
    assert engine.stats.total["nr_kscand_migrated"] == (
        (64 - 40) * MiB // PAGE_SIZE - reserve + demoted
    )


def test_move_failures_are_counted_by_errno() -> None:
    sc = scenario([{"name": "hot", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "16MiB"}]}],
                  sim={"ebusy_rate": 0.5})
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, STEPS_PAST_REPROBE)
    total = engine.stats.total
    assert total["move_fail_ebusy"] > 0
    assert total["nr_kscand_migrate_failed"] == total["move_fail_ebusy"]
    assert total["nr_kscand_migrated"] > 0


def test_target_node_tunable_must_name_a_top_tier_node() -> None:
    # A scenario refuses target_node = 1 (slow tier) up front; the engine, given it
    # anyway (a topology that changed under the daemon), drops every candidate.
    sc = scenario([{"name": "hot", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}])
    sc = dataclasses.replace(sc, tunables=sc.tunables.replace(target_node=1))
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, STEPS_PAST_REPROBE)
    assert not moved_vaddrs(machine)
    assert engine.stats.total["drop_no_target"] > 0


def test_processes_start_and_exit_during_a_run() -> None:
    sc = scenario(
        [{"name": "late", "placement": "slow", "workload": HOT, "start_s": 1.0, "exit_s": 2.0,
          "vmas": [{"kind": "anon", "size": "8MiB"}]}],
    )
    report = run_scenario(dataclasses.replace(sc, duration_s=3.0))
    assert report.counters["nr_kscand_mm_enter"] == 1
    assert report.counters["nr_kscand_mm_exit"] == 1
    assert report.procs[0].exited
    assert report.procs[0].promoted_pages == 8 * MiB // PAGE_SIZE
    assert report.nr_exits == 1


def test_same_seed_same_numbers_other_seed_other_numbers() -> None:
    sc = scenario([{"name": "app", "placement": "slow",
                    "workload": {"kind": "hotset", "hot_fraction": 0.1, "hot_share": 0.9,
                                 "rate_per_s": 2e5},
                    "vmas": [{"kind": "anon", "size": "64MiB"}]}])

    def numbers(seed: int) -> dict[str, Any]:
        out = run_scenario(sc, seed=seed).to_json()
        out.pop("wall_s")
        out.pop("peak_rss_mib")
        return out

    assert numbers(3) == numbers(3)
    assert numbers(3) != numbers(4)


def test_identity_is_checked_before_moving() -> None:
    sc = scenario([{"name": "hot", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}],
                  tunables={"hot_history_depth": 1, "rank_hotness": False})
    machine, engine = machine_and_engine(sc)
    proc = machine.processes()[0]
    engine.mm_list.sync(machine.processes())
    engine.scan_pass()
    assert engine.migrator.queued(proc) > 0
    machine.kill(proc)
    impostor = ProcessId(proc.pid, proc.start_time + 1)
    assert not machine.is_alive(proc) and not machine.is_alive(impostor)
    engine.migrator.migrate(machine.topology(), engine.tunables)
    assert not moved_vaddrs(machine)
    assert engine.stats.of(proc)["drop_proc_gone"] == 4 * MiB // PAGE_SIZE
