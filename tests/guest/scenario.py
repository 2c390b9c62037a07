"""What the end-to-end guest tests share: one scenario's result.json (written by
testbed/scenarios.py inside the guest) with what to print when a test fails."""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed.guestresult import GuestResult

# (kernel, access source): page_idle where the kernel has the bitmap, DAMON on the stock one.
CASES = (("idle", "page_idle"), ("stock", "damon"))
CASE_IDS = [f"{k}-{s}" for k, s in CASES]
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class Scenario:
    """One scenario's result.json, with what to print when a test fails."""

    name: str
    data: dict[str, Any]
    rwdir: Path
    guest: GuestResult

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def totals(self) -> dict[str, int]:
        """The daemon's counters at the end (a counter it never counted reads 0: use .get)."""
        return dict((self.data.get("status") or {}).get("totals", {}))

    @property
    def daemon_counters(self) -> dict[str, Any]:
        return dict((self.data.get("status") or {}).get("daemon", {}))

    @property
    def timeline(self) -> list[dict[str, Any]]:
        return list(self.data.get("main_timeline", []))

    @property
    def main_scans(self) -> int:
        """Complete scans of the main workload the scenario saw (0: none)."""
        samples = self.data.get("main_scans") or []
        return int(samples[-1][1]) if samples else 0

    def daemon_log(self) -> str:
        path = self.rwdir / self.name / "daemon.log"
        return path.read_text(errors="replace") if path.exists() else "(no daemon.log)"

    def explain(self) -> str:
        """Errors, key numbers, non-zero counters and the daemon log tail."""
        timeline = self.timeline
        lines = [
            f"--- scenario {self.name}: kernel {self.data.get('kernel')} "
            f"source {self.data.get('source')}",
            f"errors: {self.data.get('errors')}",
            f"reached_90_s: {self.data.get('reached_90_s')}  scans_at_90: "
            f"{self.data.get('scans_at_90')}  daemon: {self.data.get('daemon')}",
            f"main's complete scans [t_s, n]: {self.data.get('main_scans')}",
            f"first placement: {timeline[0] if timeline else None}",
            f"last placement: {timeline[-1] if timeline else None}",
            f"counters: { {k: v for k, v in self.totals.items() if v} }",
            f"daemon counters: {self.daemon_counters}",
            f"access source counters: {(self.get('status') or {}).get('access_source_counters')}",
            f"numa_balancing: {self.get('numa_balancing')}",
            f"DAMON regions over the buffer (last): {(self.data.get('damon_regions') or [None])[-1]}",
            "--- daemon log (tail) ---",
            *self.daemon_log().splitlines()[-LOG_TAIL_LINES:],
            "--- guest ---",
            self.guest.describe(),
        ]
        return "\n".join(lines)


def inguest_command(scenario: str, source: str, tunables: dict[str, Any] | None = None) -> str:
    """The guest command of one scenario; output under $KSCAND_RWDIR/<scenario>."""
    argv = ["python", "-m", "testbed.inguest", scenario, "--source", source]
    for name, value in (tunables or {}).items():
        argv += ["--tunable", f"{name}={value}"]
    return f'{shlex.join([*argv, "--out"])} "$KSCAND_RWDIR/{scenario}"'


def load_scenario(guest: GuestResult, name: str) -> Scenario:
    path = guest.rwdir / name / "result.json"
    if not path.exists():
        pytest.fail(f"the guest wrote no {path}\n{guest.describe()}", pytrace=False)
    return Scenario(name, json.loads(path.read_text()), guest.rwdir, guest)


def share(line: dict[str, Any], group: str, nid: int) -> float:
    counts = line.get(group, {})
    total = sum(counts.values())
    return counts.get(f"node{nid}", 0) / total if total else 0.0


def measured_before_status(scenario: Scenario) -> dict[str, Any]:
    """The last placement the workload finished measuring before the daemon wrote the
    counters it is compared with (kscand keeps moving pages after that)."""
    status_s = float(scenario["status"]["written_at"]) - float(scenario["main"]["ready_wall"])
    measured = [line for line in scenario.timeline if line["t_end_s"] <= status_s]
    assert measured, f"no placement measured before {status_s:.1f} s\n{scenario.explain()}"
    return measured[-1]
