"""Which processes to scan, and their identity (pid + start time) from /proc/PID/stat.

Identity follows psutil: /proc/PID/stat split at the last ')', start time is
field 22. A pid whose start time changed names another process (pid reuse).
"""

from __future__ import annotations

import errno
import fnmatch
import os
from collections.abc import Iterable
from dataclasses import dataclass

from kscand.cgroups import in_cgroup, normalize_cgroup
from kscand.errors import AccessDenied, ProcessGone, TransientError
from kscand.live.procfs import ParseError, ProcStat, parse_stat
from kscand.machine import ProcessId

_GONE_ERRNOS = (errno.ENOENT, errno.ESRCH, errno.ENOTDIR)


def cgroup_v2_path(text: str) -> str | None:
    """The unified-hierarchy path from /proc/PID/cgroup text ("0::/path"), None if absent."""
    for line in text.splitlines():
        if line.startswith("0::"):
            return normalize_cgroup(line[3:])
    return None


@dataclass(frozen=True, slots=True)
class ProcessSelection:
    """Processes to scan: the union of the pids, cgroups (v2) and comm patterns given.

    All empty selects every user process. Kernel threads and kscand itself
    are never selected.
    """

    pids: tuple[int, ...] = ()
    cgroups: tuple[str, ...] = ()
    comm_patterns: tuple[str, ...] = ()  # fnmatch patterns on comm, e.g. "redis*"

    @property
    def everything(self) -> bool:
        return not (self.pids or self.cgroups or self.comm_patterns)

    def matches(self, stat: ProcStat, cgroup: str | None) -> bool:
        """Whether a (user, live) process is selected; cgroup may be None when unknown."""
        if self.everything or stat.pid in self.pids:
            return True
        if any(fnmatch.fnmatchcase(stat.comm, pattern) for pattern in self.comm_patterns):
            return True
        return cgroup is not None and any(in_cgroup(cgroup, sel) for sel in self.cgroups)


def is_scannable(stat: ProcStat) -> bool:
    """A user process with an address space: not a kernel thread, not a zombie."""
    return not stat.is_kernel_thread and stat.state not in ("Z", "X", "x")


class ProcTable:
    """Reads /proc/PID/stat and /proc/PID/cgroup under a procfs root."""

    def __init__(self, procfs: str = "/proc") -> None:
        self.procfs = procfs

    def path(self, pid: int, name: str) -> str:
        return os.path.join(self.procfs, str(pid), name)

    def read_text(self, pid: int, name: str) -> str:
        """A /proc/PID file as text; ProcessGone if the process is gone."""
        try:
            with open(self.path(pid, name), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as err:
            raise proc_error(err, pid, name) from err

    def stat(self, pid: int) -> ProcStat:
        """Parsed /proc/PID/stat; ProcessGone if absent or unparsable."""
        text = self.read_text(pid, "stat")
        try:
            return parse_stat(text)
        except ParseError as err:
            raise ProcessGone(f"pid {pid}: {err}") from err

    def identity(self, pid: int) -> ProcessId:
        return ProcessId(pid, self.stat(pid).start_time)

    def is_alive(self, proc: ProcessId) -> bool:
        try:
            stat = self.stat(proc.pid)
        except ProcessGone:
            return False
        except TransientError:
            return True  # not known to be gone; the next read tells
        return stat.start_time == proc.start_time and stat.state not in ("Z", "X", "x")

    def check(self, proc: ProcessId) -> None:
        """Raise ProcessGone unless proc still names the same live process."""
        if not self.is_alive(proc):
            raise ProcessGone(f"process {proc} exited or its pid was reused")

    def cgroup(self, pid: int) -> str | None:
        try:
            return cgroup_v2_path(self.read_text(pid, "cgroup"))
        except (ProcessGone, AccessDenied):
            return None

    def pids(self) -> list[int]:
        """Every thread-group id listed in procfs."""
        try:
            names = os.listdir(self.procfs)
        except OSError as err:
            raise AccessDenied(f"{self.procfs}: {err.strerror}") from err
        return sorted(int(name) for name in names if name.isdigit())

    def select(self, selection: ProcessSelection, self_pid: int) -> list[ProcessId]:
        """The selected scannable processes now; ones that vanish meanwhile are skipped."""
        candidates: Iterable[int] = self.pids()
        if selection.pids and not (selection.cgroups or selection.comm_patterns):
            candidates = sorted(set(selection.pids) & set(candidates))
        procs = []
        for pid in candidates:
            if pid == self_pid:
                continue
            try:
                stat = self.stat(pid)
            except (ProcessGone, AccessDenied):
                continue
            if not is_scannable(stat):
                continue
            cgroup = self.cgroup(pid) if selection.cgroups else None
            if selection.matches(stat, cgroup):
                procs.append(ProcessId(pid, stat.start_time))
        return procs


def errno_name(err: OSError) -> str:
    """EIO, ENOMEM, ... (the number when it has no name)."""
    return errno.errorcode.get(err.errno or 0, str(err.errno))


def proc_error(err: OSError, pid: int, name: str) -> Exception:
    """ProcessGone for a vanished process, AccessDenied for a refusal, TransientError
    (retried later, counted by reason) for any other errno: an EIO or ENOMEM is not
    an exit, and taking it for one made the process flap in and out of the list."""
    if err.errno in _GONE_ERRNOS:
        return ProcessGone(f"pid {pid}: /proc/{pid}/{name}: no such process")
    if err.errno in (errno.EACCES, errno.EPERM):
        return AccessDenied(f"/proc/{pid}/{name}: {err.strerror}")
    file = name.split("/")[0]
    return TransientError(f"/proc/{pid}/{name}: {err.strerror}",
                          f"{file}_{errno_name(err).lower()}")
