"""The DAMON snapshot requester: the one background thread that writes
update_schemes_tried_regions, one kdamond at a time (the kernel takes one such command at
a time for all kdamonds), and publishes each complete tried_regions read as a Snapshot.
kscand.live.damon explains why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kscand.live.damon_sysfs import PENDING_RETRY, DamonSettings, DamonSysfs, Regions


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A complete tried_regions read of one kdamond, published by the requester."""

    generation: int
    seq: int  # the request it answers
    regions: Regions


@dataclass(eq=False, slots=True)
class _Request:
    generation: int
    seq: int
    pending_since_ns: int | None = None  # written; tried_regions still empty


class SnapshotRequester:
    """The thread that writes update_schemes_tried_regions, one kdamond at a time.

    The scan thread calls request(); the thread writes the command (which blocks in
    the kernel until the kdamond's next aggregation), reads tried_regions and
    publishes a Snapshot. An empty tried_regions right after the write is re-read
    every pending_poll_ms (kernels that fill them after the write returned) until
    regions appear or PENDING_RETRY refresh periods have passed.
    """

    def __init__(
        self,
        io: DamonSysfs,
        settings: DamonSettings,
        read_regions: Callable[[int], Regions],
        now_ns: Callable[[], int],
    ) -> None:
        self.io = io
        self.settings = settings
        self._read_regions = read_regions
        self._now_ns = now_ns
        self._cond = threading.Condition()
        self._wanted: dict[int, _Request] = {}  # slot index -> request not yet written
        self._pending: dict[int, _Request] = {}  # written, regions not seen yet
        self._in_flight: tuple[int, _Request] | None = None
        self._done: dict[int, Snapshot] = {}
        self._seq = 0
        self._stopping = False
        self.nr_written = 0
        self.nr_errors = 0  # refused: busy (another tool's command) or the kdamond stopped
        self.nr_pending_expired = 0
        self._thread = threading.Thread(target=self._run, name="kscand-damon", daemon=True)
        self._thread.start()

    # --- scan-thread side ---------------------------------------------------------------------

    def request(self, index: int, generation: int) -> int:
        """Ask for a new snapshot of slot index; returns the sequence number it will carry."""
        with self._cond:
            self._seq += 1
            self._pending.pop(index, None)
            self._wanted[index] = _Request(generation, self._seq)
            self._cond.notify_all()
            return self._seq

    def outstanding(self, index: int, generation: int) -> bool:
        """A request of this slot generation is queued, being written or pending."""
        with self._cond:
            return self._outstanding_locked(index, generation)

    def _outstanding_locked(self, index: int, generation: int) -> bool:
        self._expire_pending_locked()
        reqs = [self._wanted.get(index), self._pending.get(index)]
        if self._in_flight is not None and self._in_flight[0] == index:
            reqs.append(self._in_flight[1])
        return any(req is not None and req.generation == generation for req in reqs)

    def latest(self, index: int, generation: int) -> Snapshot | None:
        with self._cond:
            snap = self._done.get(index)
        return snap if snap is not None and snap.generation == generation else None

    def wait(self, index: int, generation: int, seq: int, timeout_s: float) -> Snapshot | None:
        """Wait at most timeout_s for the snapshot answering request seq (or a later one)."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while True:
                snap = self._done.get(index)
                if snap is not None and snap.generation == generation and snap.seq >= seq:
                    return snap
                if self._stopping or not self._outstanding_locked(index, generation):
                    return None
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def cancel(self, index: int) -> None:
        """The slot is being reconfigured: drop its queued request and its snapshot."""
        with self._cond:
            self._wanted.pop(index, None)
            self._pending.pop(index, None)
            self._done.pop(index, None)

    def begin_stop(self) -> None:
        """Take no new job; wake waiters."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def stop(self) -> bool:
        """End the thread; True if it ended within stop_timeout_ms."""
        self.begin_stop()
        self._thread.join(self.settings.stop_timeout_ms / 1000)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                job = self._next_locked()
                if job is None:
                    return
            index, req, write = job
            regions = self._serve(index, write)
            with self._cond:
                self._in_flight = None
                self._finish_locked(index, req, regions)
                self._cond.notify_all()

    def _next_locked(self) -> tuple[int, _Request, bool] | None:
        """The next job (slot, request, write the command?); None when stopping."""
        poll_s = self.settings.pending_poll_ms / 1000
        while not self._stopping:
            if self._wanted:
                index = next(iter(self._wanted))
                req = self._wanted.pop(index)
                self._in_flight = (index, req)
                return index, req, True
            if self._pending:
                self._expire_pending_locked()
            if self._pending:
                # A cancel() while waiting may have emptied _pending (it does not notify).
                if self._cond.wait(poll_s) or self._wanted or self._stopping or not self._pending:
                    continue
                index = next(iter(self._pending))
                req = self._pending.pop(index)
                self._in_flight = (index, req)
                return index, req, False
            self._cond.wait()
        return None

    def _expire_pending_locked(self) -> None:
        limit_ns = PENDING_RETRY * self.settings.refresh_ms * 1_000_000
        now = self._now_ns()
        for index, req in list(self._pending.items()):
            if req.pending_since_ns is not None and now - req.pending_since_ns >= limit_ns:
                del self._pending[index]
                self.nr_pending_expired += 1

    def _serve(self, index: int, write: bool) -> Regions | None:
        """Write the command (blocks in the kernel), then read tried_regions; None: refused."""
        if write:
            try:
                self.io.write(f"{index}/state", "update_schemes_tried_regions")
            except OSError:
                with self._cond:
                    self.nr_errors += 1
                return None
            with self._cond:
                self.nr_written += 1
        return self._read_regions(index)

    def _finish_locked(self, index: int, req: _Request, regions: Regions | None) -> None:
        if regions is None:
            return  # refused: the scan keeps the last snapshot and asks again later
        if not len(regions):
            if self._wanted.get(index) is None:  # not superseded by a newer request
                if req.pending_since_ns is None:
                    req.pending_since_ns = self._now_ns()
                self._pending[index] = req
            return
        current = self._done.get(index)
        if current is not None and current.generation == req.generation and current.seq > req.seq:
            return
        self._done[index] = Snapshot(req.generation, req.seq, regions)
