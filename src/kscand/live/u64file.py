"""Batched reads of u64-per-index files (pagemap, kpageflags, kpagecount) into numpy.

Whole runs are read with one preadv straight into a numpy buffer; a short
read (end of file, a process that exited, a PFN past max_pfn) leaves the
rest invalid instead of failing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.live.procfs import contiguous_runs
from kscand.machine import BoolArray, U64Array

ENTRY_BYTES = 8


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


def read_u64_range(fd: int, first: int, count: int) -> tuple[U64Array, int]:
    """Entries [first, first + count) of fd: (uint64 (count,), number read; rest zero)."""
    out = np.zeros(count, dtype=np.uint64)
    return out, pread_u64(fd, first, out)


def plan_runs(index: U64Array, max_gap: int) -> tuple[U64Array, npt.NDArray[np.intp], RunPlan]:
    """Sorted unique indices, the inverse map back to index, and the runs to read them."""
    if index.size <= 1 or bool(np.all(index[1:] > index[:-1])):
        uniq = index.astype(np.uint64)
        inverse = np.arange(index.size, dtype=np.intp)  # already sorted and unique
    else:
        uniq, inverse = np.unique(index, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.intp)
    first, length = contiguous_runs(uniq, max_gap)
    base = np.zeros(first.size, dtype=np.int64)
    np.cumsum(length[:-1], out=base[1:])
    run_of = np.searchsorted(first, uniq.astype(np.int64), side="right") - 1
    within = uniq.astype(np.int64) - first[run_of]
    return uniq, inverse, RunPlan(first, length, base, run_of, within)


@dataclass(frozen=True, slots=True)
class RunPlan:
    """Runs [first, first + length) to read, stored at base in one buffer; int64 (r,).

    run_of and within (int64 (u,)) place each unique index inside the buffer.
    """

    first: npt.NDArray[np.int64]
    length: npt.NDArray[np.int64]
    base: npt.NDArray[np.int64]
    run_of: npt.NDArray[np.int64]
    within: npt.NDArray[np.int64]


def read_runs(fd: int, plan: RunPlan) -> tuple[U64Array, BoolArray]:
    """Read every run of plan from fd; (values, valid) per unique index, uint64/bool (u,)."""
    buf = np.zeros(int(plan.length.sum()), dtype=np.uint64)
    got = plan.length.copy()
    view = buf.data.cast("B")
    preadv = os.preadv
    for run, (start, count, pos) in enumerate(
        zip(plan.first.tolist(), plan.length.tolist(), plan.base.tolist(), strict=True)
    ):
        lo, hi = pos * ENTRY_BYTES, (pos + count) * ENTRY_BYTES
        if preadv(fd, [view[lo:hi]], start * ENTRY_BYTES) != hi - lo:
            got[run] = pread_u64(fd, start, buf[pos : pos + count])  # short: finish or stop
    values = buf[plan.base[plan.run_of] + plan.within]
    return values, plan.within < got[plan.run_of]


def read_u64_at(
    fds: Sequence[int], index: U64Array, max_gap: int
) -> list[tuple[U64Array, BoolArray]]:
    """Entries at arbitrary indices (any order, repeats allowed) of each file in fds.

    Indices are sorted and grouped into runs once (gaps up to max_gap read
    through: one syscall saved costs more than a few wasted entries); each
    file is read with one pread per run. Returns (values: uint64 (n,),
    valid: bool (n,)) per file; invalid entries are 0.
    """
    if index.size == 0:
        return [(np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.bool_)) for _ in fds]
    _, inverse, plan = plan_runs(index, max_gap)
    out = []
    for fd in fds:
        values, valid = read_runs(fd, plan)
        out.append((values[inverse], valid[inverse]))
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
