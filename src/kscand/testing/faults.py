"""Fault injection for the live mover: move_pages(2) failures at chosen rates, for tests.

FaultyMover wraps the real PageMover (or any mover) and fails, at the given
rates, whole calls (ESRCH: the process is gone; EPERM: not allowed) and
single pages (-ENOMEM target full, -EBUSY, -ENOENT not present, -EFAULT, ...);
the pages that do not fail go to the wrapped mover. It is installed only by
code, as `LinuxMachine.mover = FaultyMover(machine.mover, ...)`: no config
key, environment variable or command-line option reaches it, so a production
daemon cannot run with it by accident. The simulator has its own
(`[sim] move_faults`).
"""

from __future__ import annotations

import errno
from collections import Counter
from collections.abc import Mapping
from typing import Protocol

import numpy as np

from kscand.errors import MOVE_CALL_FAULTS, MOVE_PAGE_FAULTS
from kscand.live.move import move_pages_error
from kscand.machine import I32Array, U64Array

CALL_FAULTS = frozenset(MOVE_CALL_FAULTS)  # the whole call fails with this errno
PAGE_FAULTS = frozenset(MOVE_PAGE_FAULTS)


class Mover(Protocol):
    """What LinuxMachine needs of its mover (kscand.live.move.PageMover)."""

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> I32Array: ...

    def query(self, pid: int, vaddrs: U64Array) -> I32Array: ...


class FaultyMover:
    """A mover that injects move_pages(2) failures; counts what it injected by errno name."""

    def __init__(self, inner: Mover, rates: Mapping[str, float], seed: int = 0) -> None:
        unknown = set(rates) - CALL_FAULTS - PAGE_FAULTS
        if unknown:
            known = sorted(CALL_FAULTS | PAGE_FAULTS)
            raise ValueError(f"unknown faults {sorted(unknown)}: use {known}")
        if any(not 0.0 <= r <= 1.0 for r in rates.values()):
            raise ValueError("fault rates are probabilities in [0, 1]")
        page_total = sum(r for name, r in rates.items() if name in PAGE_FAULTS)
        if page_total > 1.0:
            raise ValueError("per-page fault rates add up to more than 1")
        self.inner = inner
        self.call_rates = {n: r for n, r in sorted(rates.items()) if n in CALL_FAULTS}
        self.page_names = [n for n in sorted(rates) if n in PAGE_FAULTS]
        self.page_edges = np.cumsum([rates[n] for n in self.page_names])
        self.rng = np.random.default_rng(seed)
        self.injected_pages: Counter[str] = Counter()  # pages, by errno name
        self.injected_calls: Counter[str] = Counter()  # whole calls, by errno name
        self.moved_calls: list[tuple[int, int]] = []  # (pid, pages passed on) per call

    def query(self, pid: int, vaddrs: U64Array) -> I32Array:
        """Query mode is never faulted (it moves nothing)."""
        return self.inner.query(pid, vaddrs)

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> I32Array:
        for name, rate in self.call_rates.items():
            if self.rng.random() < rate:
                self.injected_calls[name] += 1
                raise move_pages_error(getattr(errno, name), pid, nid)
        status = np.zeros(vaddrs.shape, dtype=np.int32)
        fault = np.searchsorted(self.page_edges, self.rng.random(vaddrs.shape), side="right")
        ok = fault >= len(self.page_names)  # no per-page fault drawn
        for index, name in enumerate(self.page_names):
            hit = fault == index
            status[hit] = -getattr(errno, name)
            self.injected_pages[name] += int(np.count_nonzero(hit))
        if ok.any():
            status[ok] = self.inner.move(pid, vaddrs[ok], nid)
            self.moved_calls.append((pid, int(np.count_nonzero(ok))))
        return status
