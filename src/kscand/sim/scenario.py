"""Scenario files: a TOML description of a simulated machine, its processes and a run.

Every field is validated; a bad file raises ConfigError with one line that
names the field (e.g. ``processes[0].vmas[1].size: cannot parse size 'x'``).
The format is documented in the README ("Scenario format").
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kscand.core.tunables import Tunables, tunables_from_mapping
from kscand.errors import MOVE_CALL_FAULTS, MOVE_PAGE_FAULTS, ConfigError
from kscand.machine import PAGE_SIZE, PMD_SIZE, PageFlag, VmFlag
from kscand.sim.checks import (
    SIM_BYTES_PER_PAGE,
    SIM_MEMORY_LIMIT_BYTES,
    check_fits,
    check_memory,
    check_target_node,
    gib,
)
from kscand.sim.workloads import WORKLOAD_KINDS, load_trace, trace_span_pages
from kscand.units import parse_size_bytes
from kscand.validate import read_bool, read_int, read_list, read_num, read_str, read_table


@dataclass(frozen=True, slots=True)
class VmaKind:
    """A kind of VMA the filters care about: its VMA flags and its pages' flags."""

    vm_flags: VmFlag
    page_flags: PageFlag
    thp: bool = False


RW = VmFlag.READ | VmFlag.WRITE
ANON_PAGE = PageFlag.LRU | PageFlag.ANON
VMA_KINDS: dict[str, VmaKind] = {
    "anon": VmaKind(RW, ANON_PAGE),
    "anon-thp": VmaKind(RW | VmFlag.HUGEPAGE, ANON_PAGE, thp=True),
    "file-rw": VmaKind(RW | VmFlag.FILE, PageFlag.LRU),  # private writable file mapping
    "file-ro": VmaKind(VmFlag.READ | VmFlag.FILE, PageFlag.LRU),
    "shared-anon": VmaKind(RW | VmFlag.SHARED, ANON_PAGE | PageFlag.SHARED),
    "hugetlb": VmaKind(RW | VmFlag.HUGETLB, PageFlag.HUGETLB),
    "prot-none": VmaKind(VmFlag(0), ANON_PAGE),
    "mlocked": VmaKind(RW | VmFlag.LOCKED, ANON_PAGE | PageFlag.UNEVICTABLE),
    "io": VmaKind(RW | VmFlag.IO | VmFlag.PFNMAP, PageFlag(0)),
}

PLACEMENTS = ("slow", "fast", "first-touch")

SCENARIO_MAX_BYTES = 1 << 20  # a scenario file is a page of TOML; 1 MiB is far beyond any
RATE_MAX_PER_S = 1e15  # accesses (or pages swept) per second of one VMA; beyond any machine


@dataclass(frozen=True, slots=True)
class NodeSpec:
    nid: int
    capacity_bytes: int
    cpus: bool
    tier: int
    latency_ns: float

    @property
    def capacity_pages(self) -> int:
        return self.capacity_bytes // PAGE_SIZE


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    kind: str = "uniform"
    rate_per_s: float = 1e6  # accesses per second over the whole VMA
    hot_fraction: float = 0.1
    hot_share: float = 0.9
    skew: float = 1.0  # zipf exponent
    period_s: float = 30.0  # moving-hotset: seconds between moves
    shift_fraction: float = 0.05  # moving-hotset: fraction of pages the hot set moves by
    pages_per_s: float = 10_000.0  # sequential: sweep speed
    vertices_per_page: int = 16  # power-law: vertices whose data share a page
    sorted_ids: bool = False  # power-law: vertex ids in decreasing degree order
    path: str = ""  # trace: the trace file (relative: to the scenario file)
    trace_pid: int = -1  # trace: the trace pid this VMA replays (-1: every record)
    window_s: float = 1.0  # trace: the rate window
    loop: bool = True  # trace: replay again from the start after the last window


@dataclass(frozen=True, slots=True)
class VmaSpec:
    kind: str
    size_bytes: int
    workload: WorkloadSpec

    @property
    def nr_pages(self) -> int:
        return self.size_bytes // PAGE_SIZE


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    name: str
    vmas: tuple[VmaSpec, ...]
    placement: str = "slow"
    # placement "node:A,B": fill A, then B, then the rest; "interleave:A,B": page by page
    placement_nids: tuple[int, ...] = ()
    start_s: float = 0.0
    exit_s: float | None = None
    count: int = 1
    scale: int | None = None  # kscand's per-process scale (prctl analog); None: default_scale
    stagger_s: float = 0.0  # copy i starts at start_s + i * stagger_s
    lifetime_s: float | None = None  # each copy exits this long after it starts

    @property
    def nr_pages(self) -> int:
        return sum(v.nr_pages for v in self.vmas)


