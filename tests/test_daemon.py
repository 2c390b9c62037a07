"""The daemon loop on a small fake machine: promotion, stop latency, reload, runtime tunables."""

from __future__ import annotations

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from daemon_fakes import (
    FAST_TUNABLES,
    STOP_BOUND_S,
    DaemonThread,
    FakeMachine,
    fake_backend,
    fast_config,
    write_config,
)

from kscand.config import config_from_text
from kscand.core.tunables import Tunables
from kscand.daemon.control import request
from kscand.daemon.loop import Daemon
from kscand.daemon.retune import apply_tunable_changes, tunables_diff
from kscand.daemon.signals import run_foreground
from kscand.daemon.statedir import socket_path, state_file_path
from kscand.errors import ConfigError, KscandError
from kscand.machine import ProcessId

REPO = Path(__file__).resolve().parents[1]


make_config = fast_config


def promoted(machine: FakeMachine) -> int:
    return sum(int(np.count_nonzero(nid == 0)) for nid in machine.nid.values())


def test_daemon_promotes_every_hot_page_then_stops_cleanly(tmp_path: Path) -> None:
    machine = FakeMachine(nr_procs=2, nr_pages=64)
    run = DaemonThread(make_config(tmp_path / "state"), machine)
    run.wait_for(lambda: promoted(machine) == 128)
    run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 128)
    assert socket_path(tmp_path / "state").exists()
    assert state_file_path(tmp_path / "state").exists()
    run.stop(timeout_s=STOP_BOUND_S)
    assert not run.thread.is_alive()  # the stop was honoured (event, generous bound)
    assert run.status == [0]
    assert machine.closed
    # A clean stop leaves no stale state behind.
    assert not socket_path(tmp_path / "state").exists()
    assert not state_file_path(tmp_path / "state").exists()


def test_stop_interrupts_a_long_sleep(tmp_path: Path) -> None:
    machine = FakeMachine()
    run = DaemonThread(make_config(tmp_path / "s", "scan_sleep_ms = 60000"), machine)
    run.wait_for(lambda: run.daemon.counters.counts["steps"] >= 1)
    time.sleep(0.1)  # now in the 60 s sleep
    assert run.stop(timeout_s=STOP_BOUND_S) < STOP_BOUND_S  # far less than the 60 s sleep
    assert run.daemon.counters.counts["steps"] == 1


def test_stop_mid_migration_finishes_the_batch_in_flight_and_abandons_the_rest(
    tmp_path: Path,
) -> None:
    # 2 processes x 64 pages in batches of 8 folios at 0.3 s each: 4.8 s of moves.
    machine = FakeMachine(nr_procs=2, nr_pages=64, move_delay_s=0.3)
    tunables = "scan_sleep_ms = 0\nmigrate_batch_folios = 8"
    run = DaemonThread(make_config(tmp_path / "s", tunables), machine)
    run.wait_for(lambda: machine.moves_in_flight == 1)
    run.stop(timeout_s=STOP_BOUND_S)
    assert not run.thread.is_alive()
    assert machine.moves_in_flight == 0
    assert 1 <= machine.move_calls <= 3
    for nid in machine.nid.values():
        assert int(np.count_nonzero(nid == 0)) % 8 == 0  # whole batches only
    assert run.daemon.counters.counts["abandoned_steps"] == 1
    assert run.status == [0]


def test_set_tunables_takes_effect_from_the_next_step(tmp_path: Path) -> None:
    machine = FakeMachine()
    run = DaemonThread(make_config(tmp_path / "s", "scan_sleep_ms = 60000"), machine)
    try:
        run.wait_for(lambda: run.daemon.counters.counts["steps"] >= 1)
        new = run.daemon.set_tunables({"scan_sleep_ms": 5, "scan_size_bytes": "64MiB"})
        assert new.scan_sleep_ms == 5
        # The sleep deadline follows the new value: steps resume at once.
        run.wait_for(lambda: run.daemon.counters.counts["steps"] >= 5, timeout_s=2.0)
        assert run.daemon.engine.tunables.scan_size_bytes == 64 << 20
        assert run.daemon.status()["tunables"]["scan_sleep_ms"] == 5
    finally:
        run.stop()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scan_sleep_ms": -1}, "scan_sleep_ms: -1 is out of range"),
        ({"scan_sleep_ms": "fast"}, "scan_sleep_ms: expected a number"),
        ({"bogus": 1}, "bogus: unknown tunable"),
        ({"scan_size_bytes": 4097 * 1024}, "scan_size_bytes: must be a multiple"),
        ({}, "set: expected"),
        ("scan_sleep_ms=5", "set: expected"),
    ],
)
def test_bad_tunable_change_is_one_line_and_changes_nothing(
    changes: object, message: str
) -> None:
    base = Tunables()
    with pytest.raises(ConfigError) as info:
        apply_tunable_changes(base, changes)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value)


