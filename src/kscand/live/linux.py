"""LinuxMachine: the Machine interface on /proc, /sys and move_pages(2).

Pages: /proc/PID/pagemap read in whole ranges (only the present or swapped
runs PAGEMAP_SCAN returns, where the kernel has it), then /proc/kpageflags
and /proc/kpagecount for the present PFNs (contiguous runs, one pread each),
the node from the memory-block PFN map. Accessed bits: the page_idle bitmap or
DAMON. Moves: move_pages(2). Identity (pid, start time) is checked right
after opening a process's pagemap or maps: the open file is bound to that
process's mm, so a later pid reuse cannot redirect the read.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

import numpy as np

from kscand.errors import AccessDenied, ProcessGone, TransientError, Unsupported
from kscand.live.clock import LiveClock
from kscand.live.damon import DamonSource
from kscand.live.features import Features, probe
from kscand.live.malloc import keep_freed_arrays
from kscand.live.move import PageMover
from kscand.live.nodes import SysfsNodes
from kscand.live.page_idle import PageIdleSource
from kscand.live.pagemap_scan import PagemapReader
from kscand.live.processes import (
    ProcessSelection,
    ProcTable,
    cgroup_v2_path,
    errno_name,
    proc_error,
)
from kscand.live.procfs import (
    KPF_KSM,
    KPF_NOPAGE,
    MapsEntry,
    decode_pages,
    kpagecount_needed,
    pagemap_pfn,
    pagemap_present,
    parse_maps,
    parse_smaps_vmflags,
    vaddr_range,
    vma_from_entry,
)
from kscand.live.u64file import U64File, read_u64_at
from kscand.machine import (
    NID_NONE,
    PAGE_SHIFT,
    BoolArray,
    Clock,
    I32Array,
    PageBatch,
    ProcessId,
    ProcessInfo,
    Topology,
    U64Array,
    Vma,
    VmFlag,
)

# processes() is called every pass (20 ms); /proc is walked at most once a second.
PROCESS_LIST_TTL_NS = 1_000_000_000
PFN_MAP_REFRESH_NS = 10_000_000_000  # re-read memory blocks at most this often (hotplug)
# PFNs read through between two wanted ones: a pread costs ~1.5 us, an entry ~0.1 us.
KPAGE_MAX_GAP = 8
PAGEMAP_MAX_GAP = 63  # likewise for scattered vaddrs in read_pages

KPF_KSM_MASK = np.uint64(1 << KPF_KSM)

VmaKey = tuple[int, str, int, int]  # (start, perms, offset, inode): a mapping's smaps identity


class AccessSource(Protocol):
    """Where Accessed bits come from: page_idle, DAMON, or none."""

    name: str

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray: ...

    def forget(self, proc: ProcessId) -> None: ...

    def begin_step(self) -> None:
        """A new scan step begins (DAMON: the step's wait budget is reset)."""
        ...

    def counters(self) -> dict[str, int]:
        """The source's own counters (snapshots, pages it could not judge, ...)."""
        ...

    def close(self) -> None: ...


class NoAccessSource:
    """No way to read Accessed bits on this kernel: every call says why."""

    name = "none"

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        raise Unsupported(self.reason)

    def forget(self, proc: ProcessId) -> None:
        """Nothing to forget."""

    def begin_step(self) -> None:
        """Nothing to reset."""

    def counters(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        """Nothing to release."""


def _vma_key(entry: MapsEntry) -> VmaKey:
    return (entry.start, entry.perms, entry.offset, entry.inode)


class LinuxMachine:
    """The live Machine: every read of /proc and /sys and every syscall of kscand."""

    def __init__(
        self,
        procfs: str = "/proc",
        sysfs: str = "/sys",
        *,
        selection: ProcessSelection | None = None,
        access_source: str = "auto",
        top_tier_nodes: Sequence[int] | None = None,
        slow_nodes: Sequence[int] | None = None,
        clock: Clock | None = None,
        self_pid: int | None = None,
    ) -> None:
        self.procfs = procfs
        self.sysfs = sysfs
        self.clock: Clock = clock if clock is not None else LiveClock()
        self.selection = selection or ProcessSelection()
        self.self_pid = os.getpid() if self_pid is None else self_pid
        self.nodes = SysfsNodes(sysfs, procfs, top_tier_nodes=top_tier_nodes, slow_nodes=slow_nodes)
        self.procs = ProcTable(procfs)
        self.mover = PageMover()  # tests may swap it (fault injection)
        self.features: Features = probe(
            procfs, sysfs, top_tier_nodes=top_tier_nodes, slow_nodes=slow_nodes
        )
        self.access: AccessSource
        self.access_source_name, self.access_source_reason = self._open_access(access_source)
        self._kpageflags: U64File | None = None
        self._kpagecount: U64File | None = None
        self.pagemap = PagemapReader()  # PAGEMAP_SCAN or plain; its reason and counts
        # Why the scan's freed arrays may still go back to the kernel ("" when they do not).
        self.malloc_reason = keep_freed_arrays()
        self._vmflags: dict[ProcessId, dict[VmaKey, VmFlag]] = {}
        self._proc_list: list[ProcessId] = []
        self._proc_list_ns: int | None = None
        self._known_gone: set[ProcessId] = set()  # listed, but found gone since the walk
        self._pfn_map_ns = time.monotonic_ns()
        # Reads that failed with an errno that is neither an exit nor a refusal, by
        # file and errno: the process was skipped and is retried after the back-off.
        self.read_errors: Counter[str] = Counter()

    # --- lifetime -----------------------------------------------------------------------------

    def _open_access(self, requested: str) -> tuple[str, str]:
        name, reason = self.features.choose_access_source(requested)
        if name == "page_idle":
            self.access = PageIdleSource(self.sysfs)
        elif name == "damon":
            try:
                self.access = DamonSource(self.sysfs)
            except Unsupported as err:
                if requested == "damon":
                    raise
                name, reason = "none", f"{reason}, but DAMON cannot be used: {err}"
                self.access = NoAccessSource(reason)
        else:
            self.access = NoAccessSource(reason)
        return name, reason

    def access_counters(self) -> dict[str, int]:
        """The access source's counters and the live read errors, for the daemon's status."""
        counters = dict(self.access.counters())
        counters.update({f"read_error_{k}": n for k, n in sorted(self.read_errors.items())})
        return counters

    def _proc_error(self, err: OSError, proc: ProcessId, name: str) -> Exception:
        """proc_error(), with a TransientError counted by its reason."""
        error = proc_error(err, proc.pid, name)
        if isinstance(error, TransientError):
            self.read_errors[error.reason] += 1
        return error

    def _transient(self, err: OSError, what: str, message: str) -> TransientError:
        reason = f"{what}_{errno_name(err).lower()}"
        self.read_errors[reason] += 1
        return TransientError(f"{message}: {err.strerror}", reason)

    def close(self) -> None:
        """Release the access source (kdamonds) and the open files."""
        self.access.close()
        self._close_kpage_files()

    def __enter__(self) -> LinuxMachine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- topology and processes ---------------------------------------------------------------

    def topology(self) -> Topology:
        return self.nodes.topology()

    def processes(self) -> list[ProcessId]:
        """Selected user processes, re-read from /proc at most once a second.

        The engine calls this first in every step: the access source starts its step.
        """
        self.access.begin_step()
        now = time.monotonic_ns()
        if self._proc_list_ns is not None and now - self._proc_list_ns < PROCESS_LIST_TTL_NS:
            return [p for p in self._proc_list if p not in self._known_gone]
        procs = self.procs.select(self.selection, self.self_pid)
        for gone in set(self._proc_list) - set(procs):
            self.forget(gone)
        self._proc_list, self._proc_list_ns = procs, now
        self._known_gone = set()
        return list(procs)

    def _note_gone(self, proc: ProcessId) -> None:
        """proc was found gone: the cached list stops naming it (the engine would take
        it for a new process otherwise, until the next walk of /proc)."""
        if proc in self._proc_list:
            self._known_gone.add(proc)

    def forget(self, proc: ProcessId) -> None:
        """Drop per-process state (smaps cache, kdamond) of a process that exited."""
        self._vmflags.pop(proc, None)
        self.access.forget(proc)

    def process_id(self, pid: int) -> ProcessId:
        """The identity of a live pid; ProcessGone if there is none."""
        return self.procs.identity(pid)

    def is_alive(self, proc: ProcessId) -> bool:
        return self.procs.is_alive(proc)

    def describe(self, proc: ProcessId) -> ProcessInfo:
        """comm and cgroup v2 path of proc (identity-checked; ProcessGone if it went away)."""
        stat = self.procs.stat(proc.pid)  # comm parsed at the last ')', start time checked
        if stat.start_time != proc.start_time:
            raise ProcessGone(f"pid {proc.pid} now names another process")
        cgroup = cgroup_v2_path(self._read_text_checked(proc, "cgroup")) or ""
        return ProcessInfo(comm=stat.comm, cgroup=cgroup)

    # --- per-process files, opened then identity-checked --------------------------------------

    def _open_checked(self, proc: ProcessId, name: str, flags: int = os.O_RDONLY) -> int:
        """Open /proc/PID/name, then verify proc still names that process."""
        try:
            fd = os.open(self.procs.path(proc.pid, name), flags | os.O_CLOEXEC)
        except OSError as err:
            error = self._proc_error(err, proc, name)
            if isinstance(error, ProcessGone):
                self._note_gone(proc)
            raise error from err
        if not self.procs.is_alive(proc):
            os.close(fd)
            self._note_gone(proc)
            raise ProcessGone(f"process {proc} exited or its pid was reused")
        return fd

    def _read_text_checked(self, proc: ProcessId, name: str) -> str:
        fd = self._open_checked(proc, name)
        chunks = []
        try:
            while True:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as err:
            raise self._proc_error(err, proc, name) from err
        finally:
            os.close(fd)
        return b"".join(chunks).decode("utf-8", errors="replace")

    # --- VMAs ---------------------------------------------------------------------------------

    def vmas(self, proc: ProcessId) -> list[Vma]:
        """VMAs from /proc/PID/maps, flags from smaps' VmFlags (re-read when mappings change)."""
        entries = parse_maps(self._read_text_checked(proc, "maps"))
        cache = self._vmflags.get(proc)
        if cache is None or any(_vma_key(e) not in cache for e in entries):
            cache = self._read_vmflags(proc)
            self._vmflags[proc] = cache
        vmas = [vma_from_entry(e, cache.get(_vma_key(e))) for e in entries]
        return sorted(vmas, key=lambda v: v.start)

    def _read_vmflags(self, proc: ProcessId) -> dict[VmaKey, VmFlag]:
        by_key = parse_smaps_vmflags(self._read_text_checked(proc, "smaps"))
        return {(k[0], k[2], k[3], k[4]): flags for k, flags in by_key.items()}

    # --- pages --------------------------------------------------------------------------------

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        """Pages of [start, end): pagemap (PAGEMAP_SCAN's runs, else one pread), then
        kpageflags/kpagecount runs.

        The entries are read into a buffer kept between calls (one scanning thread).
        """
        vaddr = vaddr_range(start, end)
        fd = self._open_checked(proc, "pagemap")
        try:
            entries, nr_read = self.pagemap.read(fd, start >> PAGE_SHIFT, int(vaddr.size))
        except OSError as err:
            raise self._proc_error(err, proc, "pagemap") from err
        finally:
            os.close(fd)
        if nr_read < vaddr.size and not self.is_alive(proc):
            self._note_gone(proc)
            raise ProcessGone(f"process {proc} exited during the pagemap read")
        return self._batch(proc, vaddr, entries)

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        """Pages at scattered addresses: pagemap read in runs of nearby pages."""
        vaddr = np.ascontiguousarray(vaddrs, dtype=np.uint64)
        fd = self._open_checked(proc, "pagemap")
        try:
            [(entries, valid)] = read_u64_at([fd], vaddr >> np.uint64(PAGE_SHIFT), PAGEMAP_MAX_GAP)
        except OSError as err:
            raise self._proc_error(err, proc, "pagemap") from err
        finally:
            os.close(fd)
        if not valid.all() and not self.is_alive(proc):
            self._note_gone(proc)
            raise ProcessGone(f"process {proc} exited during the pagemap read")
        return self._batch(proc, vaddr, np.where(valid, entries, np.uint64(0)))

    def _kpage_files(self) -> tuple[U64File, U64File]:
        if self._kpageflags is None or self._kpagecount is None:
            try:
                self._kpageflags = U64File(os.path.join(self.procfs, "kpageflags"))
                self._kpagecount = U64File(os.path.join(self.procfs, "kpagecount"))
            except PermissionError as err:
                raise AccessDenied(f"{err.filename}: {err.strerror} (run kscand as root)") from err
            except FileNotFoundError as err:
                raise Unsupported(
                    f"this kernel has no {err.filename} (CONFIG_PROC_PAGE_MONITOR)"
                ) from err
        return self._kpageflags, self._kpagecount

    def _batch(self, proc: ProcessId, vaddr: U64Array, entries: U64Array) -> PageBatch:
        """Decode pagemap entries plus kpageflags/kpagecount/nid of the present PFNs (an
        all-present chunk, the common case, without gathering and spreading back)."""
        pfn = pagemap_pfn(entries)
        kcount = np.zeros(entries.shape, dtype=np.uint64)
        idx = np.flatnonzero(pagemap_present(entries))
        if idx.size == 0:
            nid = np.full(entries.shape, NID_NONE, dtype=np.int32)
            return PageBatch(vaddr, pfn, nid, decode_pages(entries, kcount, kcount, nid))
        every = idx.size == entries.size
        pfns = pfn if every else pfn[idx]
        flags_file, count_file = self._kpage_files()
        kf, kf_ok = self._read_kpages(flags_file, pfns, "kpageflags")
        if not kf_ok.all():  # a PFN kpageflags cannot describe (past max_pfn): KPF_NOPAGE
            kf = np.where(kf_ok, kf, np.uint64(1 << KPF_NOPAGE))
        if not self.features.kpf_ksm_reliable:  # every anon page says KSM: ignore it
            kf &= ~KPF_KSM_MASK
        count_idx = np.flatnonzero(kpagecount_needed(entries))
        if count_idx.size:
            kc, _ = self._read_kpages(count_file, pfn[count_idx], "kpagecount")
            kcount[count_idx] = kc
        node = self._nid_of(proc, vaddr if every else vaddr[idx], pfns)
        kflags, nid = kf, node
        if not every:
            kflags = np.zeros(entries.shape, dtype=np.uint64)
            kflags[idx] = kf
            nid = np.full(entries.shape, NID_NONE, dtype=np.int32)
            nid[idx] = node
        flags = decode_pages(entries, kflags, kcount, nid)
        return PageBatch(vaddr, pfn, nid, flags)

    def _read_kpages(self, f: U64File, pfns: U64Array, what: str) -> tuple[U64Array, BoolArray]:
        """One /proc/kpage* read; an OSError is a TransientError (counted; the files are
        reopened on the next read) rather than the end of the daemon."""
        try:
            [(values, ok)] = read_u64_at([f.fd], pfns, KPAGE_MAX_GAP)
        except OSError as err:
            self._close_kpage_files()
            raise self._transient(err, what, f"{self.procfs}/{what}") from err
        return values, ok

    def _close_kpage_files(self) -> None:
        for f in (self._kpageflags, self._kpagecount):
            if f is not None:
                f.close()
        self._kpageflags = self._kpagecount = None

    def _nid_of(self, proc: ProcessId, vaddr: U64Array, pfn: U64Array) -> I32Array:
        """Node of present pages: the memory-block map, or move_pages(2) query without one."""
        pfn_map = self.nodes.layout.pfn_map
        if pfn_map is None:
            status = self.query_nodes(proc, vaddr)
            return np.where(status >= 0, status, np.int32(NID_NONE)).astype(np.int32)
        nid = pfn_map.lookup(pfn)
        now = time.monotonic_ns()
        if (nid < 0).any() and now - self._pfn_map_ns > PFN_MAP_REFRESH_NS:
            self._pfn_map_ns = now
            self.nodes.refresh_pfn_map()
            refreshed = self.nodes.layout.pfn_map
            if refreshed is not None:
                nid = refreshed.lookup(pfn)
        return nid

    # --- Accessed bits and moves --------------------------------------------------------------

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        """The access source's answer; an OSError of its files is a counted TransientError."""
        try:
            return self.access.test_and_clear_young(proc, pages)
        except OSError as err:
            raise self._transient(err, self.access.name, f"{self.access.name} read") from err

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        """move_pages(2) with MPOL_MF_MOVE, identity checked before and after the call."""
        try:
            self.procs.check(proc)
            try:
                status = self.mover.move(
                    proc.pid, np.ascontiguousarray(vaddrs, dtype=np.uint64), nid
                )
            except Unsupported as err:
                raise self._gone_or(proc, err) from err
            self.procs.check(proc)
        except ProcessGone:
            if not self.procs.is_alive(proc):  # an injected or transient ESRCH is not an exit
                self._note_gone(proc)
            raise
        return status

    def query_nodes(self, proc: ProcessId, vaddrs: U64Array) -> I32Array:
        """move_pages(2) query mode: the node of each page or a negative errno."""
        self.procs.check(proc)
        try:
            return self.mover.query(proc.pid, np.ascontiguousarray(vaddrs, dtype=np.uint64))
        except Unsupported as err:
            raise self._gone_or(proc, err) from err

    def _gone_or(self, proc: ProcessId, err: Unsupported) -> Exception:
        """ProcessGone when proc died during the call, else the call's own error.

        A process that has exited but is not reaped yet still has its pid, but no
        mm: move_pages(2) fails with EINVAL (find_mm_struct() in mm/migrate.c),
        not ESRCH. That is an exit, not an unsupported kernel.
        """
        if not self.procs.is_alive(proc):
            return ProcessGone(f"process {proc} exited during move_pages(2)")
        return err
