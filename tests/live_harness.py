"""The live machine on this host, made able to promote: for the churn and fault tests.

This host has one NUMA node and no page_idle bitmap, so the real engine would
never find a candidate. TwoTierHost is the real LinuxMachine (real /proc
reads, real identity checks, real move_pages(2) calls) with two things
swapped: every page counts as accessed (AllYoung, in place of page_idle), and
present pages on node 0 are reported on a fictitious slow node 1 until they
have been "promoted" (a move_pages(2) to node 0 that returned 0, which on one
node moves nothing but runs the whole kernel path: ESRCH, EINVAL for a
zombie, per-page status). The mover is wrapped by IdentityCheckingMover, which
records every call and checks, at the moment of the syscall, that the pid
still names the process the test started.

Children come from Spawner, a small separate Python process that forks them
on request (so they are not copies of the big pytest process): each child
names itself "kscand-churn", writes its own private buffer and sleeps.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from kscand.errors import ProcessGone
from kscand.live import LinuxMachine, ProcessSelection
from kscand.live.procfs import parse_stat
from kscand.machine import (
    NID_NONE,
    BoolArray,
    I32Array,
    NodeInfo,
    PageBatch,
    ProcessId,
    Topology,
    U64Array,
)

# Unique to this test session (15 characters at most, the kernel's TASK_COMM_LEN - 1):
# the daemon selects the children by comm, and a second test session on the same host
# (a CI run beside a developer's) would otherwise have its daemon move the other's
# children, which the identity check rightly calls moves for a stranger.
CHILD_COMM = f"kscand-c{os.getpid() % 10_000_000}"
SLOW_NID = 1

SPAWNER = r"""
import ctypes, mmap, os, sys, time
libc = ctypes.CDLL(None)

def child(lifetime_s, size):
    libc.prctl(15, sys.argv[1].encode(), 0, 0, 0)
    buf = mmap.mmap(-1, size)
    for off in range(0, size, 4096):
        buf[off] = 1
    time.sleep(lifetime_s)

for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "spawn":
        pid = os.fork()
        if pid == 0:
            try:
                child(float(args[0]), int(args[1]))
            finally:
                os._exit(0)
        with open(f"/proc/{pid}/stat") as f:  # a child stays listed until reaped
            start_time = int(f.read().rpartition(")")[2].split()[19])
        print(pid, start_time, flush=True)
    elif cmd == "reap":
        reaped = []
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            reaped.append(pid)
        print(" ".join(map(str, reaped)) or "-", flush=True)
