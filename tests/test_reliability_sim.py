"""Reliability on the simulated machine: churn with pid reuse, injected move faults,
bounded queues and memory. `make stress` runs the same tests at full size
(KSCAND_STRESS=1): >= 10,000 process exits, a 1 TiB machine with every page hot."""

from __future__ import annotations

import errno
import os
import resource
from typing import Any

import numpy as np
from simkit import HOT, machine_and_engine, run_steps, scenario

from kscand.core.engine import Kscand
from kscand.errors import ProcessGone
from kscand.machine import PAGE_SIZE, I32Array, MachineProxy, ProcessId, U64Array
from kscand.sim.machine import SimMachine

STRESS = os.environ.get("KSCAND_STRESS") == "1"
MiB, GiB = 1 << 20, 1 << 30


class GuardedMachine(MachineProxy):
    """Checks every move_pages call against the identity the machine knows *now*."""

    def __init__(self, inner: SimMachine) -> None:
        super().__init__(inner)
        self.inner = inner
        self.stale_calls = 0
        self.moved_for: list[ProcessId] = []

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        alive_at_call = self.inner.is_alive(proc)
        if not alive_at_call:
            self.stale_calls += 1
        status = self.inner.move_pages(proc, vaddrs, nid)  # raises ProcessGone if stale
        if np.any(status == nid):
            assert alive_at_call, f"pages moved for a dead identity {proc}"
            self.moved_for.append(proc)
        return status


def test_churn_with_pid_reuse_never_moves_for_a_stale_identity() -> None:
    nr_procs = 12_000 if STRESS else 2_000
    sc = scenario(
        [{"name": "short", "count": nr_procs, "stagger_s": 0.004, "lifetime_s": 0.25,
          "placement": "slow", "workload": HOT, "vmas": [{"kind": "anon", "size": "1MiB"}]},
         {"name": "long", "placement": "slow", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "8MiB"}]}],
        nodes=[{"nid": 0, "capacity": "1GiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67}],
        tunables={"hot_history_depth": 1, "migrate_queue_max": 2048, "migrate_batch_folios": 32},
        sim={"pid_max": 400, "move_cost_ns_per_page": 200_000},  # slow moves: exits race them
    )
    machine = SimMachine(sc)
    guard = GuardedMachine(machine)  # every part of the engine moves through it
    engine = Kscand(guard, sc.tunables, scale_policy=machine.scale_of)
    end_s = nr_procs * 0.004 + 1.0
    while machine.clock.now_s < end_s:
        run_steps(machine, engine, 1)  # no exception may reach the loop
    assert machine.nr_exits >= nr_procs
    pids = [p.proc.pid for p in machine.exited]
    assert len(pids) - len(set(pids)) > nr_procs // 2  # pids were reused, a lot
    total = engine.stats.total
    assert total["drop_proc_gone"] > 0  # queued entries of dead processes: dropped, counted
    assert total["nr_kscand_migrated"] > 0
    assert len(engine.mm_list) == len(machine.processes())
    assert len(engine.mm_list._ring) <= 2 * len(engine.mm_list) + 66  # no slot leak
    assert engine.migrator.nr_queued <= 2048


def test_injected_move_faults_are_counted_fed_back_and_never_retried_forever() -> None:
    faults = {"EBUSY": 0.05, "ENOENT": 0.05, "EFAULT": 0.05, "ENOMEM": 0.05, "EACCES": 0.05,
              "EIO": 0.05, "ESRCH": 0.05, "EPERM": 0.05}
    sc = scenario(
        [{"name": f"p{i}", "placement": "slow", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "32MiB"}]} for i in range(4)],
        nodes=[{"nid": 0, "capacity": "2GiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "2GiB", "cpus": False, "tier": 67}],
        tunables={"migrate_batch_folios": 64, "scan_period_min_ms": 10, "scan_period_max_ms": 5000,
                  "mm_scan_period_ms": 10},
        sim={"move_faults": faults},
    )
    machine, engine = machine_and_engine(sc)
    run_steps(machine, engine, 60)
    total = engine.stats.total
    for name in ("EBUSY", "ENOENT", "EFAULT", "ENOMEM", "EACCES", "EIO"):
        assert total[f"move_fail_{name.lower()}"] == machine.nr_injected[name] > 0, name
    assert machine.nr_injected["EPERM"] > 0 and total["move_fail_eperm"] > 0
    assert machine.nr_injected["ESRCH"] > 0 and total["drop_proc_gone"] > 0
    # Failure feedback: the periods were stretched away from the 10 ms floor.
    periods = [slot.scan_period_ms for slot in engine.mm_list]
    assert min(periods) > 10 * 2
    # Never retried forever: every attempt came from a queued candidate.
    attempted = total["nr_kscand_migrated"] + total["nr_kscand_migrate_failed"]
    assert attempted <= total["nr_kscand_migadded"]
    assert engine.migrator.nr_queued == 0


def test_every_page_hot_keeps_the_queue_at_its_cap_and_memory_flat() -> None:
    size = "1TiB" if STRESS else "32GiB"
    cap = 4096
    sc = scenario(
        [{"name": "huge", "placement": "slow", "workload": {"kind": "uniform", "rate_per_s": 1e13},
          "vmas": [{"kind": "anon", "size": size}]}],
        nodes=[{"nid": 0, "capacity": "64GiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "2TiB" if STRESS else "64GiB", "cpus": False, "tier": 67}],
        tunables={"migrate_queue_max": cap, "hot_history_depth": 1,
                  "scan_size_min_bytes": "4GiB", "scan_size_max_bytes": "4GiB",
                  "scan_size_bytes": "4GiB"},
    )
    machine, engine = machine_and_engine(sc)
    machine.record_moves = False
    peak_queue = 0
    add = engine.migrator.queue.add

    def watched_add(*args: Any, **kwargs: Any) -> Any:
        nonlocal peak_queue
        out = add(*args, **kwargs)
        peak_queue = max(peak_queue, engine.migrator.nr_queued)
        return out

    engine.migrator.queue.add = watched_add  # type: ignore[method-assign]
    passes_per_round = (1 << 40 if STRESS else 32 * GiB) // (4 * GiB)
    run_steps(machine, engine, passes_per_round)  # first round: history arrays allocated
    rss_after_first = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_steps(machine, engine, 2 * passes_per_round)
    rss_after_third = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak_queue <= cap
    assert engine.stats.total["drop_queue_full"] > 0
    # Flat: the later rounds add less than 64 MiB of peak RSS (KiB units).
    assert rss_after_third - rss_after_first < 64 * 1024
    # One pass is bounded by mms_to_scan x scan size: each step scanned <= 4 GiB.
    assert engine.stats.total["nr_kscand_ptes_scanned"] <= 3 * passes_per_round * 4 * GiB // PAGE_SIZE


def test_sim_move_pages_refuses_a_stale_identity() -> None:
    sc = scenario([{"name": "p", "placement": "slow", "workload": HOT,
                    "vmas": [{"kind": "anon", "size": "4MiB"}]}])
    machine = SimMachine(sc)
    proc = machine.processes()[0]
    vaddr = np.array([machine.vmas(proc)[0].start], dtype=np.uint64)
    stale = ProcessId(proc.pid, proc.start_time + 1)
    try:
        machine.move_pages(stale, vaddr, 0)
    except ProcessGone:
        pass
    else:
        raise AssertionError("a stale identity was allowed to move pages")
    assert machine.move_pages(proc, vaddr, 0).tolist() == [0]
    assert machine.move_pages(proc, vaddr + np.uint64(1 << 40), 0).tolist() == [-errno.EFAULT]
