"""Measures the host costs behind kscand.evaluation.costs: `python bench/cost_probe.py`.

- read fault: a page-cache read fault on a tmpfs mapping, one access per 16 pages
  (fault-around maps 16 PTEs per fault), minus the same strided read with no fault;
- single-address page walk: a one-entry pread of /proc/self/pagemap minus a one-entry
  pread of /dev/zero (the syscall overhead);
- bulk pagemap: ns per entry of one pread covering 64 Ki entries.
Prints the best of a few repetitions (the machine is shared).
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time

import numpy as np

NR_PAGES = 1 << 16
FAULT_AROUND_PAGES = 16
PAGE = 4096


def read_fault_ns(nr_reps: int = 5) -> float:
    """ns per read fault of a cached tmpfs page (each fault maps FAULT_AROUND_PAGES PTEs)."""
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.NamedTemporaryFile(dir=shm) as f:
        f.write(b"\1" * (NR_PAGES * PAGE))
        f.flush()
        best = float("inf")
        stride = PAGE * FAULT_AROUND_PAGES
        for _ in range(nr_reps):
            m = mmap.mmap(f.fileno(), NR_PAGES * PAGE, mmap.MAP_SHARED, mmap.PROT_READ)
            a = np.frombuffer(m, dtype=np.uint8)
            t = time.perf_counter()
            a[::stride].sum()
            faulting = time.perf_counter() - t
            t = time.perf_counter()
            a[::stride].sum()
            mapped = time.perf_counter() - t
            best = min(best, (faulting - mapped) / (NR_PAGES // FAULT_AROUND_PAGES))
            del a
            m.close()
    return best * 1e9


def pagemap_ns(nr_reads: int = 20_000) -> tuple[float, float]:
    """(single-address walk ns, bulk ns per entry) through /proc/self/pagemap."""
    buf = np.ones(NR_PAGES * PAGE, dtype=np.uint8)  # touched: every page present
    first = buf.ctypes.data // PAGE
    offsets = ((first + np.random.default_rng(1).integers(0, NR_PAGES, nr_reads)) * 8).tolist()
    pagemap = os.open("/proc/self/pagemap", os.O_RDONLY)
    zero = os.open("/dev/zero", os.O_RDONLY)
    try:
        t = time.perf_counter()
        for off in offsets:
            os.pread(pagemap, 8, off)
        walk = time.perf_counter() - t
        t = time.perf_counter()
        for _ in offsets:
            os.pread(zero, 8, 0)
        syscall = time.perf_counter() - t
        t = time.perf_counter()
        os.pread(pagemap, NR_PAGES * 8, first * 8)
        bulk = time.perf_counter() - t
    finally:
        os.close(pagemap)
        os.close(zero)
    return (walk - syscall) / nr_reads * 1e9, bulk / NR_PAGES * 1e9


def main() -> None:
    print(f"read fault (maps {FAULT_AROUND_PAGES} PTEs): {read_fault_ns():8.0f} ns")
    walk, bulk = pagemap_ns()
    print(f"single-address page walk (pagemap):  {walk:8.0f} ns")
    print(f"bulk pagemap read:                   {bulk:8.1f} ns per entry")


if __name__ == "__main__":
    main()
