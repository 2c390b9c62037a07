"""Calls other threads hand to the loop thread (the only one that touches the engine):
queued with a Future, run between steps, the caller waiting a bounded time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from kscand.errors import KscandError


class LoopCalls:
    """The queue of calls for the loop thread; lock is the daemon's, wake wakes its loop."""

    def __init__(self, lock: threading.Lock, wake: threading.Event) -> None:
        self._lock = lock
        self._wake = wake
        self._calls: list[tuple[Callable[[], Any], Future[Any]]] = []

    def call(self, fn: Callable[[], Any], timeout_s: float, stopping: Callable[[], bool]) -> Any:
        """fn's result once the loop ran it; KscandError when stopping or not run in time."""
        future: Future[Any] = Future()
        with self._lock:
            if stopping():
                raise KscandError("the daemon is stopping")
            self._calls.append((fn, future))
        self._wake.set()
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as err:
            future.cancel()
            raise KscandError(
                f"the daemon's loop is busy (a step has run for more than {timeout_s:g} s); "
                "try again"
            ) from err

    def run_pending(self) -> None:
        """Run the queued calls (loop thread only); each caller gets its result or error."""
        with self._lock:
            calls, self._calls = self._calls, []
        for fn, future in calls:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as err:  # the caller gets it (one line) over the socket
                future.set_exception(err)