@dataclass(frozen=True, slots=True)
class SimParams:
    """Costs and failure rates of the simulated machine."""

    scan_cost_ns_per_pte: float = 20.0  # virtual time per PTE test-and-clear
    move_cost_ns_per_page: float = 2_000.0  # virtual time per base page migrated
    move_cost_ns_per_call: float = 5_000.0  # syscall + TLB flush per move_pages call
    ebusy_rate: float = 0.0  # probability that a page's move fails with -EBUSY
    pid_max: int = 4_194_304
    # Injected move_pages(2) failures, errno name -> probability: per page for
    # EBUSY ENOENT EFAULT ENOMEM EACCES EIO, per call for ESRCH and EPERM.
    move_faults: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    description: str
    seed: int
    duration_s: float
    sample_interval_s: float
    nodes: tuple[NodeSpec, ...]
    processes: tuple[ProcessSpec, ...]
    tunables: Tunables = field(default_factory=Tunables)
    sim: SimParams = field(default_factory=SimParams)


def _node(raw: Any, where: str) -> NodeSpec:
    raw = read_table(raw, where, {"nid", "capacity", "cpus", "tier", "latency_ns"})
    if "capacity" not in raw:
        raise ConfigError(f"{where}.capacity: missing")
    capacity = parse_size_bytes(raw["capacity"], f"{where}.capacity")
    if capacity < PMD_SIZE:
        raise ConfigError(f"{where}.capacity: at least 2 MiB, got {capacity} bytes")
    return NodeSpec(
        nid=read_int(raw, "nid", where, lo=0, hi=1023),
        capacity_bytes=capacity,
        cpus=read_bool(raw, "cpus", where, False),
        tier=read_int(raw, "tier", where, lo=0, hi=1 << 16),
        latency_ns=read_num(raw, "latency_ns", where, 100.0, lo=0.0),
    )


def _workload(raw: Any, where: str, base: WorkloadSpec) -> WorkloadSpec:
    raw = read_table(raw, where, set(WorkloadSpec.__slots__))
    d = base
    return WorkloadSpec(
        kind=read_str(raw, "kind", where, d.kind, WORKLOAD_KINDS),
        rate_per_s=read_num(raw, "rate_per_s", where, d.rate_per_s, lo=0.0, hi=RATE_MAX_PER_S),
        hot_fraction=read_num(raw, "hot_fraction", where, d.hot_fraction, lo=0.0, hi=1.0),
        hot_share=read_num(raw, "hot_share", where, d.hot_share, lo=0.0, hi=1.0),
        skew=read_num(raw, "skew", where, d.skew, lo=0.0, hi=10.0),
        period_s=read_num(raw, "period_s", where, d.period_s, lo=1e-3, hi=1e9),
        shift_fraction=read_num(raw, "shift_fraction", where, d.shift_fraction, lo=0.0, hi=1.0),
        pages_per_s=read_num(raw, "pages_per_s", where, d.pages_per_s, lo=0.0, hi=RATE_MAX_PER_S),
        vertices_per_page=read_int(raw, "vertices_per_page", where, d.vertices_per_page, lo=1,
                               hi=4096),
        sorted_ids=read_bool(raw, "sorted_ids", where, d.sorted_ids),
        path=read_str(raw, "path", where, d.path),
        trace_pid=read_int(raw, "trace_pid", where, d.trace_pid, lo=-1),
        window_s=read_num(raw, "window_s", where, d.window_s, lo=1e-3, hi=1e9),
        loop=read_bool(raw, "loop", where, d.loop),
    )


