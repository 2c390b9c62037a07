"""The daemon's TOML config file: tunables, process selection, topology overrides, daemon paths.

Every field is validated on load; a bad one raises ConfigError with a single
line that names it by its dotted path (``scan.pids[2]: ...``), so the CLI can
print it as is. See contrib/kscand.toml for a documented example.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kscand.core.throttle import SCALE_MAX
from kscand.core.tunables import Tunables, tunables_from_mapping
from kscand.errors import ConfigError
from kscand.paths import has_nul, untrusted_symlink
from kscand.validate import (
    Check,
    check_fields,
    expect_str,
    expect_table,
    int_in,
    list_of,
    one_of,
    show_key,
    unique,
    unknown_key,
)

ACCESS_SOURCES = ("auto", "page_idle", "damon")  # [scan] access_source, kscand scan
LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_STATE_DIR = Path("/run/kscand")
PID_MAX_LIMIT = 1 << 22  # the kernel's PID_MAX_LIMIT on 64-bit
MAX_NUMNODES = 1024  # CONFIG_NODES_SHIFT=10, the x86_64 maximum
TASK_COMM_LEN = 16  # /proc/PID/comm holds at most 15 characters
CONFIG_MAX_BYTES = 1 << 20
PROCESS_RULES_MAX = 1024  # [[process]] rules: each new process is matched against all of them
# Trace levels: which of the series' trace events daemon.trace writes.
TRACE_LEVELS = ("mm", "scan", "all")
METRICS_DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class ScanConfig:
    """Which processes to scan (empty selection = every user process) and how."""

    pids: tuple[int, ...] = ()
    cgroups: tuple[str, ...] = ()  # cgroup v2 paths, as in /proc/PID/cgroup ("/system.slice/x")
    comm_patterns: tuple[str, ...] = ()  # fnmatch patterns on /proc/PID/comm
    access_source: str = "auto"  # auto | page_idle | damon


@dataclass(frozen=True, slots=True)
class TopologyConfig:
    """Overrides for kernels without memory-tier information (None = from sysfs)."""

    top_tier_nodes: tuple[int, ...] | None = None
    slow_nodes: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ProcessRule:
    """One [[process]] rule: the scale of the processes it matches (the prctl analog).

    A process matches when every field given matches: pid equal, cgroup (v2)
    equal or below, comm an fnmatch pattern on /proc/PID/comm. The first
    matching rule wins.
    """

    scale: int
    pid: int | None = None
    cgroup: str | None = None
    comm: str | None = None

    @property
    def needs_describe(self) -> bool:
        """Whether matching needs the process's comm or cgroup (Machine.describe)."""
        return self.cgroup is not None or self.comm is not None


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    """Where the Prometheus text endpoint listens (an IP literal and a TCP port; 0 = any)."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """Where the daemon keeps its socket and state file, and how it logs."""

    state_dir: Path = DEFAULT_STATE_DIR
    log_level: str = "info"
    trace: str = ""  # "" = off, "stderr", or an absolute file path (trace events; issue 5)
    trace_level: str = "all"  # mm | scan | all (see TRACE_LEVELS)
    status_interval_ms: int = 2000  # how often state_dir/status.json is rewritten
    metrics: MetricsAddress | None = None  # the Prometheus endpoint, None = off


@dataclass(frozen=True, slots=True)
class Config:
    """The whole config file."""

    tunables: Tunables = field(default_factory=Tunables)
    scan: ScanConfig = field(default_factory=ScanConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)
    process_rules: tuple[ProcessRule, ...] = ()

    def with_state_dir(self, state_dir: Path) -> Config:
        """A copy with daemon.state_dir replaced (the --state-dir option)."""
        return dataclasses.replace(
            self, daemon=dataclasses.replace(self.daemon, state_dir=state_dir)
        )

    def with_metrics(self, metrics: MetricsAddress | None) -> Config:
        """A copy with daemon.metrics replaced (the --metrics option)."""
        return dataclasses.replace(self, daemon=dataclasses.replace(self.daemon, metrics=metrics))


# ---------------------------------------------------------------------------
# Field checkers (kscand.validate.Check): each takes the value and its dotted name,
# returns the typed value.


def _cgroup_path(value: Any, where: str) -> str:
    text = expect_str(value, where)
    path = PurePosixPath(text)
    if not text.startswith("/") or ".." in path.parts:
        raise ConfigError(
            f"{where}: a cgroup v2 path starts with '/' and has no '..', "
            f"as in /proc/PID/cgroup (e.g. \"/system.slice/redis.service\"), got {text!r}"
        )
    return str(path)


def _comm_pattern(value: Any, where: str) -> str:
    text = expect_str(value, where)
    if not text:
        raise ConfigError(f"{where}: empty command-name pattern")
    if not any(c in text for c in "*?[") and len(text) >= TASK_COMM_LEN:
        raise ConfigError(
            f"{where}: {text!r} can never match: a command name (/proc/PID/comm) has at "
            f"most {TASK_COMM_LEN - 1} characters"
        )
    return text


def _path_text(value: Any, where: str) -> str:
    text = expect_str(value, where)
    if has_nul(text):
        raise ConfigError(f"{where}: a path cannot hold a NUL byte")
    return text


def _state_dir(value: Any, where: str) -> Path:
    text = _path_text(value, where)
    if not text.startswith("/"):
        raise ConfigError(f"{where}: expected an absolute path, got {text!r}")
    return Path(text)


def _trace(value: Any, where: str) -> str:
    text = _path_text(value, where)
    if text not in ("", "stderr") and not text.startswith("/"):
        raise ConfigError(f"{where}: expected \"\", \"stderr\" or an absolute path, got {text!r}")
    return text


def parse_metrics_address(text: str, where: str) -> MetricsAddress:
    """"PORT", "HOST:PORT" or "[IPv6]:PORT" with HOST an IP literal; a bare port listens on
    127.0.0.1 only (the endpoint is unauthenticated: exposing it is a deliberate choice)."""
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = METRICS_DEFAULT_HOST, text
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"{where}: write an IPv6 address in brackets, as in [::1]:9477")
    try:
        port = int(port_text, 10)
        address = ipaddress.ip_address(host)
    except ValueError as err:
        raise ConfigError(
            f"{where}: expected PORT, IP:PORT or [IPv6]:PORT (e.g. 127.0.0.1:9477), got {text!r}"
        ) from err
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is out of range [0, 65535]")
    return MetricsAddress(str(address), port)


def _metrics(value: Any, where: str) -> MetricsAddress | None:
    text = expect_str(value, where)
    return parse_metrics_address(text, where) if text else None


_nid = int_in(0, MAX_NUMNODES - 1)

_SCAN_FIELDS: dict[str, Check[Any]] = {
    "pids": unique(list_of(int_in(1, PID_MAX_LIMIT))),
    "cgroups": unique(list_of(_cgroup_path)),
    "comm_patterns": unique(list_of(_comm_pattern)),
    "access_source": one_of(ACCESS_SOURCES),
}
_TOPOLOGY_FIELDS: dict[str, Check[Any]] = {
    "top_tier_nodes": unique(list_of(_nid)),
    "slow_nodes": unique(list_of(_nid)),
}
_DAEMON_FIELDS: dict[str, Check[Any]] = {
    "state_dir": _state_dir,
    "log_level": one_of(LOG_LEVELS),
    "trace": _trace,
    "trace_level": one_of(TRACE_LEVELS),
    "status_interval_ms": int_in(100, 3_600_000),
    "metrics": _metrics,
}
_PROCESS_FIELDS: dict[str, Check[Any]] = {
    "pid": int_in(1, PID_MAX_LIMIT),
    "cgroup": _cgroup_path,
    "comm": _comm_pattern,
    "scale": int_in(0, SCALE_MAX),
}


def _table(value: Any, where: str) -> dict[str, Any]:
    return expect_table(value, where, f"a table [{where}]")


def _section(
    mapping: dict[str, Any], name: str, fields: dict[str, Check[Any]]
) -> dict[str, Any]:
    """The checked values of table [name]; unknown keys are errors."""
    return check_fields(_table(mapping.get(name, {}), name), name, fields)


def _topology(mapping: dict[str, Any]) -> TopologyConfig:
    topology = TopologyConfig(**_section(mapping, "topology", _TOPOLOGY_FIELDS))
    both = set(topology.top_tier_nodes or ()) & set(topology.slow_nodes or ())
    if both:
        nids = ", ".join(map(str, sorted(both)))
        raise ConfigError(f"topology.slow_nodes: node {nids} is also in topology.top_tier_nodes")
    if topology.top_tier_nodes == ():
        raise ConfigError("topology.top_tier_nodes: must name at least one node when given")
    return topology


def _printable_keys(table: dict[str, Any], where: str) -> dict[str, Any]:
    """table, refusing keys with control characters (none is a known name)."""
    for key in table:
        if not key.isprintable():
            raise ConfigError(f"{where}.{show_key(key)}: unknown field")
    return table


def _process_rules(mapping: dict[str, Any]) -> tuple[ProcessRule, ...]:
    """The [[process]] array of tables, checked; every error names process[i].field."""
    raw = mapping.get("process", [])
    if not isinstance(raw, list):
        raise ConfigError(f"process: expected an array of tables [[process]], got {raw!r}")
    if len(raw) > PROCESS_RULES_MAX:
        raise ConfigError(f"process: {len(raw)} rules, at most {PROCESS_RULES_MAX}")
    rules = []
    for i, table in enumerate(raw):
        where = f"process[{i}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table [[process]], got {table!r}")
        values = check_fields(table, where, _PROCESS_FIELDS)
        if "scale" not in values:
            raise ConfigError(f"{where}.scale: missing (0..{SCALE_MAX}; 0 = never scan)")
        if not values.keys() & {"pid", "cgroup", "comm"}:
            raise ConfigError(f"{where}: give at least one of pid, cgroup, comm to match on")
        rules.append(ProcessRule(**values))
    return tuple(rules)


SECTIONS = ("daemon", "process", "scan", "topology", "tunables")


def config_from_mapping(mapping: dict[str, Any]) -> Config:
    """A Config from parsed TOML; every error names its dotted field."""
    for key in mapping:
        if key not in SECTIONS:
            raise unknown_key("", key, SECTIONS, "section")
    tunables = _printable_keys(_table(mapping.get("tunables", {}), "tunables"), "tunables")
    return Config(
        tunables=tunables_from_mapping(tunables),
        scan=ScanConfig(**_section(mapping, "scan", _SCAN_FIELDS)),
        topology=_topology(mapping),
        daemon=DaemonConfig(**_section(mapping, "daemon", _DAEMON_FIELDS)),
        process_rules=_process_rules(mapping),
    )


def config_from_text(text: str) -> Config:
    """A Config from TOML text; a syntax error is one ConfigError line with its position."""
    try:
        mapping = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}") from err
    return config_from_mapping(mapping)


def check_config_file(st: os.stat_result, euid: int) -> str | None:
    """Why a root daemon must not trust a config file with this stat, or None.

    Only root or the daemon's own user may own it, and nobody else may write
    it: anyone who can change it decides which memory kscand moves.
    """
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid not in (0, euid):
        return f"is owned by uid {st.st_uid}, not by root or uid {euid}"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by group or others (chmod go-w it)"
    return None


def _read_capped(fd: int, limit: int) -> bytes:
    """At most limit bytes of fd (a regular file)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 16))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def load_config(path: Path) -> Config:
    """Read and validate a config file; errors are one line starting with the path.

    Refuses a path through a symlink another user owns (kscand.paths).
    """
    if has_nul(path):
        raise ConfigError(f"{path!s:.60}: a path cannot hold a NUL byte")
    problem = untrusted_symlink(path, os.geteuid())
    if problem is not None:
        raise ConfigError(f"{path}: {problem}")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        raise ConfigError(f"{path}: cannot open: {err.strerror}") from err
    try:
        # fstat before fdopen: fdopen of a directory raises IsADirectoryError, and a
        # FIFO or device must not be read at all (O_NONBLOCK: opening a FIFO never waits).
        reason = check_config_file(os.fstat(fd), os.geteuid())
        if reason is not None:
            raise ConfigError(f"{path}: {reason}")
        os.set_blocking(fd, True)
        data = _read_capped(fd, CONFIG_MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from err
    finally:
        os.close(fd)
    if len(data) > CONFIG_MAX_BYTES:
        raise ConfigError(f"{path}: larger than {CONFIG_MAX_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from err
    try:
        return config_from_text(text)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
