"""Issue 12, the daemon's inputs: a config path that is a directory, a SIGHUP while the
daemon is still importing, the control client against replies of another shape."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_fakes import FAST_TUNABLES, STOP_BOUND_S, two_tier_scenario, write_config

from kscand.cli import main as cli_main
from kscand.daemon.control import request
from kscand.daemon.statedir import socket_path

SCENARIO = two_tier_scenario(
    "early-hup",
    """
[[processes]]
name = "app"
placement = "slow"
workload = { kind = "uniform", rate_per_s = 1e6 }
vmas = [{ kind = "anon", size = "4MiB" }]
""",
)


def test_config_path_that_is_a_directory_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(["run", "--config", str(tmp_path), "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == f"kscand run: {tmp_path}: is not a regular file\n"


def sighup_caught(pid: int) -> bool:
    """SIGHUP is in the process's caught set (/proc/PID/status SigCgt): the recorder is in."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def test_sighup_during_start_up_is_a_reload_not_a_death(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(SCENARIO)
    config = write_config(tmp_path / "kscand.toml", f"[tunables]\n{FAST_TUNABLES}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kscand", "run", "--sim", str(scenario), "--config", str(config),
         "--state-dir", str(tmp_path / "s")],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + STOP_BOUND_S
        while not sighup_caught(proc.pid):  # the event: the first lines of main() ran
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.001)
        proc.send_signal(signal.SIGHUP)  # long before the daemon's own handlers
        answered = False
        while not answered:
            assert proc.poll() is None, "SIGHUP during start-up killed the daemon"
            assert time.monotonic() < deadline, "the daemon did not answer"
            try:
                reply = request(socket_path(tmp_path / "s"), {"cmd": "status"}, timeout_s=1)
                answered = reply["status"]["daemon"]["reloads"] == 1
            except Exception:
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_BOUND_S) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    log = proc.stderr.read()
    proc.stderr.close()
    assert "SIGHUP during start-up: re-reading the config" in log
