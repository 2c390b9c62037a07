"""move_pages(2) through ctypes (x86_64 syscall 279; libnuma is not needed).

long move_pages(int pid, unsigned long count, void **pages, const int *nodes,
                int *status, int flags)
With nodes == NULL the call only reports the node of each page (query mode).
kscand moves with MPOL_MF_MOVE only: pages mapped by this process alone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
from collections.abc import Callable

import numpy as np

from kscand.errors import AccessDenied, ProcessGone, Unsupported
from kscand.machine import I32Array, U64Array

SYS_MOVE_PAGES = {"x86_64": 279, "aarch64": 239}
MPOL_MF_MOVE = 1 << 1
MOVE_BATCH_PAGES = 16_384  # pages per syscall: bounds the time the kernel holds the mm
# A status the kernel never writes: marks the entries a call left alone.
STATUS_UNSET = -(1 << 30)
# do_pages_move() (mm/migrate.c) stores the status of a run of pages only once the
# whole run migrated. When migrate_pages() fails part of a run, the call returns
# without storing that run's status: -ENOMEM when the target node ran out of memory,
# or the number of pages not migrated (> 0) when some stayed (busy, pinned, ...).
# Some pages of that run did move. kscand then asks the kernel where each unreported
# page is (query mode): on the target it moved; elsewhere it failed with the call's
# errno (-ENOMEM) or, for a positive return, stayed where it is; a page gone since
# reports its own -ENOENT/-EFAULT. Other whole-call errors are about the call.
PER_PAGE_ERRNOS = frozenset({errno.ENOMEM})


def _syscall() -> Callable[..., int]:
    libc = ctypes.CDLL(None, use_errno=True)
    func = libc.syscall
    func.restype = ctypes.c_long
    func.argtypes = [
        ctypes.c_long,
        ctypes.c_long,
        ctypes.c_ulong,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
    ]
    return func


class PageMover:
    """Calls move_pages(2) in batches; the machine holds one (tests may swap it)."""

    def __init__(self, batch_pages: int = MOVE_BATCH_PAGES) -> None:
        machine = platform.machine()
        if machine not in SYS_MOVE_PAGES:
            raise Unsupported(f"move_pages(2): no syscall number known for {machine}")
        self._nr = SYS_MOVE_PAGES[machine]
        self._call = _syscall()
        self.batch_pages = batch_pages

    def query(self, pid: int, vaddrs: U64Array) -> I32Array:
        """Node of each page, or a negative errno (-ENOENT not present, -EFAULT, ...)."""
        return self._run(pid, vaddrs, None)

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> I32Array:
        """Move the pages to node nid (MPOL_MF_MOVE); per-page node or negative errno."""
        return self._run(pid, vaddrs, nid)

    def _run(self, pid: int, vaddrs: U64Array, nid: int | None) -> I32Array:
        status = np.zeros(vaddrs.shape, dtype=np.int32)
        for lo in range(0, int(vaddrs.size), self.batch_pages):
            hi = min(lo + self.batch_pages, int(vaddrs.size))
            status[lo:hi] = self._batch(pid, vaddrs[lo:hi], nid)
        return status

    def _batch(self, pid: int, vaddrs: U64Array, nid: int | None) -> I32Array:
        pages = np.ascontiguousarray(vaddrs, dtype=np.uint64)
        status, ret, err = self._call_batch(pid, pages, nid)
        if ret < 0 and (nid is None or err not in PER_PAGE_ERRNOS):
            raise move_pages_error(err, pid, nid)
        unset = status == STATUS_UNSET
        if nid is not None and unset.any():
            where = self._batch(pid, pages[unset], None)  # query: where did they end up?
            if ret < 0:  # out of memory: what did not reach the target failed with that errno
                where[(where >= 0) & (where != nid)] = -err
            status[unset] = where  # the target node: moved; another node: stayed; < 0: gone
        status[status == STATUS_UNSET] = -errno.EINVAL  # not seen: the kernel said nothing
        return status

    def _call_batch(
        self, pid: int, pages: U64Array, nid: int | None
    ) -> tuple[I32Array, int, int]:
        """One move_pages(2) call: (status, return value, errno when it is < 0)."""
        status = np.full(pages.shape, STATUS_UNSET, dtype=np.int32)
        nodes = None if nid is None else np.full(pages.shape, nid, dtype=np.int32)
        ret = self._call(
            self._nr,
            pid,
            pages.size,
            pages.ctypes.data,
            None if nodes is None else nodes.ctypes.data,
            status.ctypes.data,
            0 if nid is None else MPOL_MF_MOVE,
        )
        return status, int(ret), ctypes.get_errno() if ret < 0 else 0


def move_pages_error(err: int, pid: int, nid: int | None) -> Exception:
    """The kscand error for a failed move_pages(2) call (errno of the whole call)."""
    what = f"move_pages(pid {pid}" + ("" if nid is None else f", to node {nid}") + ")"
    if err == errno.ESRCH:
        return ProcessGone(f"{what}: no such process")
    if err == errno.EINVAL:
        # find_mm_struct() in mm/migrate.c: the task has no mm. kscand never selects
        # kernel threads and passes valid flags, so the process is exiting (or a zombie):
        # its mm is released before it is reaped, while its pid still resolves.
        return ProcessGone(f"{what}: the process has no address space (it is exiting)")
    if err in (errno.EPERM, errno.EACCES):
        return AccessDenied(
            f"{what}: {os.strerror(err)} (another user's process needs CAP_SYS_PTRACE)"
        )
    if err == errno.ENOSYS:
        return Unsupported(f"{what}: this kernel has no move_pages(2) (CONFIG_MIGRATION)")
    if err == errno.ENODEV:
        return Unsupported(f"{what}: node {nid} is not online or has no memory")
    return Unsupported(f"{what}: {os.strerror(err)}")