"""


class Spawner:
    """Forks short-lived children that touch their own memory; reaps them on request."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-S", "-u", "-c", SPAWNER, CHILD_COMM],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.children: dict[int, int] = {}  # pid -> start time, as started
        self.lock = threading.Lock()

    def _ask_locked(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def spawn(self, lifetime_s: float, size_bytes: int = 256 << 10) -> ProcessId:
        # Registered under the lock the identity check takes: the child may name itself
        # (and be scanned and moved by the daemon thread) before the reply is read.
        with self.lock:
            pid_text, start_text = self._ask_locked(f"spawn {lifetime_s} {size_bytes}").split()
            proc = ProcessId(int(pid_text), int(start_text))
            self.children[proc.pid] = proc.start_time
        wait_named(proc.pid)  # selected by comm: not before it renamed itself
        return proc

    def reap(self) -> list[int]:
        with self.lock:
            reply = self._ask_locked("reap")
        return [] if reply == "-" else [int(p) for p in reply.split()]

    def close(self) -> None:
        for pid in list(self.children):
            kill(pid)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def wait_named(pid: int, timeout_s: float = 2.0) -> None:
    """Until the child's comm is CHILD_COMM (or it is gone)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == CHILD_COMM:
                    return
        except OSError:
            return
        time.sleep(0.0005)
    raise AssertionError(f"pid {pid} never named itself {CHILD_COMM}")


def wait_dead(pid: int, timeout_s: float = 2.0) -> None:
    """Until pid is a zombie or gone (after SIGKILL)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if parse_stat(f.read()).state in ("Z", "X"):
                    return
        except (OSError, ValueError):
            return
        time.sleep(0.001)
    raise AssertionError(f"pid {pid} did not die")


class AllYoung:
    """Access source: every page was accessed since the last scan."""

    name = "all-young"

    def __init__(self) -> None:
        self.hook = None  # called with (proc, pages) before answering

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        if self.hook is not None:
            self.hook(proc, pages)
        return np.ones(len(pages), dtype=np.bool_)

    def forget(self, proc: ProcessId) -> None:
        """Nothing kept per process."""

    def begin_step(self) -> None:
        """No per-step state."""

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class MoveCall:
    pid: int
    nr_pages: int
    at_ns: int
    identity_ok: bool  # pid named the process the spawner started, at the syscall


class IdentityCheckingMover:
    """Wraps the real mover: records each move call and checks the pid's identity at it."""

    def __init__(self, inner: object, spawner: Spawner) -> None:
        self.inner = inner
        self.spawner = spawner
        self.calls: list[MoveCall] = []

    def _identity_ok(self, pid: int) -> bool:
        """False for a move aimed at a live process other than the child the pid names."""
        with self.spawner.lock:  # a child being spawned is registered first
            expected = self.spawner.children.get(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = parse_stat(f.read())
        except (OSError, ValueError):
            return True  # gone: the syscall fails with ESRCH, nothing can move
        if stat.state in ("Z", "X"):
            return True  # exiting (another test's child being reaped): nothing to move
        return expected is not None and stat.start_time == expected

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> I32Array:
        self.calls.append(MoveCall(pid, int(vaddrs.size), time.monotonic_ns(),
                                   self._identity_ok(pid)))
        out: I32Array = self.inner.move(pid, vaddrs, nid)  # type: ignore[attr-defined]
        return out

    def query(self, pid: int, vaddrs: U64Array) -> I32Array:
        out: I32Array = self.inner.query(pid, vaddrs)  # type: ignore[attr-defined]
        return out


class TwoTierHost(LinuxMachine):
    """LinuxMachine on this host with a fictitious slow node (see the module docstring)."""

    def __init__(self, comm: str = CHILD_COMM, *, sticky_slow: bool = False) -> None:
        super().__init__(selection=ProcessSelection(comm_patterns=(comm,)))
        self.access.close()
        self.access = AllYoung()
        self.sticky_slow = sticky_slow  # True: pages stay on the slow node (steady work)
        self.promoted: dict[int, set[int]] = {}  # pid -> vaddrs moved to node 0

    def topology(self) -> Topology:
        top = super().topology().nodes[0]
        slow = NodeInfo(SLOW_NID, top.capacity_pages, top.capacity_pages, False, 67, False)
        return Topology((NodeInfo(top.nid, top.capacity_pages, top.free_pages, True, 4, True),
                         slow))

    def _relabel(self, proc: ProcessId, batch: PageBatch) -> PageBatch:
        done = np.fromiter(self.promoted.get(proc.pid, ()), dtype=np.uint64)
        slow = (batch.nid != NID_NONE) & ~np.isin(batch.vaddr, done)
        nid = np.where(slow, np.int32(SLOW_NID), batch.nid).astype(np.int32)
        return PageBatch(batch.vaddr, batch.pfn, nid, batch.flags)

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        return self._relabel(proc, super().read_range(proc, start, end))

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        return self._relabel(proc, super().read_pages(proc, vaddrs))

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        status = super().move_pages(proc, vaddrs, nid)
        if not self.sticky_slow:
            moved = vaddrs[status == nid]
            self.promoted.setdefault(proc.pid, set()).update(int(v) for v in moved)
        return status

    def forget(self, proc: ProcessId) -> None:
        super().forget(proc)
        self.promoted.pop(proc.pid, None)


def host_can_run_live_tests() -> str | None:
    """Why the live churn/fault tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root: pagemap hides PFNs and /proc/kpageflags is root-only"
    if not os.path.exists("/proc/kpageflags"):
        return "kernel without CONFIG_PROC_PAGE_MONITOR"
    try:
        TwoTierHost().close()
    except (ProcessGone, OSError) as err:
        return f"the live machine cannot start here: {err}"
    return None
