"""The control socket, the state directory and the status/tune commands against a test daemon."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_fakes import DaemonThread, recording_handler

from kscand.cli import main as cli_main
from kscand.daemon.control import (
    REQUEST_MAX_BYTES,
    ControlServer,
    DaemonNotRunning,
    answer,
    request,
)
from kscand.daemon.statedir import (
    prepare_state_dir,
    read_state_file,
    socket_path,
    state_file_path,
    write_state_file,
)
from kscand.errors import AccessDenied, ConfigError, KscandError


def raw_exchange(path: Path, payload: bytes) -> list[dict[str, Any]]:
    """Send raw bytes, return every reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(3.0)
        sock.connect(str(path))
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


# -- the state directory --------------------------------------------------------


def test_socket_is_0600_in_a_0700_directory(running: DaemonThread, tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    sock = os.lstat(socket_path(state_dir))
    assert stat.S_ISSOCK(sock.st_mode)
    assert stat.S_IMODE(sock.st_mode) == 0o600
    assert sock.st_uid == os.geteuid()
    directory = os.lstat(state_dir)
    assert stat.S_IMODE(directory.st_mode) == 0o700
    assert stat.S_IMODE(os.lstat(state_file_path(state_dir)).st_mode) == 0o600


def test_state_dir_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir(mode=0o700)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match=r"daemon.state_dir: .*link is a symlink; refusing"):
        prepare_state_dir(tmp_path / "link")


def test_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to chown a directory to another user")
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    os.chown(other, 4242, 4242)
    with pytest.raises(ConfigError, match="owned by uid 4242"):
        prepare_state_dir(other)


def test_state_dir_not_a_directory_and_loose_mode(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a directory"):
        prepare_state_dir(tmp_path / "file")
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    prepare_state_dir(loose)
    assert stat.S_IMODE(os.lstat(loose).st_mode) == 0o700


def test_state_file_round_trip_is_atomic_and_private(tmp_path: Path) -> None:
    prepare_state_dir(tmp_path / "s")
    write_state_file(tmp_path / "s", {"pid": 1, "totals": {"x": 2}})
    assert read_state_file(tmp_path / "s") == {"pid": 1, "totals": {"x": 2}}
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["status.json"]
    state_file_path(tmp_path / "s").write_text("{truncated")
    with pytest.raises(KscandError, match="not a kscand state file"):
        read_state_file(tmp_path / "s")


def test_stale_socket_is_replaced(tmp_path: Path) -> None:
    state_dir = prepare_state_dir(tmp_path / "s")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(socket_path(state_dir)))
    stale.close()  # bound, never listening: what a killed daemon leaves
    server = ControlServer(socket_path(state_dir), lambda req: {"echo": req["cmd"]})
    server.start()
    try:
        assert request(socket_path(state_dir), {"cmd": "hi"})["echo"] == "hi"
    finally:
        server.close()
    assert not socket_path(state_dir).exists()


# -- the protocol ------------------------------------------------------------------


def test_status_over_the_socket(running: DaemonThread, tmp_path: Path) -> None:
    reply = request(socket_path(tmp_path / "s"), {"cmd": "status"})
    assert reply["ok"] is True
    status = reply["status"]
    assert status["totals"]["nr_kscand_migrated"] == 64
    assert {p["pid"] for p in status["processes"]} == {100, 101}
    assert status["tunables"]["scan_sleep_ms"] == 10
    assert status["access_source"] == "fake"
    assert status["uptime_s"] > 0


def test_get_and_set_over_the_socket(running: DaemonThread, tmp_path: Path) -> None:
    path = socket_path(tmp_path / "s")
    got = request(path, {"cmd": "get"})
    assert got["tunables"]["scan_sleep_ms"] == 10
    assert {f["name"] for f in got["fields"]} >= {"scan_sleep_ms", "scan_size_bytes"}
    reply = request(path, {"cmd": "set", "tunables": {"scan_sleep_ms": 15, "mms_to_scan": 3}})
    assert reply["tunables"]["scan_sleep_ms"] == 15
    running.wait_for(lambda: running.daemon.engine.tunables.mms_to_scan == 3)
    assert request(path, {"cmd": "get"})["tunables"]["mms_to_scan"] == 3


