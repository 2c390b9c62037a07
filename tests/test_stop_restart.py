"""Graceful stop and restart: SIGTERM in the middle of a move batch, a restart after a clean
stop and after a SIGKILL (stale socket, state file, metrics port) with no stale state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from daemon_fakes import (
    FAST_TUNABLES,
    STOP_BOUND_S,
    FakeMachine,
    fake_backend,
    fast_config,
    two_tier_scenario,
    write_config,
)

from kscand.cli import main as cli_main
from kscand.config import parse_metrics_address
from kscand.daemon.control import request
from kscand.daemon.loop import Daemon
from kscand.daemon.signals import run_foreground
from kscand.daemon.statedir import socket_path, state_file_path

REPO = Path(__file__).resolve().parents[1]


def test_sigterm_during_a_move_batch_finishes_it_and_exits_within_1s(tmp_path: Path) -> None:
    # Batches of 8 folios taking 0.3 s each: SIGTERM lands inside one.
    machine = FakeMachine(nr_procs=2, nr_pages=64, move_delay_s=0.3)
    config = fast_config(tmp_path / "s", "scan_sleep_ms = 0\nmigrate_batch_folios = 8")
    config = config.with_metrics(parse_metrics_address("0", "m"))
    daemon = Daemon(config, fake_backend(machine))
    sent_at: list[float] = []

    def send_sigterm_mid_batch() -> None:
        deadline = time.monotonic() + 5
        while machine.moves_in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        sent_at.append(time.monotonic())
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    threading.Thread(target=send_sigterm_mid_batch).start()
    status = run_foreground(daemon)
    returned_at = time.monotonic()
    assert status == 0
    assert returned_at - sent_at[0] < STOP_BOUND_S  # the batches left would take 4.5 s more
    print(f"SIGTERM mid-batch to return: {returned_at - sent_at[0]:.3f} s, "
          f"{machine.move_calls} batches issued")
    assert machine.moves_in_flight == 0  # the batch in flight completed ...
    assert 1 <= machine.move_calls <= 3  # ... and no new one started after the stop
    for nid in machine.nid.values():
        assert int(np.count_nonzero(nid == 0)) % 8 == 0  # whole batches only
    assert daemon.counters.counts["abandoned_steps"] == 1
    assert sum(int(np.count_nonzero(n == 0)) for n in machine.nid.values()) < 128  # the rest
    assert os.listdir(tmp_path / "s") == []  # no socket, no state file
    assert daemon.metrics_url is None

    # A restart on the same state directory starts from scratch.
    again = Daemon(fast_config(tmp_path / "s"), fake_backend(machine))
    again.start()
    try:
        snapshot = request(socket_path(tmp_path / "s"), {"cmd": "status"})["status"]
        assert snapshot["daemon"]["steps"] == 0 and snapshot["processes"] == []
    finally:
        again.close()


SCENARIO = two_tier_scenario(
    "restart",
    """
[[processes]]
name = "app"
placement = "slow"
workload = { kind = "uniform", rate_per_s = 1e9 }
vmas = [{ kind = "anon", size = "16MiB" }]
""",
)


def start(tmp_path: Path, metrics: str) -> subprocess.Popen[str]:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    config = write_config(tmp_path / "kscand.toml", f"[tunables]\n{FAST_TUNABLES}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kscand", "run", "--sim", str(scenario), "--config", str(config),
         "--state-dir", str(tmp_path / "s"), "--metrics", metrics],
        stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the daemon did not answer"
        try:
            reply = request(socket_path(tmp_path / "s"), {"cmd": "status"}, timeout_s=1)
        except Exception:
            time.sleep(0.05)
            continue
        if reply["status"]["pid"] == proc.pid and reply["status"]["state"] == "running":
            return proc
        time.sleep(0.05)


def test_restart_after_sigkill_replaces_the_stale_socket_state_file_and_port(
    tmp_path: Path, capsys: object
) -> None:
    first = start(tmp_path, "127.0.0.1:0")
    try:
        status = request(socket_path(tmp_path / "s"), {"cmd": "status"})["status"]
        port = status["metrics_url"].rsplit(":", 1)[1].split("/")[0]
        deadline = time.monotonic() + 10
        while not state_file_path(tmp_path / "s").exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first.kill()  # no cleanup at all: socket and status.json stay behind
        first.wait()
        if first.stderr:
            first.stderr.close()
    assert sorted(os.listdir(tmp_path / "s")) == ["kscand.sock", "status.json"]
    stale = json.loads(state_file_path(tmp_path / "s").read_text())
    assert stale["pid"] == first.pid

    # `kscand status` does not present the dead daemon's numbers as live ones.
    rc = cli_main(["status", "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err  # type: ignore[attr-defined]
    assert rc == 1
    assert err == (f"kscand status: no kscand daemon is running (stale "
                   f"{state_file_path(tmp_path / 's')} of pid {first.pid})\n")

    second = start(tmp_path, f"127.0.0.1:{port}")  # same socket path, same port
    try:
        status = request(socket_path(tmp_path / "s"), {"cmd": "status"})["status"]
        assert status["pid"] == second.pid and status["uptime_s"] < 20
        assert status["metrics_url"] == f"http://127.0.0.1:{port}/metrics"
        sent = time.monotonic()
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=10) == 0
        assert time.monotonic() - sent < STOP_BOUND_S
        print(f"restarted daemon: SIGTERM to exit {time.monotonic() - sent:.3f} s")
    finally:
        if second.poll() is None:
            second.kill()
            second.wait()
    stderr = second.stderr.read() if second.stderr else ""
    assert "Traceback" not in stderr
    assert os.listdir(tmp_path / "s") == []
