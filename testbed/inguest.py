"""Scenarios that run inside the QEMU guest: a workload on the slow node, a promotion
mechanism, and what both did, written to OUT/result.json for the host to judge.

    python -m testbed.inguest promote --source page_idle --out DIR   # end-to-end tests
    python -m testbed.inguest full --source damon --out DIR
    python -m testbed.inguest compare --mechanism numab --out DIR    # make vm-compare

Mechanisms: kscand-page_idle, kscand-damon (the daemon, `kscand run`), numab
(kernel.numa_balancing=2), damos (a kdamond on node 1's physical memory with a
DAMOS migrate_hot scheme to node 0, through DAMON sysfs) and none.

The workload is tests/guest/workload.py; time 0 is the moment it has bound and
touched its memory on node 1 and renamed itself kscand-wl (kscand's config selects
that name, so the daemon sees the process from then on). Every run writes
result.json, also when something went wrong ("errors"); the daemon's stderr goes
to daemon.log and its last state file to status.json. Nothing here imports numpy:
this process only starts and watches others.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKLOAD_SCRIPT = REPO_ROOT / "tests" / "guest" / "workload.py"
WORKLOAD_COMM = "kscand-wl"
DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
NUMA_BALANCING = Path("/proc/sys/kernel/numa_balancing")
NODE_SYSFS = Path("/sys/devices/system/node")
MEMORY_SYSFS = Path("/sys/devices/system/memory")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYS_MOVE_PAGES = 279  # x86_64
UINT_MAX = (1 << 32) - 1
SZ_MAX = (1 << 63) - 1
POLL_S = 1.0
READY_TIMEOUT_S = 180.0  # numpy's import alone takes 6-13 s under TCG
DAEMON_UP_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0
VMSTAT_KEYS = (
    "pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgpromote_candidate",
    "numa_hint_faults", "numa_hint_faults_local", "numa_pages_migrated", "numa_pte_updates",
)  # fmt: skip

# Tunables of the end-to-end tests: new processes are scanned at once and every
# 200 ms (x1: default_scale 1) instead of after 2 s and every 2 s x 1.78. DAMON's
# snapshot of a process is refreshed once a second (DamonSettings.refresh_ms) and
# each snapshot is reported once, so a DAMON scan period under 1 s would read
# "not accessed" between refreshes and no page would ever be accessed in two
# consecutive scans: 1.5 s for DAMON. And DAMON reports regions, whose edges
# straddle the hot run's for a snapshot or two as they split and merge: with the
# default hot_history_depth 2, 0.9-12 % of the cold pages were promoted (5 runs,
# the worst on a loaded host); requiring 3 consecutive accessed snapshots kept
# 99.6-100 % of them in place. page_idle keeps the default (it sees single pages).
FAST_TUNABLES: dict[str, dict[str, int]] = {
    "page_idle": {
        "scan_delay_ms": 0,
        "mm_scan_period_ms": 200,
        "scan_period_min_ms": 200,
        "scan_period_max_ms": 1000,
        "default_scale": 1,
    },
    "damon": {
        "scan_delay_ms": 0,
        "mm_scan_period_ms": 1500,
        "scan_period_min_ms": 1500,
        "scan_period_max_ms": 3000,
        "default_scale": 1,
        "hot_history_depth": 3,
    },
}
MECHANISMS = ("kscand-page_idle", "kscand-damon", "numab", "damos", "damos-strict", "none")


# --- reading /proc and /sys -----------------------------------------------------------------


def proc_cpu_s(pid: int) -> tuple[float, float] | None:
    """(user, system) CPU seconds of a process (all its threads), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK  # stat fields 14, 15


