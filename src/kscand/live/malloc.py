"""glibc malloc kept from returning the scan's freed arrays to the kernel between chunks.

Each read_range allocates and frees a few arrays of its chunk's size (256 KiB
for 32768 pages). glibc's defaults hand such blocks back to the kernel (an
mmap per block above the dynamic mmap threshold, a heap trim when the free top
exceeds twice it), so the next chunk page-faults them in again: 1,000-2,000
faults per 128 MiB chunk, microseconds each on a virtual machine, more than the
reads themselves (measured with bench/bench_pagemap.py). Fixed thresholds keep
blocks up to MMAP_THRESHOLD_BYTES on the heap and up to TRIM_THRESHOLD_BYTES of
free heap mapped: a bounded RSS cost for a daemon that reuses the same sizes
every step.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 << 20  # blocks below this come from the heap, not one mmap each
TRIM_THRESHOLD_BYTES = 16 << 20  # free heap kept mapped, at most


def keep_freed_arrays() -> str:
    """Set glibc's mmap and trim thresholds; "" when set, else the reason it was not.

    Process-wide and idempotent. Without glibc (musl, no libc found) nothing changes.
    """
    name = ctypes.util.find_library("c")
    if name is None:
        return "no C library found"
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError) as err:
        return f"no mallopt in {name}: {err}"
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        return f"mallopt(M_MMAP_THRESHOLD) refused by {name}"
    if not mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES):
        return f"mallopt(M_TRIM_THRESHOLD) refused by {name}"
    return ""
