"""Live process churn: children that start, touch their memory, exit or are killed while the
daemon scans them on this host's real /proc and calls the real move_pages(2).

Asserts: no move is issued for a (pid, start time) that no longer matches; the queued
candidates of a process that died are dropped and counted; nothing reaches the loop.
Needs root; skips otherwise (fails under CI=true).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator

import numpy as np
import pytest
from conftest import require
from daemon_fakes import STOP_BOUND_S, DaemonThread, fast_config
from live_harness import (
    IdentityCheckingMover,
    Spawner,
    TwoTierHost,
    host_can_run_live_tests,
    kill,
    wait_dead,
)

import kscand.live.linux
from kscand.backends import Backend
from kscand.daemon.loop import PRUNE_SLACK
from kscand.errors import ProcessGone
from kscand.machine import PageBatch, ProcessId

pytestmark = pytest.mark.live

CHURN_S = 2.5
MIN_CHILDREN = 60
CHURN_BOUND_S = 30.0
TUNABLES = "scan_sleep_ms = 5\nhot_history_depth = 1\nmigrate_batch_folios = 64"


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    require(host_can_run_live_tests() is None, str(host_can_run_live_tests()))
    s = Spawner()
    try:
        yield s
    finally:
        s.close()


def test_move_pages_on_a_zombie_is_process_gone_not_unsupported(spawner: Spawner) -> None:
    machine = TwoTierHost()
    try:
        child = spawner.spawn(lifetime_s=30)
        vaddr = np.array([0x10000], dtype=np.uint64)
        kill(child.pid)
        wait_dead(child.pid)  # a zombie: listed, no mm; move_pages(2) says EINVAL
        assert machine.procs.stat(child.pid).state == "Z"
        with pytest.raises(ProcessGone):
            machine.move_pages(child, vaddr, 0)
        with pytest.raises(ProcessGone):  # the check before the call already says so
            machine.query_nodes(child, vaddr)
        # The raw call on the zombie, without the identity check first: EINVAL from the
        # kernel (the task has no mm) is an exit too, even while /proc still shows the
        # task as running (exit_mm() comes before the zombie state).
        with pytest.raises(ProcessGone, match="no address space"):
            machine.mover.move(child.pid, vaddr, 0)
    finally:
        machine.close()


def test_churn_while_the_daemon_scans(
    spawner: Spawner, tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kscand.live.linux, "PROCESS_LIST_TTL_NS", 50_000_000)
    machine = TwoTierHost()
    mover = IdentityCheckingMover(machine.mover, spawner)
    machine.mover = mover  # type: ignore[assignment]
    doomed_at: dict[ProcessId, int] = {}  # killed by the scan hook: after its pages queued

    def doom_some(proc: ProcessId, pages: PageBatch) -> None:
        # Every fourth child, at its first range with pages: SIGKILL and wait until it
        # is dead, so its candidates are queued for a process that no longer exists.
        if proc in doomed_at or len(pages) == 0 or proc.pid % 4 or len(doomed_at) >= 12:
            return
        kill(proc.pid)
        wait_dead(proc.pid)
        doomed_at[proc] = time.monotonic_ns()

    machine.access.hook = doom_some  # type: ignore[attr-defined]
    backend = Backend(machine, "live-two-tier", "all-young", "the test marks every page",
                      close=machine.close)
    run = DaemonThread(fast_config(tmp_path / "s", TUNABLES), backend)  # type: ignore[operator]
    rng = random.Random(7)
    killed_by_test = 0
    try:
        # CHURN_S of churn and at least MIN_CHILDREN children, whichever takes longer
        # (a loaded machine forks slower: 57 in 2.5 s once), within a generous bound.
        start = time.monotonic()
        while time.monotonic() < start + CHURN_BOUND_S and (
            time.monotonic() < start + CHURN_S or len(spawner.children) < MIN_CHILDREN
        ):
            child = spawner.spawn(lifetime_s=rng.uniform(0.02, 0.4))
            if rng.random() < 0.3:  # killed at a random moment of its life
                time.sleep(rng.uniform(0, 0.02))
                kill(child.pid)
                killed_by_test += 1
            spawner.reap()
            time.sleep(0.015)
        for pid in list(spawner.children):
            kill(pid)
        for pid in list(spawner.children):
            wait_dead(pid)
        spawner.reap()
        engine = run.daemon.engine
        run.wait_for(lambda: len(engine.mm_list) == 0, timeout_s=5.0)
        steps = run.daemon.counters.counts["steps"]
        run.wait_for(lambda: run.daemon.counters.counts["steps"] >= steps + 3)
    finally:
        elapsed = run.stop(timeout_s=STOP_BOUND_S)
    counts = run.daemon.counters.counts
    total = run.daemon.engine.stats.total

    assert len(spawner.children) >= MIN_CHILDREN and killed_by_test >= 10 and len(doomed_at) >= 3
    # The loop never saw an exception; the daemon stopped cleanly.
    assert run.status == [0] and counts["step_errors"] == 0 and counts["steps"] > 20
    assert elapsed < STOP_BOUND_S  # the loop ended (generous bound)
    # Moves were issued (the harness works), never for a pid that named another process,
    # and never for a process after the test had killed it and seen it dead.
    assert len(mover.calls) > 0 and total["nr_kscand_migrated"] > 0
    assert [c for c in mover.calls if not c.identity_ok] == []
    pids = {proc.pid: at for proc, at in doomed_at.items()}
    assert [c for c in mover.calls if c.pid in pids and c.at_ns > pids[c.pid]] == []
    # Queued candidates of dead processes were dropped and counted, by process.
    assert total["drop_proc_gone"] > 0
    assert total["nr_kscand_migadded"] >= (
        total["nr_kscand_migrated"] + total["nr_kscand_migrate_failed"] + total["drop_proc_gone"])
    # Nothing left behind: no slot, no queue, bounded per-process counters.
    engine = run.daemon.engine
    assert len(engine.mm_list) == 0 and engine.migrator.nr_queued == 0
    assert len(engine.stats.per_proc) <= PRUNE_SLACK  # see test_daemon's prune test
    # A process found gone leaves the cached process list at once: never listed again.
    assert total["nr_kscand_mm_enter"] <= len(spawner.children)
    print(f"children {len(spawner.children)}, killed {killed_by_test} + {len(doomed_at)} "
          f"mid-scan, entered {total['nr_kscand_mm_enter']}, scans "
          f"{total['nr_kscand_mm_scans']}, move calls {len(mover.calls)}, migrated "
          f"{total['nr_kscand_migrated']}, drop_proc_gone {total['drop_proc_gone']}, "
          f"scan_proc_gone {total['scan_proc_gone']}, steps {counts['steps']}")