def _vma(raw: Any, where: str, default_workload: WorkloadSpec) -> VmaSpec:
    raw = read_table(raw, where, {"kind", "size", "workload"})
    kind = read_str(raw, "kind", where, "anon", tuple(VMA_KINDS))
    if "size" not in raw:
        raise ConfigError(f"{where}.size: missing")
    size = parse_size_bytes(raw["size"], f"{where}.size")
    align = PMD_SIZE if VMA_KINDS[kind].thp else PAGE_SIZE
    if size <= 0 or size % align:
        raise ConfigError(f"{where}.size: must be a positive multiple of {align} bytes, got {size}")
    limit_pages = SIM_MEMORY_LIMIT_BYTES // SIM_BYTES_PER_PAGE
    if size // PAGE_SIZE > limit_pages:  # before a trace is read for it
        raise ConfigError(
            f"{where}.size: {gib(size)} simulated needs about "
            f"{gib(size // PAGE_SIZE * SIM_BYTES_PER_PAGE)} of memory, over the "
            f"{gib(SIM_MEMORY_LIMIT_BYTES)} limit of one simulated run"
        )
    workload = default_workload
    if "workload" in raw:
        workload = _workload(raw["workload"], f"{where}.workload", default_workload)
    if workload.kind == "trace":
        _check_trace(workload, size // PAGE_SIZE, f"{where}.workload")
    return VmaSpec(kind, size, workload)


def _check_trace(workload: WorkloadSpec, nr_pages: int, where: str) -> None:
    """A trace workload names a readable trace whose pages fit in the VMA."""
    if not workload.path:
        raise ConfigError(f"{where}.path: missing (the trace file to replay)")
    try:
        span = trace_span_pages(load_trace(workload.path), workload.trace_pid, workload.path)
    except ConfigError as err:
        raise ConfigError(f"{where}.path: {err}") from err
    if span > nr_pages:
        raise ConfigError(
            f"{where}.path: the trace spans {span} pages ({span * PAGE_SIZE >> 20} MiB) but the "
            f"VMA has {nr_pages}"
        )


def _resolve_trace_paths(raw: Any, base: Path) -> None:
    """Make relative trace paths in a parsed scenario relative to its file (in place)."""
    procs = raw.get("processes") if isinstance(raw, dict) else None
    for proc in procs if isinstance(procs, list) else []:
        if not isinstance(proc, dict):
            continue
        vmas = proc.get("vmas")
        vmas = vmas if isinstance(vmas, list) else []
        for table in [proc.get("workload"), *(v.get("workload") for v in vmas
                                               if isinstance(v, dict))]:
            if not isinstance(table, dict):
                continue
            path = table.get("path")
            if isinstance(path, str) and path and not Path(path).is_absolute():
                table["path"] = str(base / path)


def _process(raw: Any, where: str, nids: set[int]) -> ProcessSpec:
    raw = read_table(
        raw, where,
        {"name", "vmas", "placement", "start_s", "exit_s", "count", "workload", "scale",
         "stagger_s", "lifetime_s"},
    )
    default_workload = WorkloadSpec()
    if "workload" in raw:
        default_workload = _workload(raw["workload"], f"{where}.workload", default_workload)
    vmas = tuple(
        _vma(v, f"{where}.vmas[{i}]", default_workload)
        for i, v in enumerate(read_list(raw, "vmas", f"{where}."))
    )
    placement, placement_nids = _placement(raw, where, nids)
    start_s = read_num(raw, "start_s", where, 0.0, lo=0.0)
    exit_s = raw.get("exit_s")
    if exit_s is not None:
        exit_s = read_num(raw, "exit_s", where, lo=start_s)
    return ProcessSpec(
        name=read_str(raw, "name", where, "proc"),
        vmas=vmas,
        placement=placement,
        placement_nids=placement_nids,
        scale=read_int(raw, "scale", where, 8, lo=0, hi=10) if "scale" in raw else None,
        stagger_s=read_num(raw, "stagger_s", where, 0.0, lo=0.0),
        lifetime_s=read_num(raw, "lifetime_s", where, lo=0.0) if "lifetime_s" in raw else None,
        start_s=start_s,
        exit_s=exit_s,
        count=read_int(raw, "count", where, 1, lo=1, hi=100_000),
    )


def _placement(raw: dict[str, Any], where: str, nids: set[int]) -> tuple[str, tuple[int, ...]]:
    text = read_str(raw, "placement", where, "slow")
    policy, sep, node_list = text.partition(":")
    if sep and policy in ("node", "interleave"):
        try:
            order = tuple(int(part) for part in node_list.split(","))
        except ValueError:
            raise ConfigError(f"{where}.placement: bad node list in {text!r}") from None
        for nid in order:
            if nid not in nids:
                raise ConfigError(f"{where}.placement: node {nid} is not in nodes")
        return policy, order
    if text not in PLACEMENTS:
        raise ConfigError(
            f"{where}.placement: {text!r} is not one of {', '.join(PLACEMENTS)}, "
            "node:N[,M...] or interleave:N,M[,...]"
        )
    return text, ()


def scenario_from_mapping(raw: dict[str, Any], name: str = "scenario") -> Scenario:
    """Validate a parsed TOML document into a Scenario."""
    raw = read_table(
        raw,
        "scenario",
        {"name", "description", "seed", "duration_s", "sample_interval_s", "nodes",
         "processes", "tunables", "sim"},
    )
    nodes = tuple(_node(n, f"nodes[{i}]") for i, n in enumerate(read_list(raw, "nodes", "")))
    nids = [n.nid for n in nodes]
    if len(set(nids)) != len(nids):
        raise ConfigError("nodes: duplicate nid")
    if not any(n.cpus for n in nodes):
        raise ConfigError("nodes: at least one node needs cpus = true")
    processes = tuple(
        _process(p, f"processes[{i}]", set(nids))
        for i, p in enumerate(read_list(raw, "processes", ""))
    )
    tunables = tunables_from_mapping(read_table(raw.get("tunables", {}), "tunables", set(
        Tunables.__dataclass_fields__)))
    check_target_node(tunables, nodes)
    scenario = Scenario(
        name=read_str(raw, "name", "scenario", name),
        description=read_str(raw, "description", "scenario", ""),
        seed=read_int(raw, "seed", "scenario", 1, lo=0),
        duration_s=read_num(raw, "duration_s", "scenario", 60.0, lo=0.001, hi=1e7),
        sample_interval_s=read_num(raw, "sample_interval_s", "scenario", 1.0, lo=0.001),
        nodes=nodes,
        processes=processes,
        tunables=tunables,
        sim=_sim(raw.get("sim", {})),
    )
    check_fits(scenario)
    check_memory(scenario)
    return scenario


def _sim(raw: Any) -> SimParams:
    raw = read_table(raw, "sim", set(SimParams.__slots__))
    d = SimParams()
    return SimParams(
        scan_cost_ns_per_pte=read_num(raw, "scan_cost_ns_per_pte", "sim", d.scan_cost_ns_per_pte,
                                  lo=0.0),
        move_cost_ns_per_page=read_num(raw, "move_cost_ns_per_page", "sim", d.move_cost_ns_per_page,
                                   lo=0.0),
        move_cost_ns_per_call=read_num(raw, "move_cost_ns_per_call", "sim", d.move_cost_ns_per_call,
                                   lo=0.0),
        ebusy_rate=read_num(raw, "ebusy_rate", "sim", d.ebusy_rate, lo=0.0, hi=1.0),
        pid_max=read_int(raw, "pid_max", "sim", d.pid_max, lo=301, hi=1 << 22),
        move_faults=_move_faults(raw.get("move_faults", {})),
    )




def _move_faults(raw: Any) -> tuple[tuple[str, float], ...]:
    raw = read_table(raw, "sim.move_faults", set(MOVE_PAGE_FAULTS + MOVE_CALL_FAULTS))
    return tuple(
        (name, read_num(raw, name, "sim.move_faults", lo=0.0, hi=1.0)) for name in sorted(raw)
    )


def read_scenario_text(path: Path) -> str:
    """The text of a scenario file: a regular file of at most SCENARIO_MAX_BYTES.

    Opened with O_NONBLOCK so a FIFO never waits for a writer, checked with
    fstat before any read (a device such as /dev/zero is never read).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror or err}") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: is not a regular file")
        if st.st_size > SCENARIO_MAX_BYTES:
            raise ConfigError(f"{path}: larger than {SCENARIO_MAX_BYTES} bytes")
        chunks: list[bytes] = []
        left = SCENARIO_MAX_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror or err}") from err
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > SCENARIO_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {SCENARIO_MAX_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not valid UTF-8 text") from err


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file."""
    path = Path(path)
    if "\0" in str(path):
        raise ConfigError(f"{path!r}: a path cannot hold a NUL byte")
    text = read_scenario_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    except RecursionError as err:  # nesting past the interpreter's limit
        raise ConfigError(f"{path}: not valid TOML: nested too deeply") from err
    _resolve_trace_paths(raw, path.parent)
    return scenario_from_mapping(raw, name=path.stem)
