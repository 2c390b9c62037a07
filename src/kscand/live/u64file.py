"""Batched reads of u64-per-index files (pagemap, kpageflags, kpagecount) into numpy.

Whole runs are read with one preadv straight into a numpy buffer; a short
read (end of file, a process that exited, a PFN past max_pfn) leaves the
rest invalid instead of failing. The buffers a reader reads into are kept
(ReadBuffer) rather than allocated per call: on a host where a page fault
costs microseconds, fresh buffers cost more than the reads.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import BoolArray, U64Array

ENTRY_BYTES = 8
# A ReadBuffer keeps at most this many entries between calls (8 MiB); a larger read
# gets a buffer of its own, freed after it.
READ_BUFFER_MAX_ENTRIES = 1 << 20


class ReadBuffer:
    """A uint64 buffer reused across reads: grown to the largest read, up to a cap."""

    def __init__(self, max_entries: int = READ_BUFFER_MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._buf: U64Array = np.zeros(0, dtype=np.uint64)

    def take(self, count: int) -> U64Array:
        """count entries of scratch space (contents undefined until written)."""
        if count > self.max_entries:
            return np.empty(count, dtype=np.uint64)
        if self._buf.size < count:
            self._buf = np.empty(min(max(count, 2 * self._buf.size), self.max_entries),
                                 dtype=np.uint64)
        return self._buf[:count]


def pread_u64(fd: int, first: int, out: U64Array) -> int:
    """Fill out (uint64, contiguous) with entries first.. of fd; returns entries read.

    Loops over partial reads; stops at end of data. The tail past what was
    read is left as it was.
    """
    view = out.data.cast("B")
    done = 0
    offset = first * ENTRY_BYTES
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done // ENTRY_BYTES


def read_u64_range(
    fd: int, first: int, count: int, scratch: ReadBuffer | None = None
) -> tuple[U64Array, int]:
    """Entries [first, first + count) of fd: (uint64 (count,), number read; rest zero).

    With scratch, the entries are in scratch's buffer: valid until its next use.
    """
    out = scratch.take(count) if scratch is not None else np.empty(count, dtype=np.uint64)
    nr_read = pread_u64(fd, first, out)
    out[nr_read:] = 0
    return out, nr_read


@dataclass(frozen=True, slots=True)
class RunPlan:
    """How to read entries at given indices: runs [first, first + length), int64 (r,).

    Runs are stored back to back in one buffer from base; count (r,) is how many
    of the indices each run serves, pos (int64 (n,)) places each index inside
    that buffer.
    """

    first: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    base: npt.NDArray[np.int64]
    count: npt.NDArray[np.int64]
    pos: npt.NDArray[np.int64]

    def run_of(self) -> npt.NDArray[np.int64]:
        """The run of each index, int64 (n,)."""
        return np.repeat(np.arange(self.first.size, dtype=np.int64), self.count)


def plan_runs(index: npt.NDArray[np.int64], max_gap: int) -> RunPlan:
    """Runs over indices in their given order: a run goes on while each index is the
    same as the previous one or at most max_gap + 1 ahead of it (no sort needed:
    PFNs of neighbouring pages are often neighbours, and a repeated PFN, like
    the zero page's, stays in one run)."""
    step = np.diff(index).view(np.uint64)  # a step back wraps past any gap
    breaks = np.flatnonzero(step > np.uint64(max_gap + 1)) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [index.size])) - 1
    first = index[starts]
    length = index[ends] - first + 1
    base = np.zeros(first.size, dtype=np.int64)
    np.cumsum(length[:-1], out=base[1:])
    count = ends - starts + 1
    return RunPlan(first, length, base, count, index + np.repeat(base - first, count))


def read_runs(fd: int, plan: RunPlan) -> tuple[U64Array, BoolArray]:
    """Read every run of plan from fd: (values, valid) per planned index, uint64/bool (n,).

    The preads are issued by map() over the run lists, so the per-run cost is
    the syscall's, not a Python loop iteration's (os.pread and one join cost a
    third of a preadv into a slice of a kept buffer: no memoryview per run). A
    short read (end of file) falls back to reading run by run and marks what is
    missing invalid.
    """
    sizes = (plan.length * ENTRY_BYTES).tolist()
    offsets = (plan.first * ENTRY_BYTES).tolist()
    data = b"".join(map(os.pread, itertools.repeat(fd), sizes, offsets))
    total = int(plan.length.sum())
    if len(data) == total * ENTRY_BYTES:
        buf = np.frombuffer(data, dtype=np.uint64)
        return buf[plan.pos], np.ones(plan.pos.size, np.bool_)
    buf = np.zeros(total, dtype=np.uint64)
    got = np.zeros(plan.first.size, dtype=np.int64)
    for run, (start, count, pos) in enumerate(
        zip(plan.first.tolist(), plan.length.tolist(), plan.base.tolist(), strict=True)
    ):
        got[run] = pread_u64(fd, start, buf[pos : pos + count])
    run_of = plan.run_of()
    return buf[plan.pos], plan.pos - plan.base[run_of] < got[run_of]


def read_u64_at(
    fds: Sequence[int], index: U64Array, max_gap: int
) -> list[tuple[U64Array, BoolArray]]:
    """Entries at arbitrary indices (any order, repeats allowed) of each file in fds.

    The indices are grouped into runs once (see plan_runs); each file is read
    with one pread per run. Returns (values: uint64 (n,), valid: bool (n,))
    per file; invalid entries are 0.
    """
    if index.size == 0:
        return [(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.bool_)) for _ in fds]
    plan = plan_runs(index.astype(np.int64), max_gap)
    out = []
    for fd in fds:
        values, valid = read_runs(fd, plan)
        if not valid.all():
            values = np.where(valid, values, np.uint64(0)).astype(np.uint64)
        out.append((values, valid))
    return out


class U64File:
    """A read-only u64-per-index file kept open (kpageflags, kpagecount)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)

    @property
    def fd(self) -> int:
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
