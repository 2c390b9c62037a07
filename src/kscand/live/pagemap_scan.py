"""PAGEMAP_SCAN (ioctl on /proc/PID/pagemap, Linux 6.7+): the runs of a range worth reading.

The kernel walks the page tables and returns page_region {start, end,
categories} for runs of pages in the asked categories, merging neighbours
with the same categories; holes (never touched, unmapped, huge empty page
tables) cost it nothing and us no entries. kscand asks for present or
swapped pages, the only ones whose pagemap entry is not zero, then reads
pagemap for those runs alone: the same entries as one plain read of the
range (the other entries are zero either way). Where the ioctl is missing
(older kernels, a procfs that is not one) the plain read is the fallback.

Layouts and numbers: include/uapi/linux/fs.h (struct pm_scan_arg, struct
page_region, PAGE_IS_*).
"""

from __future__ import annotations

import errno
import fcntl
import struct
from collections import Counter

import numpy as np

from kscand.live.u64file import ReadBuffer, pread_u64, read_u64_range
from kscand.machine import PAGE_SHIFT, U64Array

PAGE_IS_PRESENT = 1 << 3
PAGE_IS_SWAPPED = 1 << 4
NONZERO_ENTRY_CATEGORIES = PAGE_IS_PRESENT | PAGE_IS_SWAPPED

_PM_SCAN_ARG = struct.Struct("=12Q")  # size flags start end walk_end vec vec_len max_pages
#                                       category_inverted category_mask anyof_mask return_mask
PM_SCAN_ARG_BYTES = _PM_SCAN_ARG.size  # 96
PAGE_REGION_WORDS = 3  # start, end, categories
# _IOWR('f', 16, struct pm_scan_arg)
PAGEMAP_SCAN = (3 << 30) | (PM_SCAN_ARG_BYTES << 16) | (ord("f") << 8) | 16
REGIONS_PER_CALL = 512  # page_region slots per ioctl (12 KiB); more regions take more calls

# errnos that say "this kernel or file has no PAGEMAP_SCAN", not "this process failed".
UNSUPPORTED_ERRNOS = frozenset({errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS})
# errnos after which that one range is read the plain way: the above, and EFAULT for a
# range past the user address space ([vsyscall]), which the plain read returns as zeros.
REFUSED_RANGE_ERRNOS = UNSUPPORTED_ERRNOS | {errno.EFAULT}


class PagemapScanner:
    """PAGEMAP_SCAN calls with a kept region buffer (one scanning thread)."""

    def __init__(self, regions_per_call: int = REGIONS_PER_CALL) -> None:
        self._vec: U64Array = np.zeros((regions_per_call, PAGE_REGION_WORDS), dtype=np.uint64)
        self._arg = bytearray(PM_SCAN_ARG_BYTES)
        self.calls = 0  # ioctls issued

    def regions(self, fd: int, start: int, end: int) -> tuple[list[int], list[int]]:
        """Page runs of [start, end) that are present or swapped: (first page, pages) lists,
        page indices (vaddr >> PAGE_SHIFT), in address order. OSError from the ioctl."""
        firsts: list[int] = []
        counts: list[int] = []
        vec_addr = int(self._vec.ctypes.data)
        while start < end:
            _PM_SCAN_ARG.pack_into(
                self._arg, 0, PM_SCAN_ARG_BYTES, 0, start, end, 0, vec_addr, len(self._vec), 0,
                0, 0, NONZERO_ENTRY_CATEGORIES, NONZERO_ENTRY_CATEGORIES,
            )
            nr_regions = fcntl.ioctl(fd, PAGEMAP_SCAN, self._arg, True)
            self.calls += 1
            if nr_regions:
                found = self._vec[:nr_regions, :2] >> np.uint64(PAGE_SHIFT)
                firsts += found[:, 0].tolist()
                counts += (found[:, 1] - found[:, 0]).tolist()
            walk_end = _PM_SCAN_ARG.unpack_from(self._arg)[4]
            if walk_end <= start:  # no progress: the rest is left to a plain read
                firsts.append(start >> PAGE_SHIFT)
                counts.append((end - start) >> PAGE_SHIFT)
                break
            start = walk_end
        return firsts, counts

    def read(self, fd: int, first: int, out: U64Array) -> int:
        """Fill out with the pagemap entries of pages first.., reading only the runs
        regions() finds (zero elsewhere); returns how many entries are known: all of
        them, up to the first short run, or 0 when no run was found (an empty range
        or an exited process: the caller tells them apart). OSError from the ioctl."""
        count = int(out.size)
        firsts, counts = self.regions(fd, first << PAGE_SHIFT, (first + count) << PAGE_SHIFT)
        known = count if firsts else 0
        done = 0  # out[:done] is written
        for run_first, run_pages in zip(firsts, counts, strict=True):
            lo = run_first - first
            out[done:lo] = 0
            got = pread_u64(fd, run_first, out[lo : lo + run_pages])
            if got < run_pages:
                out[lo + got : lo + run_pages] = 0
                known = min(known, lo)
            done = lo + run_pages
        out[done:] = 0
        return known


class PagemapReader:
    """read_range's pagemap reads: PAGEMAP_SCAN's runs where the kernel has it, else (or
    with use_scan False) one plain pread; the entries land in a buffer kept between calls.

    scan_reason is None until the first read tries the ioctl, then "" when it is used,
    else why not. reads counts calls by "scan", "plain" and "plain_scan_<errno>" (the
    ioctl refused that range: read the plain way).
    """

    def __init__(self) -> None:
        self.use_scan = True
        self.scan_reason: str | None = None
        self.reads: Counter[str] = Counter()
        self._scanner = PagemapScanner()
        self._buffer = ReadBuffer()

    def read(self, fd: int, first: int, count: int) -> tuple[U64Array, int]:
        """count entries from page first: (entries, how many are known; the rest zero).
        The entries are valid until the next read. OSError from the reads."""
        if self.use_scan and self.scan_reason in (None, ""):
            entries = self._buffer.take(count)
            try:
                nr_read = self._scanner.read(fd, first, entries)
            except OSError as err:
                if err.errno not in REFUSED_RANGE_ERRNOS:
                    raise
                name = errno.errorcode.get(err.errno or 0, str(err.errno))
                if self.scan_reason is None and err.errno in UNSUPPORTED_ERRNOS:
                    self.scan_reason = f"PAGEMAP_SCAN failed with {name}"
                self.reads[f"plain_scan_{name.lower()}"] += 1
            else:
                self.scan_reason = ""
                self.reads["scan"] += 1
                return entries, nr_read
        else:
            self.reads["plain"] += 1
        return read_u64_range(fd, first, count, self._buffer)