def test_bad_set_is_rejected_with_one_line_and_changes_nothing(
    running: DaemonThread, tmp_path: Path
) -> None:
    path = socket_path(tmp_path / "s")
    with pytest.raises(ConfigError) as info:
        request(path, {"cmd": "set", "tunables": {"scan_sleep_ms": 15, "hot_history_depth": 0}})
    assert str(info.value) == "hot_history_depth: 0 is out of range [1, 8] (scans)"
    assert request(path, {"cmd": "get"})["tunables"]["scan_sleep_ms"] == 10


def test_malformed_requests_get_errors_and_the_server_keeps_serving(
    running: DaemonThread, tmp_path: Path
) -> None:
    path = socket_path(tmp_path / "s")
    replies = raw_exchange(
        path, b'not json\n[1, 2]\n{"cmd": 3}\n{"cmd": "reboot"}\n{"cmd": "ping"}\n'
    )
    assert [r["ok"] for r in replies] == [False, False, False, False, True]
    assert replies[0]["error"].startswith("request is not JSON")
    assert "unknown command 'reboot'" in replies[3]["error"]
    assert replies[4]["pid"] == os.getpid()
    too_long = raw_exchange(path, b"x" * (REQUEST_MAX_BYTES + 10) + b"\n")
    assert too_long == [{"ok": False, "error": "request line too long"}]
    assert request(path, {"cmd": "ping"})["ok"] is True


def test_other_uids_are_refused(tmp_path: Path) -> None:
    state_dir = prepare_state_dir(tmp_path / "s")
    calls: list[str] = []
    server = ControlServer(
        socket_path(state_dir), recording_handler(calls, {}), allowed_uids={4242}
    )
    server.start()
    try:
        with pytest.raises(AccessDenied, match=f"uid {os.geteuid()} may not control kscand"):
            request(socket_path(state_dir), {"cmd": "set", "tunables": {"scan_sleep_ms": 1}})
    finally:
        server.close()
    assert calls == []
    assert server.nr_refused == 1


def test_handler_bug_becomes_an_error_reply() -> None:
    def broken(_req: dict[str, Any]) -> dict[str, Any]:
        raise ZeroDivisionError("division by zero")

    reply = answer(broken, b'{"cmd": "status"}')
    assert reply == {
        "ok": False,
        "error": "internal error: division by zero",
        "error_kind": "InternalError",
    }


def test_request_without_daemon_says_so(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunning, match="no kscand daemon is running"):
        request(tmp_path / "kscand.sock", {"cmd": "status"})


# -- kscand status / kscand tune ------------------------------------------------------


def test_kscand_status_shows_counters_processes_and_tunables(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["status", "--state-dir", str(tmp_path / "s")]) == 0
    out = capsys.readouterr().out
    assert "nr_kscand_migrated" in out
    assert "64" in out
    assert "Processes (2 of 2)" in out
    assert "scan_sleep_ms" in out
    assert "access source: fake" in out