def kdamond_cpu_s() -> float:
    """CPU seconds of every kdamond kernel thread now running."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm.startswith("kdamond"):
            cpu = proc_cpu_s(int(entry.name))
            total += sum(cpu) if cpu else 0.0
    return total


def vmstat() -> dict[str, int]:
    """/proc/vmstat as {name: value}."""
    out = {}
    for line in Path("/proc/vmstat").read_text().splitlines():
        name, _, value = line.partition(" ")
        out[name] = int(value)
    return out


def node_free_mib(nid: int) -> float:
    for line in (NODE_SYSFS / f"node{nid}" / "meminfo").read_text().splitlines():
        if "MemFree:" in line:
            return int(line.split()[-2]) / 1024
    raise RuntimeError(f"node {nid}: no MemFree")


def node_phys_range(nid: int) -> tuple[int, int]:
    """[start, end) physical address range of a node's memory blocks."""
    block_bytes = int((MEMORY_SYSFS / "block_size_bytes").read_text().strip(), 16)
    blocks = sorted(
        int(p.name[len("memory") :])
        for p in (NODE_SYSFS / f"node{nid}").iterdir()
        if p.name.startswith("memory") and p.name[len("memory") :].isdigit()
    )
    if not blocks:
        raise RuntimeError(f"node {nid} has no memory blocks")
    return blocks[0] * block_bytes, (blocks[-1] + 1) * block_bytes


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON lines of a file another process appends to; a torn last line is skipped."""
    try:
        text = path.read_text()
    except OSError:
        return []
    lines = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return lines


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


REGION_FIELDS = ("start", "end", "nr_accesses", "age")


def load_u64_npy(path: Path) -> array.array[int]:
    """A 1-D little-endian uint64 .npy file (what workload.py saves), without numpy."""
    data = path.read_bytes()
    if data[:6] != b"\x93NUMPY":
        raise ValueError(f"{path}: not a .npy file")
    size_bytes = 2 if data[6] == 1 else 4  # format 1.0: u16 header length, later: u32
    offset = 8 + size_bytes
    header_len = int.from_bytes(data[8:offset], "little")
    header = data[offset : offset + header_len].decode("latin1")
    if "'<u8'" not in header or "'fortran_order': False" not in header:
        raise ValueError(f"{path}: not a C-order little-endian uint64 array: {header.strip()}")
    out = array.array("Q")
    out.frombytes(data[offset + header_len :])
    if sys.byteorder != "little":
        out.byteswap()
    return out


class PlacementObserver:
    """Where a process's pages are, sampled from outside with move_pages(2) query mode.

    The kernel walks the page tables for each sample: done here, that work is
    not charged to the workload, whose CPU time the comparison reports.
    """

    def __init__(self, pid: int, groups: dict[str, array.array[int]], ready_wall: float) -> None:
        self.pid = pid
        self.groups = groups
        self.ready_wall = ready_wall
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def nodes(self, pages: array.array[int]) -> array.array[int]:
        """Node of each page, or a negative errno."""
        status = array.array("i", bytes(4 * len(pages)))
        if not pages:
            return status
        ret = self._libc.syscall(
            ctypes.c_long(SYS_MOVE_PAGES), ctypes.c_int(self.pid), ctypes.c_ulong(len(pages)),
            ctypes.c_void_p(pages.buffer_info()[0]), None,
            ctypes.c_void_p(status.buffer_info()[0]), ctypes.c_int(0),
        )  # fmt: skip
        if ret < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"move_pages query of pid {self.pid}: {os.strerror(err)}")
        return status

    def sample(self) -> dict[str, Any]:
        """One placement line, like the workload's own: {t_s, group: {nodeN: n, other: n}}."""
        line: dict[str, Any] = {"t_s": round(time.time() - self.ready_wall, 3)}
        for name, pages in self.groups.items():
            counts = Counter(self.nodes(pages))
            line[name] = {"other": sum(n for nid, n in counts.items() if nid < 0)}
            line[name].update({f"node{nid}": n for nid, n in sorted(counts.items()) if nid >= 0})
        return line


