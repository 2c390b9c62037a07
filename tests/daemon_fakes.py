"""A tiny two-node Machine and daemon helpers for the daemon and control-socket tests.

Node 0 is the top tier, node 1 the slow tier; every process has one anon VMA
whose pages all start on node 1 and are accessed on every scan, so with the
default hot_history_depth of 2 the second step promotes them all.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from kscand.backends import Backend
from kscand.config import Config, config_from_text
from kscand.daemon.control import Handler
from kscand.daemon.loop import Daemon
from kscand.machine import (
    PAGE_SIZE,
    BoolArray,
    I32Array,
    NodeInfo,
    PageBatch,
    PageFlag,
    ProcessId,
    ProcessInfo,
    Topology,
    U64Array,
    Vma,
    VmFlag,
)

VMA_START = 0x7F00_0000_0000
# Throttling off (no initial delay, a 10 ms period): the fake machine runs in real time
# and every process is scanned at every step.
# A promotion waits for the re-probe (promote_on_reprobe): 10 ms, one scan period here,
# so the daemon tests promote a step after the scan rather than ten.
FAST_TUNABLES = (
    "scan_delay_ms = 0\nmm_scan_period_ms = 10\nscan_period_min_ms = 10\ndefault_scale = 1\n"
    "reprobe_delay_ms = 10\n"
)


def fast_config(state_dir: Path, tunables: str = "scan_sleep_ms = 10") -> Config:
    """Default config with FAST_TUNABLES plus `tunables` (TOML lines), in state_dir."""
    return config_from_text(f"[tunables]\n{FAST_TUNABLES}{tunables}\n").with_state_dir(state_dir)


class RealClock:
    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, duration_ns: int) -> None:
        time.sleep(duration_ns / 1e9)


class FakeMachine:
    """Processes with nr_pages anon pages each, all on slow node 1, all accessed."""

    def __init__(self, nr_procs: int = 2, nr_pages: int = 64, move_delay_s: float = 0.0) -> None:
        self.clock = RealClock()
        self.nr_pages = nr_pages
        self.move_delay_s = move_delay_s
        self.nid = {
            ProcessId(100 + i, 1000 + i): np.ones(nr_pages, np.int32) for i in range(nr_procs)
        }
        self.move_calls = 0
        self.moves_in_flight = 0
        self.closed = False

    def topology(self) -> Topology:
        nodes = []
        for nid, top in ((0, True), (1, False)):
            used = sum(int(np.count_nonzero(a == nid)) for a in self.nid.values())
            nodes.append(NodeInfo(nid, 1 << 20, (1 << 20) - used, top, 4 if top else 67, top))
        return Topology(tuple(nodes))

    def processes(self) -> list[ProcessId]:
        return sorted(self.nid)

    def is_alive(self, proc: ProcessId) -> bool:
        return proc in self.nid

    def describe(self, proc: ProcessId) -> ProcessInfo:
        return ProcessInfo(comm=f"fake{proc.pid}", cgroup="/fake")

    def vmas(self, proc: ProcessId) -> list[Vma]:
        end = VMA_START + self.nr_pages * PAGE_SIZE
        return [Vma(VMA_START, end, VmFlag.READ | VmFlag.WRITE)]

    def _batch(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        idx = ((vaddrs - np.uint64(VMA_START)) // np.uint64(PAGE_SIZE)).astype(np.intp)
        nid = self.nid[proc][idx]
        pfn = (np.uint64(proc.pid) << np.uint64(20)) + idx.astype(np.uint64) + np.uint64(1)
        flags = np.full(idx.shape, PageFlag.PRESENT | PageFlag.LRU | PageFlag.ANON, np.uint32)
        return PageBatch(vaddrs.astype(np.uint64), pfn, nid.astype(np.int32), flags)

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        return self._batch(proc, np.arange(start, end, PAGE_SIZE, dtype=np.uint64))

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        return self._batch(proc, vaddrs)

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        return np.ones(len(pages), dtype=np.bool_)

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        self.moves_in_flight += 1
        self.move_calls += 1
        time.sleep(self.move_delay_s)
        idx = ((vaddrs - np.uint64(VMA_START)) // np.uint64(PAGE_SIZE)).astype(np.intp)
        self.nid[proc][idx] = nid
        self.moves_in_flight -= 1
        return np.full(idx.shape, nid, dtype=np.int32)

    def close(self) -> None:
        self.closed = True


def fake_backend(machine: FakeMachine) -> Backend:
    return Backend(
        machine=machine,
        kind="fake",
        access_source="fake",
        access_source_reason="every page is always accessed",
        close=machine.close,
    )


# How long a test waits for a requested stop to be honoured: generous, since a loaded
# machine is slow, not wrong (the stop latency itself is measured, not asserted in CI).
STOP_BOUND_S = 30.0


class DaemonThread:
    """A started daemon whose loop runs in a background thread."""

    def __init__(self, config: Config, machine: FakeMachine | Backend, **kwargs: Any) -> None:
        backend = machine if isinstance(machine, Backend) else fake_backend(machine)
        self.machine = machine
        self.daemon = Daemon(config, backend, **kwargs)
        self.daemon.start()
        self.status: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.status.append(self.daemon.run_loop()), daemon=True
        )
        self.thread.start()

    def stop(self, timeout_s: float = 5.0) -> float:
        """Request a stop; returns the seconds the loop took to end."""
        start = time.monotonic()
        self.daemon.request_stop("test")
        self.thread.join(timeout_s)
        elapsed = time.monotonic() - start
        self.daemon.close()
        return elapsed

    def wait_for(self, predicate: Any, timeout_s: float = 5.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached in time")
            time.sleep(0.01)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)
    return path


def two_tier_scenario(name: str, processes: str) -> str:
    """A `kscand run --sim` scenario: node 0 (256 MiB, CPUs, tier 4), node 1 (256 MiB,
    CPU-less, tier 67) and the given [[processes]] tables; 600 s long, seed 1."""
    return f"""
name = "{name}"
seed = 1
duration_s = 600
sample_interval_s = 1
[[nodes]]
nid = 0
capacity = "256MiB"
cpus = true
tier = 4
[[nodes]]
nid = 1
capacity = "256MiB"
cpus = false
tier = 67
{processes}"""


def recording_handler(calls: list[str], reply: dict[str, Any]) -> Handler:
    """A control handler that records each request's "cmd" in calls and replies reply."""

    def handle(req: dict[str, Any]) -> dict[str, Any]:
        calls.append(req["cmd"])
        return dict(reply)

    return handle
