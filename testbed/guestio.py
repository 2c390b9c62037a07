"""What the in-guest scenarios read and write: /proc and /sys, the workloads' output
files, page placement seen from outside, and the result.json every scenario writes.

Runs inside the guest (testbed/scenarios.py); only the standard library (numpy's
import takes 6-13 s under TCG, and this side only starts and watches others).
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DAMON_ADMIN = Path("/sys/kernel/mm/damon/admin")
NUMA_BALANCING = Path("/proc/sys/kernel/numa_balancing")
DEMOTION_ENABLED = Path("/sys/kernel/mm/numa/demotion_enabled")
NODE_SYSFS = Path("/sys/devices/system/node")
MEMORY_SYSFS = Path("/sys/devices/system/memory")
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYS_MOVE_PAGES = 279  # x86_64
POLL_S = 1.0
VMSTAT_KEYS = (
    "pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgpromote_candidate",
    "numa_hint_faults", "numa_hint_faults_local", "numa_pages_migrated", "numa_pte_updates",
    "pgdemote_kswapd", "pgdemote_direct", "pgdemote_khugepaged",
)  # fmt: skip
REGION_FIELDS = ("start", "end", "nr_accesses", "age")


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


def node_meminfo_mib(nid: int, key: str) -> float:
    """One field of a node's meminfo ("Node 0 MemFree:  123 kB"), MiB."""
    for line in (NODE_SYSFS / f"node{nid}" / "meminfo").read_text().splitlines():
        if f" {key}:" in line:
            return int(line.split()[-2]) / 1024
    raise RuntimeError(f"node {nid}: no {key} in meminfo")


def node_free_mib(nid: int) -> float:
    return node_meminfo_mib(nid, "MemFree")


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


def wait_s(seconds: float) -> None:
    """Sleep, never a negative time."""
    time.sleep(max(0.0, seconds))