def damon_regions_of(pid: int, lo: int, hi: int) -> list[list[int]]:
    """[start, end, nr_accesses, age] of the DAMON tried regions of pid's kdamond that overlap
    [lo, hi) (diagnostics; the kernel recreates the directories under us: gaps are skipped)."""
    rows: list[list[int]] = []
    for kdamond in (DAMON_ADMIN / "kdamonds").glob("[0-9]*"):
        ctx = kdamond / "contexts" / "0"
        try:
            if int((ctx / "targets" / "0" / "pid_target").read_text()) != pid:
                continue
            names = [p.name for p in (ctx / "schemes" / "0" / "tried_regions").iterdir()]
        except (OSError, ValueError):
            continue
        for name in filter(str.isdigit, names):
            region = ctx / "schemes" / "0" / "tried_regions" / name
            try:
                row = [int((region / f).read_text()) for f in REGION_FIELDS]
            except (OSError, ValueError):
                continue
            if row[1] > lo and row[0] < hi:
                rows.append(row)
    return sorted(rows)


@dataclass
class DamonRegionLog:
    """DAMON's tried regions over a workload's buffer, every third poll (diagnostics)."""

    pid: int
    lo: int
    hi: int
    enabled: bool
    samples: list[dict[str, Any]] = field(default_factory=list)
    polls: int = 0

    def poll(self, t_s: float) -> None:
        if self.enabled and self.polls % 3 == 0:
            self.samples.append(
                {"t_s": round(t_s, 1), "regions": damon_regions_of(self.pid, self.lo, self.hi)}
            )
        self.polls += 1


def write_sysfs(path: Path, value: object) -> None:
    path.write_text(f"{value}\n")


@contextlib.contextmanager
def numa_balancing(mode: int, result: Result) -> Iterator[None]:
    """kernel.numa_balancing = mode for the scenario, restored after; records both values
    and the NUMA hint faults taken meanwhile.

    Debian's stock kernel boots with numa_balancing = 1 on a multi-node machine, and
    mode 1 moves pages to the node of the CPU that touches them: on the two-tier
    guest that promotes the hot set by itself. kscand's scenarios run with it at 0,
    so every page on node 0 was moved by kscand.
    """
    previous = NUMA_BALANCING.read_text().strip()
    write_sysfs(NUMA_BALANCING, mode)
    hint_faults = vmstat().get("numa_hint_faults", 0)
    result.data["numa_balancing"] = {"previous": previous, "mode": mode}
    try:
        yield
    finally:
        result.data["numa_balancing"]["hint_faults"] = (
            vmstat().get("numa_hint_faults", 0) - hint_faults
        )
        write_sysfs(NUMA_BALANCING, previous)


# --- the workload -----------------------------------------------------------------------------


WORKLOAD_OUTPUTS = (".stop", ".ready", ".done", ".placement.jsonl", ".hot.npy", ".cold.npy")


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

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """Ask it to stop (stop file), then kill it if it does not; its exit status."""
        self.stop_file.touch()
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


# --- the kscand daemon ------------------------------------------------------------------------


def kscand_config(source: str, tunables: dict[str, int], status_interval_ms: int = 1000) -> str:
    """The daemon's TOML: the access source forced, only kscand-wl* processes, the tunables."""
    lines = ["[tunables]", *(f"{k} = {v}" for k, v in tunables.items()), ""]
    lines += [
        "[scan]", f'comm_patterns = ["{WORKLOAD_COMM}*"]', f'access_source = "{source}"', "",
        "[daemon]", f"status_interval_ms = {status_interval_ms}", "",
    ]  # fmt: skip
    return "\n".join(lines)


class Daemon:
    """`kscand run` in the background: config and state dir private to the guest, log in out."""

    def __init__(self, source: str, tunables: dict[str, int], out: Path) -> None:
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
        return {"pid": self.pid, "source": self.source, "exit_status": self.exit_status,
                "stop_s": self.stop_s, "log": str(self.log_path)}


# --- mechanisms for the comparison --------------------------------------------------------------


class Mechanism(Protocol):
    """Something that promotes pages (or not) while the workload runs."""

    @property
    def name(self) -> str: ...

    @property
    def starts_after_ready(self) -> bool: ...

    def start(self, out: Path) -> None: ...

    def cpu_s(self) -> float: ...

    def counters(self) -> dict[str, Any]: ...

    def stop(self) -> dict[str, Any]: ...


