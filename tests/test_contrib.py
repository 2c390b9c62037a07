"""contrib/kscand.service: the unit's settings the daemon relies on, and systemd's own check."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNIT = REPO / "contrib" / "kscand.service"


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key, []).append(value)
    return settings


def test_unit_runs_the_daemon_and_reloads_with_sighup() -> None:
    s = unit_settings()
    assert s["Type"] == ["simple"]
    assert s["ExecStart"] == ["kscand run --config /etc/kscand.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["Restart"] == ["on-failure"]
    assert s["RestartPreventExitStatus"] == ["2"]  # kscand's exit status for bad config
    assert s["RuntimeDirectory"] == ["kscand"] and s["RuntimeDirectoryMode"] == ["0700"]


def test_unit_keeps_what_the_live_backend_needs() -> None:
    s = unit_settings()
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE", "CAP_SYS_NICE"}
    # These would make /sys read-only or hide /proc/kpageflags and other processes.
    for key in ("ProtectKernelTunables", "ProtectProc", "ProcSubset", "MemoryDenyWriteExecute"):
        assert key not in s, key
    assert s["ProtectSystem"] == ["strict"]
    assert set(s["RestrictAddressFamilies"][0].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}


def test_unit_lets_only_this_host_reach_the_metrics_endpoint() -> None:
    s = unit_settings()
    assert s["IPAddressDeny"] == ["any"]
    assert s["IPAddressAllow"] == ["localhost"]


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    fake = tmp_path / "bin" / "kscand"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    shutil.copy(UNIT, tmp_path / "kscand.service")
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ.get('PATH', '')}"}
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "kscand.service")],
        capture_output=True, text=True, env=env, timeout=60,
    )
    problems = [
        line for line in proc.stderr.splitlines()
        if "kscand.service" in line and "Command kscand is not executable" not in line
    ]
    assert problems == []