def test_kscand_status_json(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["status", "--json", "--state-dir", str(tmp_path / "s")]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["totals"]["nr_kscand_migrated"] == 64
    assert len(status["processes"]) == 2


def test_kscand_status_falls_back_to_the_state_file(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state_dir = tmp_path / "s"
    running.daemon._write_state_file()
    os.unlink(socket_path(state_dir))  # the socket is gone, the daemon still runs
    assert cli_main(["status", "--json", "--state-dir", str(state_dir)]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["pid"] == os.getpid()
    assert status["totals"]["nr_kscand_migrated"] == 64
    assert cli_main(["status", "--state-dir", str(state_dir)]) == 0
    assert "from the state file" in capsys.readouterr().out


def test_kscand_status_without_daemon_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli_main(["status", "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kscand status: no kscand daemon is running")
    assert err.count("\n") == 1
    # A state file left by a dead daemon is not mistaken for a running one.
    write_state_file(tmp_path, {"pid": 2**22 + 1})
    assert cli_main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "stale" in capsys.readouterr().err


def test_kscand_tune_lists_and_sets(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "s")]
    assert cli_main(["tune", *state]) == 0
    out = capsys.readouterr().out
    assert "scan_sleep_ms" in out and "migrate_batch_folios" in out
    assert cli_main(["tune", *state, "scan_sleep_ms=12", "scan_size_bytes=256MiB"]) == 0
    out = capsys.readouterr().out
    assert "scan_sleep_ms = 12 (was 10)" in out
    assert "scan_size_bytes = 268435456 (was 4294967296)" in out
    running.wait_for(lambda: running.daemon.engine.tunables.scan_sleep_ms == 12)


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("scan_sleep_ms", "'scan_sleep_ms': expected NAME=VALUE"),
        ("scan_sleep_ms=soon", "scan_sleep_ms: expected a number"),
        ("nope=1", "nope: unknown tunable"),
        ("hot_history_depth=0", "hot_history_depth: 0 is out of range"),
    ],
)
def test_kscand_tune_bad_value_is_one_line_exit_2(
    running: DaemonThread,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    assignment: str,
    message: str,
) -> None:
    assert cli_main(["tune", "--state-dir", str(tmp_path / "s"), assignment]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kscand tune: {message}")
    assert err.count("\n") == 1
    assert running.daemon.engine.tunables.scan_sleep_ms == 10


def test_kscand_tune_without_daemon(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["tune", "--state-dir", str(tmp_path), "scan_sleep_ms=5"]) == 1
    assert capsys.readouterr().err.startswith("kscand tune: no kscand daemon is running")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "--bogus"],
        ["run", "--log-level", "loud"],
        ["status", "--top", "many"],
        ["tune", "--state-dir"],
    ],
)
def test_bad_cli_arguments_exit_2_without_traceback(argv: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kscand", *argv], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("kscand")


def test_run_with_a_bad_config_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "kscand.toml"
    path.write_text("[tunables]\nscan_sleep_ms = -5\n")
    path.chmod(0o644)
    proc = subprocess.run(
        [sys.executable, "-m", "kscand", "run", "--config", str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        f"kscand run: {path}: tunables.scan_sleep_ms: -5 is out of range [0, 60000] (ms)\n"
    )


def test_scale_over_the_socket_sets_a_process_scale(
    running: DaemonThread, tmp_path: Path
) -> None:
    path = socket_path(tmp_path / "s")
    reply = request(path, {"cmd": "scale", "pid": 100, "scale": 0})
    assert reply["processes"] == [{"pid": 100, "start_time": 1000, "scale": 0}]
    scans = {p["pid"]: p["counters"]["nr_kscand_mm_scans"]
             for p in request(path, {"cmd": "status"})["status"]["processes"]}
    running.wait_for(
        lambda: next(p for p in request(path, {"cmd": "status"})["status"]["processes"]
                     if p["pid"] == 101)["counters"]["nr_kscand_mm_scans"] >= scans[101] + 3
    )
    after = {p["pid"]: p for p in request(path, {"cmd": "status"})["status"]["processes"]}
    assert after[100]["scale"] == 0
    assert after[100]["counters"]["nr_kscand_mm_scans"] == scans[100]  # scale 0: never scanned
    assert after[101]["scale"] == 1


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"pid": 100, "scale": 11}, "scale: scale must be an integer 0..10, got 11"),
        ({"pid": 100, "scale": "low"}, "scale: scale must be an integer 0..10, got 'low'"),
        ({"pid": 0, "scale": 1}, "scale: pid must be a positive integer, got 0"),
        ({"pid": 999, "scale": 1}, "pid 999 is not a process kscand scans"),
    ],
)
def test_bad_scale_request_is_one_line(
    running: DaemonThread, tmp_path: Path, req: dict[str, Any], message: str
) -> None:
    with pytest.raises(KscandError) as info:
        request(socket_path(tmp_path / "s"), {"cmd": "scale", **req})
    assert str(info.value) == message


def test_kscand_scale_command(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "s")]
    assert cli_main(["scale", *state, "101", "0"]) == 0
    assert capsys.readouterr().out == "pid 101: scale 0\n"
    assert cli_main(["scale", *state, "101", "12"]) == 2
    assert capsys.readouterr().err == "kscand scale: scale: scale must be an integer 0..10, got 12\n"
    assert cli_main(["scale", *state, "7", "1"]) == 2
    assert capsys.readouterr().err == "kscand scale: pid 7 is not a process kscand scans\n"
    assert cli_main(["scale", "--state-dir", str(tmp_path), "101", "1"]) == 1


def test_kscand_status_lists_the_access_source_counters() -> None:
    from rich.console import Console

    from kscand.cli.status import render

    console = Console(record=True, width=200)
    status = {"access_source": "damon", "access_source_counters": {"snapshots": 1234}}
    render(console, status, "socket", 5)
    assert "access source counters: snapshots 1,234" in console.export_text()