@dataclass
class KscandMechanism:
    """The kscand daemon with the default tunables (unless given) and a forced access source."""

    source: str
    tunables: dict[str, int] = field(default_factory=dict)
    daemon: Daemon | None = None
    # Started before the workload (the daemon's import takes seconds); it sees the
    # workload only once it is ready, when it renames itself kscand-wl.
    starts_after_ready = False

    @property
    def name(self) -> str:
        return f"kscand-{self.source}"

    def start(self, out: Path) -> None:
        self.daemon = Daemon(self.source, self.tunables, out)
        self.daemon.wait_up()

    def cpu_s(self) -> float:
        """The daemon's CPU; with DAMON also the kdamonds it runs."""
        assert self.daemon is not None
        cpu = proc_cpu_s(self.daemon.pid)
        own = sum(cpu) if cpu else 0.0
        return own + (kdamond_cpu_s() if self.source == "damon" else 0.0)

    def counters(self) -> dict[str, Any]:
        assert self.daemon is not None
        state = self.daemon.fresh_state() or {}
        return {"totals": state.get("totals", {}), "daemon": state.get("daemon", {}),
                "tunables": state.get("tunables", {})}

    def stop(self) -> dict[str, Any]:
        assert self.daemon is not None
        self.daemon.stop()
        return self.daemon.summary()


class NumabMechanism:
    """kernel.numa_balancing = 2 (NUMA_BALANCING_MEMORY_TIERING), default knobs."""

    name = "numab"
    # On from the start: it leaves the workload's memory alone while it is bound
    # (task_numa_work skips MPOL_BIND VMAs), i.e. until ready.
    starts_after_ready = False

    def __init__(self) -> None:
        self.previous = "0"

    def start(self, out: Path) -> None:
        self.previous = NUMA_BALANCING.read_text().strip()
        write_sysfs(NUMA_BALANCING, 2)

    def cpu_s(self) -> float:
        return 0.0  # hint faults are charged to the workload: see its system time

    def counters(self) -> dict[str, Any]:
        return {"numa_balancing": NUMA_BALANCING.read_text().strip()}

    def stop(self) -> dict[str, Any]:
        write_sysfs(NUMA_BALANCING, self.previous)
        return {}


