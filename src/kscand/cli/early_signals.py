"""SIGHUP caught from the first line of `kscand run`, before the heavy imports.

The default action of SIGHUP ends a process. The daemon's own handlers are
installed by run_foreground(), after numpy, rich, the config and the backend
are loaded (about half a second): a reload asked for in that window would
kill the daemon. main() installs this recorder first; run_foreground() asks
take_hangups() once its handlers are in place and turns a recorded SIGHUP
into a reload request.
"""

from __future__ import annotations

import signal
from types import FrameType

_hangups: list[int] = []


def _record(signum: int, _frame: FrameType | None) -> None:
    _hangups.append(signum)


def install() -> None:
    """Record SIGHUP instead of dying of it (main thread only)."""
    signal.signal(signal.SIGHUP, _record)


def take_hangups() -> int:
    """How many SIGHUPs arrived before the daemon's handlers; resets the count."""
    count = len(_hangups)
    _hangups.clear()
    return count