def test_tunables_diff_names_each_change() -> None:
    old = Tunables()
    assert tunables_diff(old, old) == ""
    assert tunables_diff(old, old.replace(scan_sleep_ms=50)) == "scan_sleep_ms 20 -> 50"


def test_reload_applies_new_tunables_and_keeps_old_ones_on_a_bad_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kscand")
    path = write_config(tmp_path / "kscand.toml", "[tunables]\nscan_sleep_ms = 30\n")
    config = config_from_text(path.read_text()).with_state_dir(tmp_path / "s")
    run = DaemonThread(config, FakeMachine(), config_path=path)
    try:
        write_config(path, "[tunables]\nscan_sleep_ms = 40\nmms_to_scan = 7\n")
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.engine.tunables.scan_sleep_ms == 40)
        assert run.daemon.engine.tunables.mms_to_scan == 7
        assert "scan_sleep_ms 30 -> 40" in caplog.text

        write_config(path, "[tunables]\nscan_sleep_ms = 99999999\n")
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.counters.counts["reload_errors"] == 1)
        assert run.daemon.engine.tunables.scan_sleep_ms == 40
        assert "reload failed, keeping the running config" in caplog.text
        assert "tunables.scan_sleep_ms: 99999999 is out of range" in caplog.text
        assert run.daemon.counters.counts["reloads"] == 1
    finally:
        run.stop()


def test_reload_says_which_sections_need_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path / "kscand.toml", "")
    run = DaemonThread(make_config(tmp_path / "s"), FakeMachine(), config_path=path,
                       overrides=lambda c: c.with_state_dir(tmp_path / "s"))  # --state-dir
    try:
        write_config(path, "[scan]\npids = [1]\n")
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.counters.counts["reloads"] == 1)
        assert "[scan] changed; that takes effect after a restart" in caplog.text
        assert run.daemon.config.scan.pids == ()
        # state_dir and metrics are set up once at start: a change needs a restart.
        other = tmp_path / "other"
        write_config(path, f'[daemon]\nstate_dir = "{other}"\nmetrics = "127.0.0.1:0"\n')
        run.daemon._overrides = None  # no --state-dir: the file's state_dir counts
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.counters.counts["reloads"] == 2)
        assert ("reload: daemon.state_dir, daemon.metrics changed; that takes effect "
                "after a restart") in caplog.text
        assert run.daemon.config.daemon.state_dir == tmp_path / "s"
    finally:
        run.stop()


def test_reload_of_a_config_that_became_a_directory_keeps_the_running_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path / "kscand.toml", "[tunables]\nscan_sleep_ms = 10\n")
    run = DaemonThread(make_config(tmp_path / "s"), FakeMachine(), config_path=path)
    try:
        before = run.daemon.tunables
        path.unlink()
        path.mkdir()
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.counters.counts["reload_errors"] == 1)
        assert run.thread.is_alive() and run.daemon.tunables == before
        failed = [r for r in caplog.records if "reload failed" in r.getMessage()]
        assert len(failed) == 1
        assert failed[0].getMessage() == (
            f"reload failed, keeping the running config: {path}: is not a regular file")
    finally:
        run.stop()
    assert run.status == [0]


def test_status_always_names_the_mm_enter_and_exit_counters(tmp_path: Path) -> None:
    """Readers of status (the guest tests, dashboards) index these before any exit."""
    run = DaemonThread(make_config(tmp_path / "s"), FakeMachine(nr_procs=0))
    try:
        run.wait_for(lambda: run.daemon.counters.counts["steps"] >= 1)
        totals = run.daemon.status()["totals"]
        assert totals["nr_kscand_mm_exit"] == 0 and totals["nr_kscand_mm_enter"] == 0
    finally:
        run.stop()


