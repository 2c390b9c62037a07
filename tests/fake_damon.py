"""A DAMON sysfs tree whose writes do what the kernel's mm/damon/sysfs*.c does, for tests.

Emulated: nr_kdamonds (re)creates every kdamond directory and fails with
EBUSY while one runs; nr_contexts/nr_targets/nr_schemes create their
directories; state on/off/update_schemes_tried_regions; a scheme's access
pattern filters the tried regions (each max defaults to 0, so nothing
matches until they are opened up). Other writes need an existing file.

update_schemes_tried_regions blocks like damon_sysfs_handle_cmd(): the kernel
holds one such command at a time for all kdamonds (-EBUSY for a second), and the
write returns when the kdamond handled it (here: update_delay_s later, or when
`gate` is set, whichever comes first) or stopped. A slow kernel is a large
update_delay_s, or a gate the test opens when it wants.
"""

from __future__ import annotations

import errno
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from kscand.live.damon_sysfs import DamonSysfs


@dataclass
class FakeRegion:
    start: int
    end: int
    nr_accesses: int
    age: int = 3


@dataclass
class FakeDamonKernel(DamonSysfs):
    """The kdamonds directory plus the kernel's reactions to writes."""

    base: Path = Path()
    ops: str = "vaddr fvaddr paddr"
    live_pids: set[int] = field(default_factory=set)
    regions: dict[int, list[FakeRegion]] = field(default_factory=dict)  # pid -> regions
    fill_lag_reads: int = 0  # reads of tried_regions before a requested fill appears
    writes: list[tuple[str, str]] = field(default_factory=list)
    update_delay_s: float = 0.0  # how long a tried-regions update takes the kdamond
    gate: threading.Event | None = None  # set: in-flight updates complete at once
    update_threads: list[int] = field(default_factory=list)  # thread ident of each update
    nr_updates_done: int = 0
    updated: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        super().__init__(str(self.base))
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "nr_kdamonds").write_text("0\n")
        self._pending: dict[str, int] = {}  # kdamond -> reads left before its fill appears
        self._cmd_lock = threading.Lock()
        self._cmd_kdamond: str | None = None  # damon_sysfs_cmd_request.kdamond

    def _p(self, rel: str) -> Path:
        return self.base / rel

    def _mk(self, rel: str, files: dict[str, str]) -> None:
        directory = self._p(rel)
        directory.mkdir(parents=True, exist_ok=True)
        for name, value in files.items():
            (directory / name).write_text(value + "\n")

    def running(self) -> list[str]:
        return [d.name for d in self.base.iterdir()
                if d.is_dir() and (d / "state").read_text().strip() == "on"]

    def write(self, rel: str, value: str | int) -> None:
        text = str(value).strip()
        self.writes.append((rel, text))
        parts = rel.split("/")
        if rel == "nr_kdamonds":
            return self._nr_kdamonds(int(text))
        if not self._p(rel).exists():
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", rel)
        if parts[-1] == "nr_contexts":
            return self._nr_contexts(parts[0], int(text))
        if parts[-1] == "nr_targets":
            for i in range(int(text)):
                self._mk(f"{parts[0]}/contexts/0/targets/{i}", {"pid_target": "0"})
        elif parts[-1] == "nr_schemes":
            for i in range(int(text)):
                self._scheme(f"{parts[0]}/contexts/0/schemes/{i}")
        elif parts[-1] == "state":
            return self._state(parts[0], text)
        self._p(rel).write_text(text + "\n")
        return None

    def _nr_kdamonds(self, nr: int) -> None:
        if self.running():
            raise OSError(errno.EBUSY, "Device or resource busy")
        for child in self.base.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
        for i in range(nr):
            self._mk(str(i), {"state": "off", "pid": "-1"})
            self._mk(f"{i}/contexts", {"nr_contexts": "0"})
        (self.base / "nr_kdamonds").write_text(f"{nr}\n")

    def _nr_contexts(self, kdamond: str, nr: int) -> None:
        if nr > 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        ctx = f"{kdamond}/contexts/0"
        self._mk(ctx, {"avail_operations": self.ops, "operations": "vaddr"})
        self._mk(f"{ctx}/monitoring_attrs/intervals",
                 {"sample_us": "5000", "aggr_us": "100000", "update_us": "1000000"})
        self._mk(f"{ctx}/monitoring_attrs/nr_regions", {"min": "10", "max": "1000"})
        self._mk(f"{ctx}/targets", {"nr_targets": "0"})
        self._mk(f"{ctx}/schemes", {"nr_schemes": "0"})
        self._p(f"{kdamond}/contexts/nr_contexts").write_text(f"{nr}\n")

    def _scheme(self, rel: str) -> None:
        self._mk(rel, {"action": "stat", "apply_interval_us": "0"})
        for name in ("sz", "nr_accesses", "age"):
            self._mk(f"{rel}/access_pattern/{name}", {"min": "0", "max": "0"})
        self._mk(f"{rel}/tried_regions", {"total_bytes": "0"})

    def _state(self, kdamond: str, cmd: str) -> None:
        state = self._p(f"{kdamond}/state")
        ctx = f"{kdamond}/contexts/0"
        if cmd == "on":
            pid = int(self.read(f"{ctx}/targets/0/pid_target"))
            if state.read_text().strip() == "on":
                raise OSError(errno.EBUSY, "busy")
            if pid not in self.live_pids or self.read(f"{ctx}/operations") not in self.ops.split():
                raise OSError(errno.EINVAL, "Invalid argument")
            state.write_text("on\n")
        elif cmd == "off":
            if state.read_text().strip() != "on":
                # A context without a running kdamond: mm/damon/core.c __damon_stop()
                raise OSError(errno.EPERM, "Operation not permitted")
            state.write_text("off\n")
        elif cmd == "update_schemes_tried_regions":
            if state.read_text().strip() != "on":
                raise OSError(errno.EINVAL, "Invalid argument")
            self._update(kdamond)
        else:
            raise OSError(errno.EINVAL, "Invalid argument")

    def _update(self, kdamond: str) -> None:
        with self._cmd_lock:
            if self._cmd_kdamond is not None:
                raise OSError(errno.EBUSY, "Device or resource busy")
            self._cmd_kdamond = kdamond
        self.update_threads.append(threading.get_ident())
        try:
            deadline = time.monotonic() + self.update_delay_s
            while time.monotonic() < deadline:
                if self.gate is not None and self.gate.is_set():
                    break
                if self._p(f"{kdamond}/state").read_text().strip() != "on":
                    return  # the kdamond stopped: the command ends unhandled
                time.sleep(0.005)
            self._fill_tried_regions(kdamond)
        finally:
            with self._cmd_lock:
                self._cmd_kdamond = None
            with self.updated:
                self.nr_updates_done += 1
                self.updated.notify_all()

    def _fill_tried_regions(self, kdamond: str) -> None:
        ctx = f"{kdamond}/contexts/0"
        tried = self._p(f"{ctx}/schemes/0/tried_regions")
        for child in tried.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
        if self.fill_lag_reads:
            self._pending[kdamond] = self.fill_lag_reads
            return
        self._fill_now(kdamond)

    def listdir(self, rel: str) -> list[str]:
        kdamond = rel.split("/")[0]
        if rel.endswith("tried_regions") and kdamond in self._pending:
            self._pending[kdamond] -= 1
            if self._pending[kdamond] < 0:
                del self._pending[kdamond]
                self._fill_now(kdamond)
        return super().listdir(rel)

    def _fill_now(self, kdamond: str) -> None:
        ctx = f"{kdamond}/contexts/0"
        pid = int(self.read(f"{ctx}/targets/0/pid_target"))
        pattern = {
            name: (int(self.read(f"{ctx}/schemes/0/access_pattern/{name}/min")),
                   int(self.read(f"{ctx}/schemes/0/access_pattern/{name}/max")))
            for name in ("sz", "nr_accesses", "age")
        }
        matched = [
            r for r in self.regions.get(pid, [])
            if pattern["sz"][0] <= r.end - r.start <= pattern["sz"][1]
            and pattern["nr_accesses"][0] <= r.nr_accesses <= pattern["nr_accesses"][1]
            and pattern["age"][0] <= r.age <= pattern["age"][1]
        ]
        for i, r in enumerate(matched):
            self._mk(f"{ctx}/schemes/0/tried_regions/{i}", {
                "start": str(r.start), "end": str(r.end), "nr_accesses": str(r.nr_accesses),
                "age": str(r.age), "sz_filter_passed": "0",
            })

    def kill(self, pid: int) -> None:
        """The target exits: DAMON's vaddr context stops its kdamond by itself."""
        self.live_pids.discard(pid)
        for d in self.base.iterdir():
            if d.is_dir() and (d / "state").read_text().strip() == "on":
                target = d / "contexts/0/targets/0/pid_target"
                if target.exists() and int(target.read_text()) == pid:
                    (d / "state").write_text("off\n")
