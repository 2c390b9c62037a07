"""Signals and the foreground run: SIGTERM/SIGINT stop, SIGHUP reloads, in the main thread.

The handlers only set flags and wake the loop. The loop, control and metrics threads
block these signals (block_daemon_signals), so the kernel delivers them to the main
thread and never interrupts an engine syscall.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kscand.daemon.loop import Daemon

log = logging.getLogger("kscand")

DAEMON_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
STOP_GRACE_S = 0.9  # how long run_foreground waits for the loop after a stop request
BACKEND_CLOSE_WAIT_S = 5.0  # ... and then, with the socket closed, before closing the backend
EXIT_OK = 0
EXIT_FAILURE = 1


def block_daemon_signals() -> None:
    """Block SIGTERM/SIGINT/SIGHUP in the calling thread (they belong to the main thread)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, DAEMON_SIGNALS)


def run_foreground(daemon: Daemon, early_hangups: Callable[[], int] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (main thread only); returns the exit status.

    The handlers only set flags and wake the loop; SIGHUP asks for a reload.
    early_hangups says how many SIGHUPs came before these handlers (kscand run
    records them from its first line): they become one reload request.

    The backend is closed only after the loop thread has ended: it may be in a
    read of the backend's files or a move_pages(2) call on them. A loop still in
    one after STOP_GRACE_S + BACKEND_CLOSE_WAIT_S leaves the backend open; the
    process exit releases it.
    """
    names = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        daemon.request_stop(names.get(signal.Signals(signum), str(signum)))

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        daemon.request_reload()

    # Handlers first: once the socket answers, a client may send SIGTERM at once
    # (a stop requested before the loop starts makes it return at its first check).
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_stop),
        signal.SIGINT: signal.signal(signal.SIGINT, on_stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, on_hup),
    }
    if early_hangups is not None and early_hangups():
        log.info("SIGHUP during start-up: re-reading the config")
        daemon.request_reload()
    status: list[int] = []
    loop = threading.Thread(
        target=lambda: status.append(daemon.run_loop()), name="kscand", daemon=True
    )
    result: int | None = None
    try:
        daemon.start()
        loop.start()
        while loop.is_alive() and not daemon.stopping():
            loop.join(timeout=0.25)
        loop.join(timeout=STOP_GRACE_S)
        if loop.is_alive():
            # One page-table read or move_pages(2) call outlasted the grace period
            # (seen under QEMU TCG, where a 128 MiB range takes seconds). The stop
            # was asked for, so it is honoured: each page is either moved or not,
            # and the exit status says a stop, not a failure.
            log.warning("the loop did not stop within %.1f s; exiting anyway", STOP_GRACE_S)
            result = EXIT_OK if daemon.stopping() else EXIT_FAILURE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        daemon.close_services()
        if loop.is_alive():
            loop.join(timeout=BACKEND_CLOSE_WAIT_S)
        if loop.is_alive():
            log.warning("the loop is still in a read or move; leaving the backend to the exit")
        else:
            daemon.close_backend()
    if result is not None:
        return result
    return status[0] if status else EXIT_FAILURE