class FailingMachine(FakeMachine):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def processes(self) -> list[ProcessId]:
        raise self.error


def test_repeated_step_failures_stop_the_daemon_with_status_1(tmp_path: Path) -> None:
    run = DaemonThread(make_config(tmp_path / "s", "scan_sleep_ms = 1"),
                       FailingMachine(KscandError("cannot list processes")))
    run.thread.join(5.0)
    assert run.status == [1]
    assert run.daemon.counters.counts["step_errors"] == 10
    run.stop()


def test_a_bug_in_a_step_is_logged_and_exits_1(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run = DaemonThread(make_config(tmp_path / "s"), FailingMachine(ValueError("boom")))
    run.thread.join(5.0)
    assert run.status == [1]
    assert "kscand loop failed" in caplog.text
    run.stop()


def test_status_snapshot_has_totals_processes_and_tunables(tmp_path: Path) -> None:
    machine = FakeMachine(nr_procs=3, nr_pages=16)
    run = DaemonThread(make_config(tmp_path / "s"), machine)
    try:
        run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 48)
        status = run.daemon.status()
        assert status["pid"] == os.getpid()
        assert status["machine"] == "fake"
        assert status["access_source"] == "fake"
        assert status["totals"]["nr_kscand_migrated"] == 48
        assert sorted(p["pid"] for p in status["processes"]) == [100, 101, 102]
        assert all(p["counters"]["nr_kscand_migrated"] == 16 for p in status["processes"])
        assert status["tunables"]["scan_sleep_ms"] == 10
        assert status["daemon"]["steps"] >= 2
        assert status["snapshot_age_s"] < 1.0
    finally:
        run.stop()


def test_two_daemons_cannot_share_a_state_dir(tmp_path: Path) -> None:
    run = DaemonThread(make_config(tmp_path / "s"), FakeMachine())
    try:
        second = Daemon(make_config(tmp_path / "s"), fake_backend(FakeMachine()))
        with pytest.raises(KscandError, match="another kscand daemon is running"):
            second.start()
        second.close()
        # The refused daemon did not remove the running one's socket.
        assert socket_path(tmp_path / "s").exists()
    finally:
        run.stop()


def _signal_main_thread_when(
    condition: object, signum: int, done: threading.Event, timeout_s: float = 5.0
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)
    signal.pthread_kill(threading.main_thread().ident or 0, signum)
    done.set()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_run_foreground_within_1s(tmp_path: Path, signum: int) -> None:
    machine = FakeMachine()
    daemon = Daemon(make_config(tmp_path / "s", "scan_sleep_ms = 60000"), fake_backend(machine))
    sent = threading.Event()
    sent_at: list[float] = []

    def when_running() -> bool:
        if daemon.counters.counts["steps"] >= 1:
            sent_at.append(time.monotonic())
            return True
        return False

    previous = signal.getsignal(signum)
    threading.Thread(target=_signal_main_thread_when, args=(when_running, signum, sent)).start()
    status = run_foreground(daemon)
    assert sent.wait(STOP_BOUND_S)
    assert time.monotonic() - sent_at[0] < STOP_BOUND_S  # not the 60 s sleep
    assert status == 0
    assert signal.getsignal(signum) == previous  # handlers restored
    assert not socket_path(tmp_path / "s").exists()


def test_sighup_reloads_in_run_foreground(tmp_path: Path) -> None:
    path = write_config(tmp_path / "kscand.toml", "[tunables]\nscan_sleep_ms = 60000\n")
    config = config_from_text(path.read_text()).with_state_dir(tmp_path / "s")
    daemon = Daemon(config, fake_backend(FakeMachine()), config_path=path)
    done = threading.Event()

    def drive() -> None:
        deadline = time.monotonic() + 5.0
        while daemon.counters.counts["steps"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        write_config(path, "[tunables]\nscan_sleep_ms = 25\n")
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGHUP)
        while daemon.engine.tunables.scan_sleep_ms != 25 and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        done.set()

    threading.Thread(target=drive).start()
    assert run_foreground(daemon) == 0
    assert done.wait(1.0)
    assert daemon.engine.tunables.scan_sleep_ms == 25
    assert daemon.counters.counts["reloads"] == 1


# -- end to end: `python -m kscand run` as a subprocess ---------------------------------

