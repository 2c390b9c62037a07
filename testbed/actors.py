"""The processes a guest scenario starts: the workload (tests/guest/workload.py) and the
kscand daemon (`kscand run` with a private config and state directory).

Runs inside the guest; only the standard library.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.guestio import PlacementObserver, load_u64_npy, read_json, read_jsonl

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKLOAD_SCRIPT = REPO_ROOT / "tests" / "guest" / "workload.py"
WORKLOAD_COMM = "kscand-wl"
READY_TIMEOUT_S = 180.0  # numpy's import alone takes 6-13 s under TCG
DAEMON_UP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
Tunables = dict[str, int | float]


WORKLOAD_OUTPUTS = (
    ".stop", ".exit", ".ready", ".done", ".placement.jsonl", ".hot.npy", ".cold.npy",
)  # fmt: skip


@dataclass(frozen=True)
class WorkloadSpec:
    """Arguments of tests/guest/workload.py (see its docstring)."""

    name: str = "wl"
    size_mib: int = 256
    node: int = 1
    hot_pct: float = 10.0
    layout: str = "chunks:4"
    shared_mib: int = 0
    comm: str = WORKLOAD_COMM
    duration_s: float = 3600.0
    exit_after_s: float | None = None
    exit_file: bool = False  # exits abruptly once Workload.exit_abruptly() is called
    hold: bool = False
    keep_bind: bool = False
    fill_leave_mib: int | None = None
    report_interval_s: float = 1.0  # 0: no self-reports (a PlacementObserver samples)
    flush_tlb: bool = False  # a TLB flush before each pass (TCG's TLB; see workload.py)

    def argv(self, out: Path, stop_file: Path) -> list[str]:
        argv = [
            sys.executable, str(WORKLOAD_SCRIPT), "--out", str(out), "--name", self.name,
            "--size-mib", str(self.size_mib), "--node", str(self.node),
            "--hot-pct", str(self.hot_pct), "--layout", self.layout,
            "--shared-mib", str(self.shared_mib), "--comm", self.comm,
            "--duration-s", str(self.duration_s), "--stop-file", str(stop_file),
            "--report-interval-s", str(self.report_interval_s),
        ]  # fmt: skip
        if self.exit_after_s is not None:
            argv += ["--exit-after-s", str(self.exit_after_s)]
        if self.exit_file:
            argv += ["--exit-file", str(out / f"{self.name}.exit")]
        if self.fill_leave_mib is not None:
            argv += ["--fill-leave-mib", str(self.fill_leave_mib)]
        argv += ["--hold"] if self.hold else []
        argv += ["--keep-bind"] if self.keep_bind else []
        argv += ["--flush-tlb"] if self.flush_tlb else []
        return argv


class Workload:
    """A running tests/guest/workload.py and its output files in out."""

    def __init__(self, spec: WorkloadSpec, out: Path) -> None:
        self.spec = spec
        self.out = out
        self.stop_file = out / f"{spec.name}.stop"
        # A reused output directory (vm-compare's) holds an earlier run's files: its ready
        # file named a pid that no longer exists and every placement sample read "other".
        for suffix in WORKLOAD_OUTPUTS:
            (out / f"{spec.name}{suffix}").unlink(missing_ok=True)
        log = (out / f"{spec.name}.log").open("w")
        self.proc = subprocess.Popen(spec.argv(out, self.stop_file), stdout=log, stderr=log)
        log.close()
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """The ready file's content once it appears; RuntimeError if the workload died."""
        path = self.out / f"{self.spec.name}.ready"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            info = read_json(path)
            if info is not None and info.get("pid") == self.pid:
                self.info = info
                return info
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"workload {self.spec.name} exited ({self.proc.returncode}) before ready: "
                    f"{self.log_tail()}"
                )
            time.sleep(0.2)
        raise RuntimeError(f"workload {self.spec.name} not ready after {timeout_s:.0f} s")

    def timeline(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out / f"{self.spec.name}.placement.jsonl")

    def observer(self) -> PlacementObserver:
        """An outside observer of the hot and cold pages (after wait_ready)."""
        groups = {g: load_u64_npy(self.out / f"{self.spec.name}.{g}.npy") for g in ("hot", "cold")}
        return PlacementObserver(self.pid, groups, float(self.info["ready_wall"]))

    def log_tail(self, nr_lines: int = 10) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(
                (self.out / f"{self.spec.name}.log").read_text().splitlines()[-nr_lines:]
            )
        return ""

    def exit_abruptly(self) -> None:
        """Make a workload started with exit_file exit at once (no report, no cleanup)."""
        (self.out / f"{self.spec.name}.exit").touch()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Ask it to stop (stop file), then kill it if it does not; its exit status."""
        self.stop_file.touch()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def kscand_config(source: str, tunables: Tunables, status_interval_ms: int = 1000) -> str:
    """The daemon's TOML: the access source forced, only kscand-wl* processes, the tunables."""
    lines = ["[tunables]", *(f"{k} = {v}" for k, v in tunables.items()), ""]
    lines += [
        "[scan]", f'comm_patterns = ["{WORKLOAD_COMM}*"]', f'access_source = "{source}"', "",
        "[daemon]", f"status_interval_ms = {status_interval_ms}", "",
    ]  # fmt: skip
    return "\n".join(lines)


