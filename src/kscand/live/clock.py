"""The live clock: monotonic time and a sleep that wake() or stop() interrupts at once."""

from __future__ import annotations

import threading
import time


class LiveClock:
    """time.monotonic_ns and an Event-based sleep (khugepaged's wait_event_freezable_timeout)."""

    def __init__(self) -> None:
        self._wakeup = threading.Event()
        self._stopped = False

    def now_ns(self) -> int:
        return time.monotonic_ns()

    def sleep_ns(self, duration_ns: int) -> None:
        """Sleep up to duration_ns; returns early on wake() or stop()."""
        if self._stopped or duration_ns <= 0:
            return
        self._wakeup.wait(duration_ns / 1e9)
        if not self._stopped:
            self._wakeup.clear()

    def wake(self) -> None:
        """End the current (or the next) sleep now, e.g. after a tunable change."""
        self._wakeup.set()

    def stop(self) -> None:
        """End the current sleep and make every later sleep return at once."""
        self._stopped = True
        self._wakeup.set()

    @property
    def stopped(self) -> bool:
        return self._stopped