SMALL_SCENARIO = """
name = "daemon-e2e"
description = "64 MiB, 10 % hot, starting on the slow node"
seed = 1
duration_s = 600
sample_interval_s = 1

[[nodes]]
nid = 0
capacity = "256MiB"
cpus = true
tier = 4
latency_ns = 80

[[nodes]]
nid = 1
capacity = "256MiB"
cpus = false
tier = 67
latency_ns = 300

[[processes]]
name = "app"
placement = "slow"
workload = { kind = "hotset", hot_fraction = 0.10, hot_share = 0.95, rate_per_s = 2e6 }
vmas = [{ kind = "anon", size = "64MiB" }]
"""


def _kscand(*argv: str) -> list[str]:
    return [sys.executable, "-m", "kscand", *argv]


def _wait_for_path(path: Path, proc: subprocess.Popen[str], timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"kscand run exited with {proc.returncode}: {proc.stderr}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear")
        time.sleep(0.05)


def test_run_on_this_host_refuses_with_the_probe_reason(tmp_path: Path) -> None:
    from kscand.live import probe

    reason = probe().blocking_reason()
    if reason is None:
        pytest.skip("this host can run the live daemon; the refusal path does not apply")
    proc = subprocess.run(
        _kscand("run", "--config", str(REPO / "contrib" / "kscand.toml"),
                "--state-dir", str(tmp_path / "s")),
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"kscand run: {reason}\n"
    assert not (tmp_path / "s").exists()  # refused before touching the state dir


def test_run_sim_end_to_end_status_tune_reload_and_sigterm(tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL_SCENARIO)
    config = write_config(
        tmp_path / "kscand.toml", f"[tunables]\n{FAST_TUNABLES}scan_sleep_ms = 20\n"
    )
    state_dir = tmp_path / "s"
    proc = subprocess.Popen(
        _kscand("run", "--sim", str(scenario), "--config", str(config),
                "--state-dir", str(state_dir)),
        stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait_for_path(socket_path(state_dir), proc)
        assert stat.S_IMODE(os.lstat(socket_path(state_dir)).st_mode) == 0o600
        path = socket_path(state_dir)
        deadline = time.monotonic() + 20
        while request(path, {"cmd": "status"})["status"]["totals"]["nr_kscand_migrated"] == 0:
            assert time.monotonic() < deadline, "nothing promoted"
            time.sleep(0.1)
        status = subprocess.run(
            _kscand("status", "--json", "--state-dir", str(state_dir)),
            capture_output=True, text=True, timeout=60,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["access_source"] == "simulated"

        tune = subprocess.run(
            _kscand("tune", "--state-dir", str(state_dir), "mms_to_scan=5"),
            capture_output=True, text=True, timeout=60,
        )
        assert tune.stdout == "mms_to_scan = 5 (was 4096)\n"

        write_config(config, f"[tunables]\n{FAST_TUNABLES}scan_sleep_ms = 30\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while request(path, {"cmd": "get"})["tunables"]["scan_sleep_ms"] != 30:
            assert time.monotonic() < deadline, "SIGHUP did not reload"
            time.sleep(0.05)
        # The reload re-read the file, so the value set with `kscand tune` is gone.
        assert request(path, {"cmd": "get"})["tunables"]["mms_to_scan"] == 4096

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < STOP_BOUND_S
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "access source: simulated" in stderr
    assert "tunables from control socket: mms_to_scan 4096 -> 5" in stderr
    assert "stopping (SIGTERM)" in stderr
    assert "Traceback" not in stderr
    assert sorted(os.listdir(state_dir)) == []


# -- logging -------------------------------------------------------------------------------


def test_journal_format_has_priority_prefix_and_no_timestamp() -> None:
    from kscand.cli.run import JournalFormatter

    formatter = JournalFormatter("%(message)s")
    record = logging.LogRecord("kscand", logging.WARNING, __file__, 1, "a step took %d s",
                               (3,), None)
    assert formatter.format(record) == "<4>a step took 3 s"
    record = logging.LogRecord("kscand", logging.INFO, __file__, 1, "two\nlines", None, None)
    assert formatter.format(record) == "<6>two\n<6>lines"


def test_stderr_is_journal_only_when_journal_stream_names_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kscand.cli.run import stderr_is_journal

    with open(tmp_path / "stderr", "w") as fake_stderr:
        monkeypatch.setattr(sys, "stderr", fake_stderr)
        st = os.fstat(fake_stderr.fileno())
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        assert not stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert stderr_is_journal()
        # Inherited by a child whose stderr went elsewhere: not the journal.
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino + 1}")
        assert not stderr_is_journal()
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert not stderr_is_journal()


def test_trace_events_go_to_the_trace_file_as_json_lines(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    config = config_from_text(
        f'[tunables]\n{FAST_TUNABLES}scan_sleep_ms = 10\n[daemon]\ntrace = "{trace}"\n'
    ).with_state_dir(tmp_path / "s")
    machine = FakeMachine(nr_procs=2, nr_pages=16)
    run = DaemonThread(config, machine)
    try:
        run.wait_for(lambda: promoted(machine) == 32)
    finally:
        run.stop()
    assert stat.S_IMODE(os.stat(trace).st_mode) == 0o600
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    names = {e["event"] for e in events}
    assert {"mm_enter", "scan_mm_start", "scan_mm_end", "scan_mm_migrate"} <= names
    assert {e["mm"] for e in events if e["event"] == "mm_enter"} == {"100@1000", "101@1001"}
    assert all(isinstance(e["ts_ns"], int) for e in events)
    assert run.daemon.trace.nr_events == len(events)


def test_trace_path_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    config = config_from_text(
        f'[daemon]\ntrace = "{tmp_path}/absent/trace.jsonl"\n'
    ).with_state_dir(tmp_path / "s")
    with pytest.raises(ConfigError, match=r"^daemon.trace: cannot open .*absent"):
        Daemon(config, fake_backend(FakeMachine()))


def test_loop_call_times_out_when_the_loop_does_not_run(tmp_path: Path) -> None:
    daemon = Daemon(fast_config(tmp_path / "s"), fake_backend(FakeMachine()))
    with pytest.raises(KscandError, match="the daemon's loop is busy"):
        daemon.call_in_loop(lambda: 1, timeout_s=0.1)


def test_state_file_write_failure_is_said_once_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import kscand.daemon.loop

    def full_disk(_state_dir: Path, _state: dict[str, object]) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(kscand.daemon.loop, "write_state_file", full_disk)
    config = config_from_text(
        f"[tunables]\n{FAST_TUNABLES}\n[daemon]\nstatus_interval_ms = 100\n"
    ).with_state_dir(tmp_path / "s")
    run = DaemonThread(config, FakeMachine())
    try:
        run.wait_for(lambda: run.daemon.counters.counts["state_write_errors"] >= 3)
    finally:
        run.stop()
    assert caplog.text.count("cannot write the state file") == 1


def test_counters_of_exited_processes_are_pruned_and_totals_kept(tmp_path: Path) -> None:
    from kscand.daemon.loop import PRUNE_SLACK

    machine = FakeMachine(nr_procs=2 * PRUNE_SLACK + 10, nr_pages=4)
    run = DaemonThread(make_config(tmp_path / "s"), machine)
    try:
        nr_procs = len(machine.nid)
        run.wait_for(lambda: promoted(machine) == 4 * nr_procs)
        keep = ProcessId(100, 1000)
        run.daemon.call_in_loop(
            lambda: [machine.nid.pop(p) for p in list(machine.nid) if p != keep])
        run.wait_for(lambda: len(run.daemon.engine.mm_list) == 1)
        run.wait_for(lambda: run.daemon.counters.counts["pruned_process_counters"] >= 1)
        stats = run.daemon.engine.stats
        assert list(stats.per_proc) == [keep]
        assert stats.total["nr_kscand_migrated"] == 4 * nr_procs  # totals keep them
    finally:
        run.stop()


def test_the_backend_s_young_scans_reach_the_engine(tmp_path: Path) -> None:
    """DAMON's regions blur hot runs' edges: the live backend asks for 3 consecutive
    accessed scans (kscand.live.DAMON_YOUNG_SCANS) and the daemon's engine uses it while
    promote_young_scans is 0."""
    import dataclasses

    from kscand.live import DAMON_YOUNG_SCANS

    assert DAMON_YOUNG_SCANS == 3
    backend = dataclasses.replace(fake_backend(FakeMachine()), source_young_scans=3)
    daemon = Daemon(make_config(tmp_path / "s"), backend)
    try:
        assert daemon.engine.source_young_scans == 3
    finally:
        daemon.close()