class Daemon:
    """`kscand run` in the background: config and state dir private to the guest, log in out."""

    def __init__(self, source: str, tunables: Tunables, out: Path) -> None:
        self.source = source
        self.out = out
        self.private = Path(tempfile.mkdtemp(prefix="kscand-e2e-"))  # 0700, root's: as required
        self.state_dir = self.private / "state"
        self.config = self.private / "kscand.toml"
        text = kscand_config(source, tunables)
        self.config.write_text(text)
        self.config.chmod(0o600)
        (out / "kscand.toml").write_text(text)
        self.log_path = out / "daemon.log"
        log = self.log_path.open("w")
        argv = [
            sys.executable, "-m", "kscand", "run", "--config", str(self.config),
            "--state-dir", str(self.state_dir), "--log-level", "info",
        ]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=REPO_ROOT)
        log.close()
        self.exit_status: int | None = None
        self.stop_s: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def state(self) -> dict[str, Any] | None:
        """The daemon's state file (rewritten every status_interval_ms)."""
        return read_json(self.state_dir / "status.json")

    def total(self, name: str, state: dict[str, Any] | None = None) -> int:
        """A counter of the daemon's totals; 0 until the daemon counted it (or wrote a state)."""
        state = self.state() if state is None else state
        return int(((state or {}).get("totals") or {}).get(name, 0))

    def lists(self, pid: int, state: dict[str, Any] | None = None) -> bool:
        """Whether the daemon's process list (its mm slots) holds pid."""
        state = self.state() if state is None else state
        return any(slot.get("pid") == pid for slot in (state or {}).get("processes") or [])

    def full_scans(self, pid: int, state: dict[str, Any] | None = None) -> int:
        """Complete scans of pid's address space so far (0 before its first, or once gone)."""
        state = self.state() if state is None else state
        for slot in (state or {}).get("processes") or []:
            if slot.get("pid") == pid:
                return int(slot.get("full_scans", 0))
        return 0

    def wait_up(self, timeout_s: float = DAEMON_UP_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.state()
            if state is not None and state.get("state") == "running":
                return
            if not self.alive():
                raise RuntimeError(f"kscand exited ({self.proc.returncode}) before it was up")
            time.sleep(0.2)
        raise RuntimeError(f"kscand not up after {timeout_s:.0f} s")

    def fresh_state(self, wait_s: float = 2.5) -> dict[str, Any] | None:
        """A state file written after now (waits up to wait_s), else the last one."""
        since = time.time()
        deadline = time.monotonic() + wait_s
        state = self.state()
        while time.monotonic() < deadline and self.alive():
            state = self.state()
            if state is not None and float(state.get("written_at", 0)) >= since:
                break
            time.sleep(0.1)
        if state is not None:
            (self.out / "status.json").write_text(json.dumps(state, indent=1, sort_keys=True))
        return state

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM; records the exit status and how long it took (kill after timeout_s)."""
        if not self.alive():
            self.exit_status = self.proc.returncode
            return
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.exit_status = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.exit_status = None  # did not exit by itself
        self.stop_s = round(time.monotonic() - started, 3)
        shutil.rmtree(self.private, ignore_errors=True)

    def summary(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "source": self.source,
            "exit_status": self.exit_status,
            "stop_s": self.stop_s,
            "log": str(self.log_path),
        }
