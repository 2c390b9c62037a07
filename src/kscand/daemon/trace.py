"""Trace events as JSON lines: the series' tracepoints (mm_enter, mm_exit, scan_mm_start,
scan_mm_end, scan_mm_migrate) written by the engine's trace hook.

Each line is one object: {"ts_ns": <machine clock>, "event": <name>, ...fields}.
daemon.trace_level chooses the events: "mm" (mm_enter, mm_exit: processes
coming and going), "scan" (+ scan_mm_start, scan_mm_end: one pair per
process visit) or "all" (+ scan_mm_migrate: one per process per migration).
A write error never reaches the engine: it is counted and said once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from kscand.errors import ConfigError
from kscand.paths import untrusted_symlink

log = logging.getLogger("kscand.daemon.trace")

MM_EVENTS = frozenset({"mm_enter", "mm_exit"})
SCAN_EVENTS = MM_EVENTS | {"scan_mm_start", "scan_mm_end"}
ALL_EVENTS = SCAN_EVENTS | {"scan_mm_migrate"}
EVENTS_BY_LEVEL: dict[str, frozenset[str]] = {
    "mm": MM_EVENTS,
    "scan": SCAN_EVENTS,
    "all": ALL_EVENTS,
}


def events_of_level(level: str) -> frozenset[str]:
    """The events a trace level writes; ConfigError naming daemon.trace_level otherwise."""
    try:
        return EVENTS_BY_LEVEL[level]
    except KeyError:
        known = ", ".join(EVENTS_BY_LEVEL)
        raise ConfigError(f"daemon.trace_level: expected one of {known}, got {level!r}") from None


class JsonLinesTrace:
    """A trace sink (kscand.core.engine.Tracer) writing one JSON object per event."""

    def __init__(
        self,
        stream: IO[str] | None,
        now_ns: Callable[[], int],
        *,
        owns_stream: bool = False,
        level: str = "all",
    ) -> None:
        self.stream = stream
        self.now_ns = now_ns
        self.owns_stream = owns_stream
        self.events = events_of_level(level)
        self.nr_events = 0
        self.nr_errors = 0

    def set_level(self, level: str) -> None:
        """Write the events of this level from now on (a reload)."""
        self.events = events_of_level(level)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if self.stream is None or event not in self.events:
            return
        line = json.dumps({"ts_ns": self.now_ns(), "event": event, **fields}, default=str)
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (OSError, ValueError) as err:
            self.nr_errors += 1
            if self.nr_errors == 1:
                log.warning("cannot write trace events: %s", err)
            return
        self.nr_events += 1

    def close(self) -> None:
        if self.stream is not None and self.owns_stream:
            self.stream.close()
        self.stream = None


def open_trace(target: str, now_ns: Callable[[], int], level: str = "all") -> JsonLinesTrace:
    """The sink for daemon.trace: "" (off), "stderr", or a file appended to (mode 0600,
    never through a symlink); level is daemon.trace_level."""
    if not target:
        return JsonLinesTrace(None, now_ns, level=level)
    if target == "stderr":
        return JsonLinesTrace(sys.stderr, now_ns, level=level)
    problem = untrusted_symlink(Path(target), os.geteuid())
    if problem is not None:
        raise ConfigError(f"daemon.trace: {problem}")
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except OSError as err:
        raise ConfigError(f"daemon.trace: cannot open {target}: {err.strerror}") from err
    return JsonLinesTrace(os.fdopen(fd, "a", buffering=1), now_ns, owns_stream=True, level=level)