class DamosMechanism:
    """One kdamond (paddr) on node 1's physical range, a migrate_hot scheme to node 0.

    DAMON's default intervals (sample 5 ms, aggregation 100 ms, update 1 s), no
    quota. "damos": regions found accessed at least once in an aggregation (1 of
    its 20 samples) are migrated; "damos-strict": at least 5 of 20 samples, and
    for at least 10 aggregations (1 s) in a row. (6.12's vaddr operations do not
    implement migrate_hot; paddr does.)
    """

    # migrate_hot ignores memory policies: started before, it would move the pages the
    # workload is populating on node 1. So it starts at ready (a few sysfs writes).
    starts_after_ready = True

    def __init__(
        self,
        name: str = "damos",
        min_nr_accesses: int = 1,
        min_age: int = 0,
        source_nid: int = 1,
        target_nid: int = 0,
    ) -> None:
        self.name = name
        self.min_nr_accesses = min_nr_accesses
        self.min_age = min_age
        self.source_nid = source_nid
        self.target_nid = target_nid
        self.kdamond = DAMON_ADMIN / "kdamonds" / "0"

    def start(self, out: Path) -> None:
        kdamonds = DAMON_ADMIN / "kdamonds"
        if int((kdamonds / "nr_kdamonds").read_text()) != 0:
            raise RuntimeError("DAMON sysfs already has kdamonds")
        start, end = node_phys_range(self.source_nid)
        ctx = self.kdamond / "contexts" / "0"
        scheme = ctx / "schemes" / "0"
        pattern = scheme / "access_pattern"
        writes: list[tuple[Path, object]] = [
            (kdamonds / "nr_kdamonds", 1),
            (self.kdamond / "contexts" / "nr_contexts", 1),
            (ctx / "operations", "paddr"),
            (ctx / "monitoring_attrs" / "intervals" / "sample_us", 5000),
            (ctx / "monitoring_attrs" / "intervals" / "aggr_us", 100_000),
            (ctx / "monitoring_attrs" / "intervals" / "update_us", 1_000_000),
            (ctx / "monitoring_attrs" / "nr_regions" / "min", 10),
            (ctx / "monitoring_attrs" / "nr_regions" / "max", 1000),
            (ctx / "targets" / "nr_targets", 1),
            (ctx / "targets" / "0" / "regions" / "nr_regions", 1),
            (ctx / "targets" / "0" / "regions" / "0" / "start", start),
            (ctx / "targets" / "0" / "regions" / "0" / "end", end),
            (ctx / "schemes" / "nr_schemes", 1),
            (scheme / "action", "migrate_hot"),
            (scheme / "target_nid", self.target_nid),
            (pattern / "sz" / "min", 4096),
            (pattern / "sz" / "max", SZ_MAX),
            (pattern / "nr_accesses" / "min", self.min_nr_accesses),
            (pattern / "nr_accesses" / "max", UINT_MAX),
            (pattern / "age" / "min", self.min_age),
            (pattern / "age" / "max", UINT_MAX),
            (self.kdamond / "state", "on"),
        ]
        for path, value in writes:
            write_sysfs(path, value)
        (out / "damos.json").write_text(json.dumps({"region": [start, end]}))

    def cpu_s(self) -> float:
        return kdamond_cpu_s()

    def counters(self) -> dict[str, Any]:
        stats = self.kdamond / "contexts" / "0" / "schemes" / "0" / "stats"
        with contextlib.suppress(OSError):
            write_sysfs(self.kdamond / "state", "update_schemes_stats")
        out: dict[str, Any] = {}
        for name in ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds"):
            with contextlib.suppress(OSError, ValueError):
                out[name] = int((stats / name).read_text())
        return out

    def stop(self) -> dict[str, Any]:
        with contextlib.suppress(OSError):
            write_sysfs(self.kdamond / "state", "off")
        with contextlib.suppress(OSError):
            write_sysfs(DAMON_ADMIN / "kdamonds" / "nr_kdamonds", 0)
        return {}


class NoMechanism:
    """Nothing promotes: the baseline."""

    name = "none"
    starts_after_ready = False

    def start(self, out: Path) -> None:
        return None

    def cpu_s(self) -> float:
        return 0.0

    def counters(self) -> dict[str, Any]:
        return {}

    def stop(self) -> dict[str, Any]:
        return {}


def make_mechanism(name: str, tunables: dict[str, int] | None = None) -> Mechanism:
    if name.startswith("kscand-"):
        return KscandMechanism(name.removeprefix("kscand-"), dict(tunables or {}))
    factories: dict[str, Callable[[], Mechanism]] = {
        "numab": NumabMechanism,
        "damos": DamosMechanism,
        "damos-strict": lambda: DamosMechanism("damos-strict", min_nr_accesses=5, min_age=10),
        "none": NoMechanism,
    }
    if name not in factories:
        raise ValueError(f"unknown mechanism {name!r}: one of {', '.join(MECHANISMS)}")
    return factories[name]()


# --- results ------------------------------------------------------------------------------------


def hot_fraction_on(line: dict[str, Any], group: str, nid: int) -> float:
    """Share of a page group on node nid in one placement line."""
    counts = line.get(group, {})
    total = sum(counts.values())
    return counts.get(f"node{nid}", 0) / total if total else 0.0


def first_time_at(
    timeline: list[dict[str, Any]], group: str, nid: int, share: float
) -> float | None:
    """First t_s at which at least `share` of the group is on node nid; None if never."""
    for line in timeline:
        if hot_fraction_on(line, group, nid) >= share:
            return float(line["t_s"])
    return None


