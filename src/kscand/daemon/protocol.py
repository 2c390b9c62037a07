"""The control protocol: one handler per command, in a dispatch table.

Handlers run in the control thread. They read the published status and the
desired tunables; what must touch the engine (a process's scale) the target
runs in the loop thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

from kscand import __version__
from kscand.core.throttle import SCALE_MAX
from kscand.core.tunables import Tunables
from kscand.daemon.retune import tunables_table
from kscand.errors import ConfigError


class ControlTarget(Protocol):
    """What the commands need of the daemon."""

    @property
    def tunables(self) -> Tunables: ...

    def status(self) -> dict[str, Any]: ...

    def set_tunables(self, changes: Any) -> Tunables: ...

    def scale_in_loop(self, pid: int, scale: int) -> list[dict[str, Any]]: ...


Request = dict[str, Any]
Reply = dict[str, Any]


def scale_request(request: Request) -> tuple[int, int]:
    """(pid, scale) of a `scale` request, checked; ConfigError naming the bad field."""
    pid, scale = request.get("pid"), request.get("scale")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ConfigError(f"scale: pid must be a positive integer, got {pid!r}")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= SCALE_MAX:
        raise ConfigError(f"scale: scale must be an integer 0..{SCALE_MAX}, got {scale!r}")
    return pid, scale


def _ping(_target: ControlTarget, _request: Request) -> Reply:
    return {"pid": os.getpid(), "version": __version__}


def _status(target: ControlTarget, _request: Request) -> Reply:
    return {"status": target.status()}


def _get(target: ControlTarget, _request: Request) -> Reply:
    return {"tunables": target.tunables.as_dict(), "fields": tunables_table()}


def _set(target: ControlTarget, request: Request) -> Reply:
    new = target.set_tunables(request.get("tunables"))
    return {"tunables": new.as_dict(), "applies": "from the next step"}


def _scale(target: ControlTarget, request: Request) -> Reply:
    pid, scale = scale_request(request)
    return {"processes": target.scale_in_loop(pid, scale)}


COMMANDS: dict[str, Callable[[ControlTarget, Request], Reply]] = {
    "get": _get,
    "ping": _ping,
    "scale": _scale,
    "set": _set,
    "status": _status,
}


def handle_request(target: ControlTarget, request: Request) -> Reply:
    """The reply to one request (its "cmd" a string: kscand.daemon.control checks it)."""
    cmd = request["cmd"]
    handler = COMMANDS.get(cmd) if isinstance(cmd, str) else None
    if handler is None:
        raise ConfigError(f"unknown command {cmd!r} (known: {', '.join(sorted(COMMANDS))})")
    return handler(target, request)
