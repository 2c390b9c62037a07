"""Trace events as JSON lines: the series' tracepoints (mm_enter, mm_exit, scan_mm_start,
scan_mm_end, scan_mm_migrate) written by the engine's trace hook.

Each line is one object: {"ts_ns": <machine clock>, "event": <name>, ...fields}.
A write error never reaches the engine: it is counted and said once.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import IO, Any

from kscand.errors import ConfigError

log = logging.getLogger("kscand.trace")


class JsonLinesTrace:
    """A trace sink (kscand.engine.Tracer) writing one JSON object per event."""

    def __init__(
        self, stream: IO[str] | None, now_ns: Callable[[], int], *, owns_stream: bool = False
    ) -> None:
        self.stream = stream
        self.now_ns = now_ns
        self.owns_stream = owns_stream
        self.nr_events = 0
        self.nr_errors = 0

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        if self.stream is None:
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


def open_trace(target: str, now_ns: Callable[[], int]) -> JsonLinesTrace:
    """The sink for daemon.trace: "" (off), "stderr", or a file appended to (mode 0600,
    never through a symlink)."""
    if not target:
        return JsonLinesTrace(None, now_ns)
    if target == "stderr":
        return JsonLinesTrace(sys.stderr, now_ns)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags, 0o600)
    except OSError as err:
        raise ConfigError(f"daemon.trace: cannot open {target}: {err.strerror}") from err
    return JsonLinesTrace(os.fdopen(fd, "a", buffering=1), now_ns, owns_stream=True)