@dataclass
class Result:
    """What one scenario writes to result.json."""

    scenario: str
    out: Path
    data: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def write(self) -> None:
        payload = {"scenario": self.scenario, "errors": self.errors, **self.data}
        tmp = self.out / "result.json.tmp"
        tmp.write_text(json.dumps(payload, indent=1, sort_keys=True))
        tmp.rename(self.out / "result.json")


@contextlib.contextmanager
def recorded(scenario: str, out: Path) -> Iterator[Result]:
    """A Result that is written however the scenario ends; an exception becomes an error."""
    out.mkdir(parents=True, exist_ok=True)
    result = Result(scenario, out)
    result.data["kernel"] = os.uname().release
    try:
        yield result
    except Exception as err:  # the host reports it; the guest must still write the file
        result.errors.append(f"{type(err).__name__}: {err}")
    finally:
        result.write()


def _wait(seconds: float) -> None:
    time.sleep(max(0.0, seconds))


# --- scenarios ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromoteLimits:
    """How long the promote scenario waits (TCG: generous)."""

    deadline_s: float = 240.0  # for >= 90 % of the hot pages on node 0, from ready
    settle_s: float = 6.0  # keeps running after that, so a late wrong move would show
    exiter_life_s: float = 8.0  # the exiting workload's life after its ready


def run_promote(
    source: str,
    out: Path,
    limits: PromoteLimits | None = None,
    tunables: dict[str, int] | None = None,
) -> None:
    """kscand (fast tunables) on a 256 MiB workload with a shared buffer, plus one
    workload that exits while being scanned; until 90 % of the hot pages are on
    node 0 (and the exiter has gone) or the deadline."""
    limits = limits or PromoteLimits()
    # page_idle sees each page: hot pages scattered at random. DAMON sees regions (kscand
    # asks for at most 200 per process) whose edges straddle hot and cold pages: one
    # contiguous hot run, two edges (with 4 runs up to 6 % of the cold pages went along).
    layout = "scattered" if source == "page_idle" else "contiguous"
    tunables = {**FAST_TUNABLES[source], **(tunables or {})}
    with recorded("promote", out) as result, numa_balancing(0, result):
        result.data.update(source=source, tunables=tunables, limits=limits.__dict__)
        daemon = Daemon(source, tunables, out)
        main = Workload(WorkloadSpec(name="main", layout=layout, shared_mib=8, flush_tlb=True), out)
        exiter: Workload | None = None
        try:
            result.data["main"] = main.wait_ready()
            daemon.wait_up()
            exiter = Workload(
                WorkloadSpec(name="exiter", size_mib=64, hot_pct=100, layout="contiguous",
                             comm=f"{WORKLOAD_COMM}-exit", exit_after_s=limits.exiter_life_s,
                             flush_tlb=True),
                out,
            )  # fmt: skip
            exiter_info = exiter.wait_ready()
            result.data["exiter"] = exiter_info
            reached_s = _poll_promotion(main, exiter, daemon, limits, result)
            result.data["reached_90_s"] = reached_s
            if reached_s is not None:
                _wait(limits.settle_s)
            result.data["exiter"]["exit_status"] = exiter.proc.poll()
            result.data["daemon_alive_at_end"] = daemon.alive()
            state = daemon.fresh_state()
            result.data["status"] = state
        finally:
            result.data["main_timeline"] = main.timeline()
            result.data["main_exit_status"] = main.stop()
            if exiter is not None and exiter.proc.poll() is None:
                exiter.proc.kill()
                exiter.proc.wait()
            daemon.stop()
            result.data["daemon"] = daemon.summary()


