"""Issue 12: inputs from outside that crashed, hung or exhausted kscand, each as a test.

Every case ends in a one-line error naming the input and exit status 2 (1 for "no daemon
answered"), or a correct result, in bounded time and memory.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from daemon_fakes import DaemonThread, FakeMachine, fake_backend, fast_config, two_tier_scenario
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, smaps_entry
from rich.console import Console

import kscand.inspect.oneshot as oneshot
from kscand.cgroups import in_cgroup
from kscand.cli import main
from kscand.cli.tables import print_table
from kscand.daemon.control import ReplyShapeError, check_reply, decode_reply, request
from kscand.daemon.loop import Daemon
from kscand.daemon.rules import in_cgroup as rules_in_cgroup  # type: ignore[attr-defined]  # the one rules uses
from kscand.daemon.statedir import socket_path
from kscand.errors import AccessDenied, ConfigError, ProcessGone, TransientError
from kscand.live import LinuxMachine
from kscand.live.processes import ProcessSelection, proc_error
from kscand.machine import PAGE_SIZE, ProcessId, ProcessInfo
from kscand.sim.checks import SIM_MEMORY_LIMIT_BYTES
from kscand.sim.scenario import load_scenario, scenario_from_mapping

VMA = 0x10000000
NODE1_PFN = 8 * ((128 << 20) >> 12)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(err: str, prefix: str) -> None:
    assert err.startswith(prefix) and err.count("\n") == 1, err


# --- scenario files -----------------------------------------------------------------------

SCENARIO = two_tier_scenario("x", """
[[processes]]
name = "app"
placement = "slow"
workload = { kind = "uniform", rate_per_s = 1e6 }
vmas = [{ kind = "anon", size = "4MiB" }]
""")


def test_scenario_fifo_is_refused_without_waiting(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "s.toml"
    os.mkfifo(fifo)
    rc, _, err = run(["sim", "--quiet", str(fifo)], capsys)  # a hang would time the test out
    assert rc == 2
    one_line_error(err, f"kscand sim: {fifo}: is not a regular file")


def test_scenario_device_is_never_read(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["sim", "--quiet", "/dev/zero"], capsys)
    assert rc == 2
    one_line_error(err, "kscand sim: /dev/zero: is not a regular file")


def test_scenario_over_the_size_cap(tmp_path: Path) -> None:
    big = tmp_path / "big.toml"
    big.write_text(SCENARIO + "#" * (2 << 20))
    with pytest.raises(ConfigError, match="larger than 1048576 bytes"):
        load_scenario(big)


def raw_scenario(**top: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "x", "duration_s": 10, "sample_interval_s": 1,
        "nodes": [{"nid": 0, "capacity": "1GiB", "cpus": True, "tier": 4},
                  {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67}],
        "processes": [{"name": "p", "vmas": [{"kind": "anon", "size": "4MiB"}]}],
    }
    raw.update(top)
    return raw


def test_a_64_tib_vma_is_refused_before_allocating() -> None:
    raw = raw_scenario(
        nodes=[{"nid": 0, "capacity": "1GiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "128TiB", "cpus": False, "tier": 67}],
        processes=[{"name": "p", "vmas": [{"kind": "anon", "size": "64TiB"}]}])
    with pytest.raises(ConfigError) as info:
        scenario_from_mapping(raw)
    message = str(info.value)
    assert message.startswith("processes[0].vmas[0].size: 65,536.0 GiB simulated needs about")
    assert "16.0 GiB limit" in message and "\n" not in message


def test_a_sample_timeline_that_would_not_fit_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^scenario: needs about .* \(100,000,001 samples .* "
                                          r"over the 16\.0 GiB limit"):
        scenario_from_mapping(raw_scenario(duration_s=100000, sample_interval_s=0.001))
    # The same length at one sample a second is fine.
    scenario_from_mapping(raw_scenario(duration_s=100000, sample_interval_s=1))
    assert SIM_MEMORY_LIMIT_BYTES == 16 << 30


def test_a_rate_that_would_overflow_is_refused() -> None:
    raw = raw_scenario(processes=[{"name": "p", "workload": {"kind": "uniform",
                                                            "rate_per_s": 1e308},
                                   "vmas": [{"kind": "anon", "size": "4MiB"}]}])
    with pytest.raises(ConfigError, match=r"^processes\[0\]\.workload\.rate_per_s: 1e\+308 is "
                                          r"out of range"):
        scenario_from_mapping(raw)


@pytest.mark.parametrize(("target", "reason"), [
    (1, "node 1 is on the slow tier (top-tier nodes: 0)"),
    (5, "node 5 is not in nodes (top-tier nodes: 0)"),
])
def test_scenario_target_node_checked_against_its_nodes(target: int, reason: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(f"tunables.target_node: {reason}")):
        scenario_from_mapping(raw_scenario(tunables={"target_node": target}))
    assert scenario_from_mapping(raw_scenario(tunables={"target_node": 0})).tunables.target_node == 0


def test_scenario_named_markup_runs_in_sim_and_compare(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SCENARIO.replace('name = "x"', 'name = "[/]"')
                    .replace("duration_s = 600", "duration_s = 5"))
    rc, out, err = run(["sim", "--quiet", str(path)], capsys)
    assert rc == 0, err
    assert "[/] seed 1" in out
    rc, out, err = run(["compare", "--quiet", "--jobs", "1", "--policies", "kscand",
                        str(path)], capsys)
    assert rc == 0, err
    assert "[/]: seed" in out


# --- the config's target_node against the live topology -----------------------------------

def test_target_node_refused_at_start_by_tune_and_on_reload(tmp_path: Path) -> None:
    machine = FakeMachine()
    bad = fast_config(tmp_path / "a", "target_node = 1")
    with pytest.raises(ConfigError, match=r"^target_node 1 is on the slow tier; promotion "
                                          r"targets are top-tier nodes \(0\)"):
        Daemon(bad, fake_backend(machine)).start()
    run_ = DaemonThread(fast_config(tmp_path / "b"), machine)
    try:
        path = socket_path(tmp_path / "b")
        with pytest.raises(ConfigError, match="target_node 7: no such node on this machine"):
            request(path, {"cmd": "set", "tunables": {"target_node": 7}})
        assert request(path, {"cmd": "set", "tunables": {"target_node": 0}})[
            "tunables"]["target_node"] == 0
    finally:
        run_.stop()


# --- kscand scan: markup in comm, a process killed mid-scan, --heatmap ------------------

@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLinux]:
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the os live.features reads
    fake = FakeLinux(tmp_path / "root")
    fake.two_tier()
    fake.enable_page_idle(NODE1_PFN + 4096)
    yield fake


def add(fake: FakeLinux, pid: int, comm: str) -> None:
    fake.add_process(pid, comm, start_time=5000, smaps=smaps_entry(VMA, VMA + (1 << 20)))
    fake.set_pagemap(pid, {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (NODE1_PFN + i)
                           for i in range(4)})
    fake.set_kpages(range(NODE1_PFN, NODE1_PFN + 4), ANON_LRU)


@pytest.mark.parametrize("comm", ["[/]", "[red]x[/red]"])
def test_scan_shows_a_markup_comm_as_it_is(fake: FakeLinux, comm: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    add(fake, 4242, comm)
    rc, out, err = run(["scan", "--pid", "4242", "--passes", "1", "--procfs", fake.procfs,
                        "--sysfs", fake.sysfs], capsys)
    assert rc == 0, err
    assert f"pid 4242 ({comm}):" in out


def test_scan_of_a_process_killed_mid_scan_is_an_error_not_an_empty_report(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    add(fake, 4242, "victim")
    real = oneshot.scan_process

    def killed_during(machine: LinuxMachine, proc: ProcessId, **kw: Any) -> Any:
        report = real(machine, proc, **kw)
        fake.remove_process(4242)  # died in the last pass: no read failed
        return report

    monkeypatch.setattr(oneshot, "scan_process", killed_during)
    rc, out, err = run(["scan", "--pid", "4242", "--passes", "1", "--procfs", fake.procfs,
                        "--sysfs", fake.sysfs], capsys)
    assert rc == 2 and out == ""
    assert err == "kscand scan: pid 4242 (victim) exited during the scan\n"


@pytest.mark.parametrize(("name", "reason"), [
    (".", "is a directory; name a FILE.png in it"),
    ("x.txt", "the heatmap is a PNG file: name it FILE.png"),
])
def test_scan_heatmap_must_be_a_png_file(tmp_path: Path, name: str, reason: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    target = str(tmp_path) if name == "." else str(tmp_path / name)
    with pytest.raises(SystemExit) as info:
        main(["scan", "--pid", "1", "--heatmap", target])
    err = capsys.readouterr().err
    assert info.value.code == 2
    one_line_error(err, "kscand: argument --heatmap: ")
    assert reason in err


# --- the control client against replies of another shape, and exit codes -----------------

class OneReplyServer:
    """A socket that answers every request with one fixed line (an older daemon)."""

    def __init__(self, path: Path, line: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.line = line
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.makefile("rb").readline()
                conn.sendall(self.line)

    def close(self) -> None:
        self.sock.close()


OLD_REPLIES = [
    ("status", {"ok": True}, "status is not an object"),
    ("status", {"ok": True, "status": {"totals": {"x": "1"}}}, "totals.x is not an integer"),
    ("status", {"ok": True, "status": {"processes": [{"pid": "1"}]}},
     "processes[0].pid is not an integer"),
    ("tune", {"ok": True, "tunables": {}}, "fields is not a list"),
    ("scale", {"ok": True}, "processes is not a list"),
]


@pytest.mark.parametrize(("command", "reply", "reason"), OLD_REPLIES)
def test_client_checks_the_reply_shape(tmp_path: Path, command: str, reply: dict[str, Any],
                                       reason: str, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "s"
    server = OneReplyServer(socket_path(state), json.dumps(reply).encode() + b"\n")
    try:
        argv = {"status": ["status"], "tune": ["tune"], "scale": ["scale", "1", "2"]}[command]
        rc, _, err = run([*argv, "--state-dir", str(state)], capsys)
    finally:
        server.close()
    assert rc == 2
    one_line_error(err, f"kscand {command}: the daemon's reply: {reason}")


def test_deeply_nested_and_huge_replies_are_one_line() -> None:
    with pytest.raises(ReplyShapeError, match="not JSON"):
        decode_reply(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    with pytest.raises(ReplyShapeError):
        check_reply("get", {"ok": True, "tunables": {}, "fields": [{"name": 1}]})


def test_no_daemon_and_no_answer_share_exit_status_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc, _, err = run(["tune", "--state-dir", str(tmp_path / "none")], capsys)
    assert rc == 1 and "no kscand daemon is running" in err
    state = tmp_path / "mute"
    server = OneReplyServer(socket_path(state), b"")  # accepts, then hangs up: no answer
    try:
        rc, _, err = run(["tune", "--state-dir", str(state)], capsys)
    finally:
        server.close()
    assert rc == 1
    one_line_error(err, "kscand tune: the daemon closed the connection without an answer")


# --- numbers are never cut at 80 columns -----------------------------------------------------

def test_status_numbers_whole_at_80_columns() -> None:
    from kscand.cli.status import counters_table, processes_table
    big = 123_456_789_012_345
    procs = [{"pid": 4_194_304, "comm": "a-very-long-comm", "resume_vaddr": 0x7FFF_FFFF_F000,
              "counters": {n: big for n in ("nr_kscand_mm_scans", "nr_kscand_migrated",
                                            "nr_kscand_hotpage", "nr_kscand_slowtier")},
              "queued_folios": big, "full_scans": big, "scale": 8, "scan_period_ms": 1e9}]
    buffer = io.StringIO()  # a pipe: 80 columns
    console = Console(width=80, file=buffer)
    print_table(console, processes_table(procs, 0))
    print_table(console, counters_table({"nr_kscand_migrated": big}))
    out = buffer.getvalue()
    assert "…" not in out
    # Page counters are shown as sizes (kscand.units.format_bytes), the rest as numbers.
    from kscand.machine import PAGE_SIZE
    from kscand.units import format_bytes
    assert out.count(f"{big:,}") >= 3 and out.count(format_bytes(big * PAGE_SIZE)) >= 3
    assert "0x7ffffffff000" in out and "4194304" in out


# --- the live error boundary, in_cgroup ------------------------------------------------------

def test_unknown_errno_is_transient_not_an_exit() -> None:
    gone = proc_error(OSError(errno.ESRCH, "No such process"), 7, "pagemap")
    denied = proc_error(OSError(errno.EACCES, "Permission denied"), 7, "pagemap")
    eio = proc_error(OSError(errno.EIO, "Input/output error"), 7, "pagemap")
    assert isinstance(gone, ProcessGone) and isinstance(denied, AccessDenied)
    assert isinstance(eio, TransientError) and not isinstance(eio, ProcessGone)
    assert isinstance(eio, AccessDenied)  # the engine's skip-and-retry-later path
    assert eio.reason == "pagemap_eio"


def test_kpageflags_eio_is_counted_and_the_process_kept(
    fake: FakeLinux, monkeypatch: pytest.MonkeyPatch
) -> None:
    add(fake, 4242, "app")
    import kscand.live.linux as live_linux
    real = live_linux.read_u64_at  # type: ignore[attr-defined]  # patched where it is used
    calls = {"n": 0}

    def flaky(fds: Any, idx: Any, gap: int) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(fds, idx, gap)

    with LinuxMachine(fake.procfs, fake.sysfs, self_pid=1,
                      selection=ProcessSelection(pids=(4242,))) as m:
        proc = m.processes()[0]
        monkeypatch.setattr(live_linux, "read_u64_at", flaky)
        with pytest.raises(TransientError, match="kpageflags: Input/output error"):
            m.read_range(proc, VMA, VMA + 4 * PAGE_SIZE)
        batch = m.read_range(proc, VMA, VMA + 4 * PAGE_SIZE)  # reopened, read again
        assert np.all(batch.nid == 1)
        assert m.access_counters()["read_error_kpageflags_eio"] == 1
        assert m.is_alive(proc)


@pytest.mark.parametrize("selected", ["/sys/fs/cgroup/system.slice", "system.slice/",
                                      "/system.slice"])
def test_one_in_cgroup_for_scan_and_rules(selected: str) -> None:
    assert rules_in_cgroup is in_cgroup
    from kscand.live.processes import (  # type: ignore[attr-defined]  # the one scan uses
        in_cgroup as scan_in_cgroup,
    )
    assert scan_in_cgroup is in_cgroup
    assert in_cgroup("/system.slice/a.service", selected)
    assert not in_cgroup("/system.slicer", selected)
    from kscand.config import ProcessRule
    from kscand.daemon.rules import rule_matches
    rule = ProcessRule(cgroup=selected, scale=1)
    info = ProcessInfo(comm="a", cgroup="/system.slice/a.service")
    assert rule_matches(rule, ProcessId(1, 1), info)
