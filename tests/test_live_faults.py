"""Injected move_pages(2) faults on the live machine (kscand.testing.faults.FaultyMover around
the real mover): counted by reason, fed back into the scan period, never fatal, never
retried in a loop. Needs root; skips otherwise (fails under CI=true)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from daemon_fakes import DaemonThread, fast_config
from live_harness import Spawner, TwoTierHost, host_can_run_live_tests

from kscand.backends import Backend
from kscand.testing.faults import FaultyMover

pytestmark = pytest.mark.live

PAGE_RATES = {"ENOMEM": 0.08, "EBUSY": 0.08, "ENOENT": 0.08, "EFAULT": 0.08}
CALL_RATES = {"ESRCH": 0.1, "EPERM": 0.1}
MIN_PERIOD_MS = 10  # fast_config's scan_period_min_ms
TUNABLES = "scan_sleep_ms = 5\nhot_history_depth = 1\nmigrate_batch_folios = 128"
EVENT_BOUND_S = 60.0  # generous: a loaded machine is slow, not wrong
MIN_SCANS = 30  # per run: the feedback has time to stretch the periods


@pytest.fixture
def spawner() -> Iterator[Spawner]:
    require(host_can_run_live_tests() is None, str(host_can_run_live_tests()))
    s = Spawner()
    try:
        for _ in range(3):
            s.spawn(lifetime_s=60, size_bytes=4 << 20)  # 1024 pages each: steady work
        yield s
    finally:
        s.close()


def every_fault_seen(run: DaemonThread, faulty: FaultyMover | None) -> bool:
    """The events the test judges: each kind injected and counted, some pages moved,
    enough scans for the feedback to act."""
    total = run.daemon.engine.stats.total
    if total["nr_kscand_mm_scans"] < MIN_SCANS or total["nr_kscand_migrated"] == 0:
        return False
    if faulty is None:
        return True
    return (all(faulty.injected_pages[name] > 0 for name in PAGE_RATES)
            and all(faulty.injected_calls[name] > 0 for name in CALL_RATES))


def run_daemon(tmp_path: os.PathLike[str], faults: dict[str, float] | None
               ) -> tuple[DaemonThread, TwoTierHost, FaultyMover | None]:
    machine = TwoTierHost(sticky_slow=True)  # promoted pages stay slow: work never dries up
    faulty = None
    if faults is not None:
        faulty = FaultyMover(machine.mover, faults, seed=3)
        machine.mover = faulty  # type: ignore[assignment]
    backend = Backend(machine, "live-two-tier", "all-young", "the test marks every page",
                      close=machine.close)
    run = DaemonThread(fast_config(tmp_path, TUNABLES), backend)  # type: ignore[arg-type]
    run.wait_for(lambda: run.daemon.counters.counts["steps"] > 0)
    run.started_s = time.monotonic()  # type: ignore[attr-defined]
    run.wait_for(lambda: every_fault_seen(run, faulty), timeout_s=EVENT_BOUND_S)
    return run, machine, faulty


def test_injected_faults_are_counted_fed_back_and_never_fatal(
    spawner: Spawner, tmp_path: os.PathLike[str]
) -> None:
    run, _machine, faulty = run_daemon(Path(tmp_path) / "faults", {**PAGE_RATES, **CALL_RATES})
    try:
        assert run.thread.is_alive()  # still running after every kind of fault
        periods = [slot.scan_period_ms for slot in run.daemon.engine.mm_list]
        run_s = time.monotonic() - run.started_s  # type: ignore[attr-defined]
    finally:
        run.stop(timeout_s=EVENT_BOUND_S)
    assert faulty is not None
    total = run.daemon.engine.stats.total
    counts = run.daemon.counters.counts
    for name in PAGE_RATES:  # every per-page fault counted under its own reason
        assert total[f"move_fail_{name.lower()}"] == faulty.injected_pages[name] > 0, name
    assert faulty.injected_calls["EPERM"] > 0 and total["move_fail_eperm"] > 0
    assert faulty.injected_calls["ESRCH"] > 0 and total["drop_proc_gone"] > 0
    assert total["nr_kscand_migrated"] > 0  # the pages that did not fail moved
    assert run.status == [0] and counts["step_errors"] == 0 and not run.thread.is_alive()
    # Feedback: the failures stretched every child's period well above the minimum.
    assert len(periods) == 3 and min(periods) > 5 * MIN_PERIOD_MS, periods
    # Never retried in a loop: every attempt is a candidate a scan queued.
    attempted = total["nr_kscand_migrated"] + total["nr_kscand_migrate_failed"]
    assert attempted + total["drop_proc_gone"] <= total["nr_kscand_migadded"]
    # At most one scan per process per minimum period (the run's own length, measured).
    assert total["nr_kscand_mm_scans"] <= 3 * (run_s + 1) * 1000 / MIN_PERIOD_MS

    print(f"injected pages {dict(faulty.injected_pages)}, calls {dict(faulty.injected_calls)}; "
          f"migrated {total['nr_kscand_migrated']}, failed {total['nr_kscand_migrate_failed']}, "
          f"drop_proc_gone {total['drop_proc_gone']}, periods ms {[round(p) for p in periods]}")
    # The same run without faults keeps every period at the minimum: the stretch above
    # is the feedback, not the work drying up.
    clean, _m, _f = run_daemon(Path(tmp_path) / "clean", None)
    try:
        clean_periods = [slot.scan_period_ms for slot in clean.daemon.engine.mm_list]
    finally:
        clean.stop()
    assert clean_periods == [MIN_PERIOD_MS] * 3
    print(f"without faults: periods ms {clean_periods}")
    assert clean.daemon.engine.stats.total["nr_kscand_migrate_failed"] == 0


def test_fault_mover_refuses_bad_rates() -> None:
    with pytest.raises(ValueError, match="unknown faults"):
        FaultyMover(object(), {"EAGAIN": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="add up to more than 1"):
        FaultyMover(object(), {"ENOMEM": 0.6, "EBUSY": 0.6})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="probabilities"):
        FaultyMover(object(), {"ESRCH": 1.5})  # type: ignore[arg-type]