def _poll_promotion(
    main: Workload, exiter: Workload, daemon: Daemon, limits: PromoteLimits, result: Result
) -> float | None:
    """Wait for 90 % of main's hot pages on node 0 and for the exiter's exit; time of the 90 %."""
    ready_wall = float(main.info["ready_wall"])
    reached_s: float | None = None
    alive_after_exit: list[bool] = []
    lo, hi = (int(a) for a in main.info["buffer"])
    regions = DamonRegionLog(main.pid, lo, hi, enabled=daemon.source == "damon")
    while time.time() - ready_wall < limits.deadline_s:
        regions.poll(time.time() - ready_wall)
        timeline = main.timeline()
        if reached_s is None:
            reached_s = first_time_at(timeline, "hot", 0, 0.9)
        exited = exiter.proc.poll() is not None
        if exited:
            alive_after_exit.append(daemon.alive())
        if not daemon.alive():
            result.errors.append(f"kscand exited early ({daemon.proc.returncode})")
            break
        if reached_s is not None and exited and len(alive_after_exit) >= 3:
            break
        _wait(POLL_S)
    result.data["daemon_alive_after_exiter"] = alive_after_exit
    if regions.samples:
        result.data["damon_regions"] = regions.samples
    return reached_s


@dataclass(frozen=True)
class FullLimits:
    """The node-0-full scenario: how much room the filler leaves and how long to watch."""

    # Node 0's free memory the filler (MPOL_BIND node 0) leaves when it starts: with
    # less it is OOM-killed while populating. The daemon's and the workload's own
    # allocations then take node 0 down to its watermarks, under kscand's 2 % floor.
    leave_mib: int = 40
    run_s: float = 45.0
    min_run_s: float = 20.0  # stop early after this once failures or drops were counted


def run_full(
    source: str,
    out: Path,
    limits: FullLimits | None = None,
    tunables: dict[str, int] | None = None,
) -> None:
    """A filler bound to node 0 leaves it nearly full; then kscand and a 256 MiB workload
    whose 25 MiB hot set does not fit in what is left."""
    limits = limits or FullLimits()
    tunables = {**FAST_TUNABLES[source], **(tunables or {})}
    with recorded("full", out) as result, numa_balancing(0, result):
        result.data.update(source=source, tunables=tunables, limits=limits.__dict__)
        filler = Workload(
            WorkloadSpec(name="filler", node=0, keep_bind=True, hold=True, hot_pct=0.0001,
                         fill_leave_mib=limits.leave_mib, comm="kscand-fill"),
            out,
        )  # fmt: skip
        daemon: Daemon | None = None
        main: Workload | None = None
        free: list[tuple[float, float]] = []
        regions: DamonRegionLog | None = None
        try:
            result.data["filler"] = filler.wait_ready()
            result.data["node0_free_mib_after_filler"] = node_free_mib(0)
            daemon = Daemon(source, tunables, out)
            main = Workload(WorkloadSpec(name="main", layout="contiguous", flush_tlb=True), out)
            result.data["main"] = main.wait_ready()
            daemon.wait_up()
            t0 = time.monotonic()
            lo, hi = (int(a) for a in main.info["buffer"])
            regions = DamonRegionLog(main.pid, lo, hi, enabled=source == "damon")
            while time.monotonic() - t0 < limits.run_s and daemon.alive():
                free.append((round(time.monotonic() - t0, 1), node_free_mib(0)))
                regions.poll(time.monotonic() - t0)
                state = daemon.state() or {}
                totals = state.get("totals", {})
                refused = totals.get("drop_target_full", 0) + totals.get(
                    "nr_kscand_migrate_failed", 0
                )
                if refused and time.monotonic() - t0 >= limits.min_run_s:
                    break
                _wait(POLL_S)
            result.data["daemon_alive_at_end"] = daemon.alive()
            result.data["filler_alive_at_end"] = filler.proc.poll() is None
            result.data["status"] = daemon.fresh_state()
        finally:
            result.data["node0_free_mib"] = free
            if regions is not None and regions.samples:
                result.data["damon_regions"] = regions.samples
            if main is not None:
                result.data["main_timeline"] = main.timeline()
                result.data["main_exit_status"] = main.stop()
            if daemon is not None:
                daemon.stop()
                result.data["daemon"] = daemon.summary()
            result.data["filler_exit_status"] = filler.stop()


def run_compare(
    mechanism_name: str,
    out: Path,
    duration_s: float,
    spec: WorkloadSpec,
    tunables: dict[str, int] | None = None,
) -> None:
    """One mechanism on the workload for duration_s from ready: placement over time, CPU."""
    # Off for every mechanism but numab (which turns it on itself): pages move only by
    # the mechanism under test.
    with recorded("compare", out) as result, numa_balancing(0, result):
        mechanism = make_mechanism(mechanism_name, tunables)
        result.data.update(mechanism=mechanism_name, duration_s=duration_s, workload=spec.__dict__)
        before = vmstat()
        if not mechanism.starts_after_ready:
            mechanism.start(out)
        workload = Workload(spec, out)
        timeline: list[dict[str, Any]] = []
        try:
            result.data["main"] = workload.wait_ready()
            if mechanism.starts_after_ready:
                mechanism.start(out)
            observer = workload.observer()
            start = _sample(mechanism, workload.pid)
            deadline = time.monotonic() + duration_s
            while time.monotonic() < deadline:
                timeline.append(observer.sample())
                _wait(min(POLL_S, deadline - time.monotonic()))
            timeline.append(observer.sample())
            end = _sample(mechanism, workload.pid)
            result.data["cpu"] = cpu_delta(start, end)
            result.data["vmstat_delta"] = vmstat_delta(start["vmstat"], end["vmstat"])
            result.data["vmstat_delta_since_mechanism_start"] = vmstat_delta(before, end["vmstat"])
            result.data["counters"] = mechanism.counters()
        finally:
            result.data["timeline"] = timeline
            result.data["workload_exit_status"] = workload.stop()
            result.data["mechanism_stop"] = mechanism.stop()


def cpu_delta(start: dict[str, Any], end: dict[str, Any]) -> dict[str, float]:
    """CPU seconds spent between two samples (the numeric fields of _sample)."""
    return {k: round(end[k] - v, 3) for k, v in start.items() if isinstance(v, int | float)}


def vmstat_delta(start: dict[str, int], end: dict[str, int]) -> dict[str, int]:
    """Growth of the VMSTAT_KEYS counters (those this kernel has)."""
    return {k: end[k] - start.get(k, 0) for k in VMSTAT_KEYS if k in end}


def _sample(mechanism: Mechanism, workload_pid: int) -> dict[str, Any]:
    """CPU seconds of the mechanism and the workload, and /proc/vmstat, now."""
    cpu = proc_cpu_s(workload_pid) or (0.0, 0.0)
    return {
        "mechanism_s": mechanism.cpu_s(),
        "workload_user_s": cpu[0],
        "workload_sys_s": cpu[1],
        "vmstat": vmstat(),
    }


# --- CLI ------------------------------------------------------------------------------------


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m testbed.inguest", description=__doc__)
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name in ("promote", "full"):
        p = sub.add_parser(name)
        p.add_argument("--source", choices=sorted(FAST_TUNABLES), required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument("--tunable", action="append", default=[], metavar="NAME=INT",
                       help="override one of the scenario's tunables (repeatable)")
    p = sub.add_parser("compare")
    p.add_argument("--mechanism", choices=MECHANISMS, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--duration-s", type=float, default=90.0)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--layout", default="chunks:4")
    p.add_argument("--hot-pct", type=float, default=10.0)
    p.add_argument("--fast", action="store_true", help="kscand with the end-to-end tunables")
    p.add_argument("--flush-tlb", action="store_true",
                   help="the workload flushes its TLB before each pass (see workload.py)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.scenario in ("promote", "full"):
        overrides = {}
        for item in args.tunable:
            name, _, value = item.partition("=")
            overrides[name] = int(value)
        run = run_promote if args.scenario == "promote" else run_full
        run(args.source, args.out, None, overrides)
    else:
        spec = WorkloadSpec(size_mib=args.size_mib, layout=args.layout, hot_pct=args.hot_pct,
                            report_interval_s=0, flush_tlb=args.flush_tlb)
        source = args.mechanism.removeprefix("kscand-")
        tunables = FAST_TUNABLES.get(source, {}) if args.fast else {}
        run_compare(args.mechanism, args.out, args.duration_s, spec, tunables)
    return 0


if __name__ == "__main__":
    sys.exit(main())
