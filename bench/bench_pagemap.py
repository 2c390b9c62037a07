"""Pages per second of kscand's live page reader next to a minimal C program, same run.

The benchmark allocates and touches its own buffer (default 8 GiB), then
times LinuxMachine.read_range over it in the engine's 128 MiB chunks
(pagemap + kpageflags + kpagecount + decode + node lookup), and
bench/pagemap_read.c, compiled here with gcc, reading the same files for the
same range: once the minimal way (kpageflags and kpagecount for every
present page, a pread per run of consecutive PFNs in address order) and with
kscand's own strategy (address-order runs that also step over small PFN
gaps, kpagecount only for non-exclusive file pages, where it decides SHARED),
both with the plain pagemap read and, where the kernel has PAGEMAP_SCAN
(6.7+), with pagemap read only for the present or swapped runs it returns
(kscand's default there). The ratios to the C program with the same strategy
are the target (the cost of Python for the same syscalls); the ratio to the
minimal C program says what the strategy gains. Each is run --repeat times,
alternating; the best time counts (the machine is shared). Ratios are printed
by wall clock and by CPU time (user + system of the reading process, which a
busy host's other tasks do not inflate). Needs root.

    .venv/bin/python bench/bench_pagemap.py [--size-gib 8] [--repeat 3] [--thp]
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kscand.core.filters import page_skip_codes
from kscand.core.mmlist import HISTORY_CHUNK_BYTES
from kscand.core.stats import PageSkip
from kscand.live import LinuxMachine, ProcessSelection
from kscand.machine import PAGE_SIZE, PageFlag

HERE = Path(__file__).resolve().parent
GiB = 1 << 30


@dataclass(frozen=True)
class Run:
    """One timed scan of the buffer."""

    name: str
    seconds: float
    cpu_seconds: float
    present: int
    eligible: int
    preads: int | None = None
    ioctls: int | None = None

    def pages_per_s(self, nr_pages: int) -> float:
        return nr_pages / self.seconds


def mem_available_bytes() -> int:
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def allocate(size_bytes: int, thp: bool) -> tuple[mmap.mmap, int]:
    """A private anonymous buffer with every page written (so every page is present)."""
    buf = mmap.mmap(-1, size_bytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if thp:
        buf.madvise(mmap.MADV_HUGEPAGE)
    arr = np.frombuffer(buf, dtype=np.uint8)
    step = 256 * PAGE_SIZE
    for lo in range(0, size_bytes, step * 1024):  # in slices: bounded temporaries
        arr[lo : lo + step * 1024 : PAGE_SIZE] = 1
    base = int(arr.ctypes.data)
    del arr
    return buf, base


PY_PLAIN, PY_SCAN = "python, plain pagemap read", "python, PAGEMAP_SCAN"
C_MINIMAL, C_PLAIN, C_SCAN = ("C minimal (address-order runs)", "C, kscand's strategy, plain",
                              "C, kscand's strategy, SCAN")
C_NAMES = {"runs": C_MINIMAL, "kscand": C_PLAIN, "scan": C_SCAN}


def scan_python(machine: LinuxMachine, base: int, size_bytes: int, pagemap_scan: bool) -> Run:
    """LinuxMachine.read_range over the buffer in the scanner's chunk size."""
    machine.pagemap.use_scan = pagemap_scan
    proc = machine.process_id(os.getpid())
    present = eligible = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for lo in range(base, base + size_bytes, HISTORY_CHUNK_BYTES):
        batch = machine.read_range(proc, lo, min(lo + HISTORY_CHUNK_BYTES, base + size_bytes))
        present += int(np.count_nonzero(batch.flags & PageFlag.PRESENT))
        eligible += int(np.count_nonzero(page_skip_codes(batch.flags) <= PageSkip.ELIGIBLE_THP))
    return Run(PY_SCAN if pagemap_scan else PY_PLAIN, time.perf_counter() - started,
               time.process_time() - cpu_started, present, eligible)


def build_c(workdir: Path) -> Path:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        raise SystemExit("bench_pagemap: no gcc/cc found to build bench/pagemap_read.c")
    exe = workdir / "pagemap_read"
    subprocess.run([gcc, "-O2", "-Wall", "-o", str(exe), str(HERE / "pagemap_read.c")],
                   check=True)
    return exe


def scan_c(exe: Path, mode: str, base: int, size_bytes: int) -> Run:
    out = subprocess.run(
        [str(exe), str(os.getpid()), f"{base:x}", str(size_bytes // PAGE_SIZE), mode],
        check=True, capture_output=True, text=True,
    ).stdout
    fields = dict(item.split("=") for item in out.split())
    return Run(C_NAMES[mode], int(fields["ns"]) / 1e9, int(fields["cpu_ns"]) / 1e9,
               int(fields["present"]),
               int(fields["eligible"]), int(fields["preads"]), int(fields["ioctls"]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--size-gib", type=float, default=8.0, help="buffer size (default 8)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs of each (default 3)")
    parser.add_argument("--thp", action="store_true", help="madvise(MADV_HUGEPAGE) the buffer")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.access("/proc/kpageflags", os.R_OK):
        print("bench_pagemap: needs root (PFNs and /proc/kpageflags)", file=sys.stderr)
        return 2
    size_bytes = int(args.size_gib * GiB) // HISTORY_CHUNK_BYTES * HISTORY_CHUNK_BYTES
    if size_bytes <= 0 or args.repeat < 1:
        print("bench_pagemap: --size-gib must be at least 0.125 and --repeat at least 1",
              file=sys.stderr)
        return 2
    if size_bytes > 0.8 * mem_available_bytes():
        print(f"bench_pagemap: {size_bytes / GiB:.1f} GiB is more than 80% of MemAvailable "
              f"({mem_available_bytes() / GiB:.1f} GiB); use a smaller --size-gib",
              file=sys.stderr)
        return 2
    nr_pages = size_bytes // PAGE_SIZE
    t0 = time.perf_counter()
    buf, base = allocate(size_bytes, args.thp)
    print(f"buffer: {size_bytes / GiB:.2f} GiB, {nr_pages:,} pages, touched in "
          f"{time.perf_counter() - t0:.1f} s{' (MADV_HUGEPAGE)' if args.thp else ''}")
    runs: dict[str, list[Run]] = {}
    with tempfile.TemporaryDirectory(prefix="kscand-bench-") as tmp, LinuxMachine(
        selection=ProcessSelection(pids=(os.getpid(),)), self_pid=-1
    ) as machine:
        exe = build_c(Path(tmp))
        scan_python(machine, base, HISTORY_CHUNK_BYTES, pagemap_scan=True)  # probes it
        has_scan = machine.pagemap.scan_reason == ""
        for _ in range(args.repeat):
            batch = [scan_python(machine, base, size_bytes, pagemap_scan=False),
                     scan_c(exe, "runs", base, size_bytes),
                     scan_c(exe, "kscand", base, size_bytes)]
            if has_scan:
                batch += [scan_python(machine, base, size_bytes, pagemap_scan=True),
                          scan_c(exe, "scan", base, size_bytes)]
            for run in batch:
                runs.setdefault(run.name, []).append(run)
        reads = dict(machine.pagemap.reads)
    buf.close()
    best = {name: min(rs, key=lambda r: r.seconds) for name, rs in runs.items()}
    best_cpu = {name: min(r.cpu_seconds for r in rs) for name, rs in runs.items()}
    counts = {(r.present, r.eligible) for r in best.values()}
    for run in best.values():
        extra = f", {run.preads:,} preads" if run.preads is not None else ""
        extra += f", {run.ioctls:,} ioctls" if run.ioctls else ""
        print(f"{run.name:34s} {run.pages_per_s(nr_pages) / 1e6:7.2f} M pages/s "
              f"({run.seconds:.3f} s, CPU {best_cpu[run.name]:.3f} s; present {run.present:,}, "
              f"eligible {run.eligible:,}{extra})")
    print(f"python read_range calls by pagemap read: {reads}")
    if not has_scan:
        print(f"no PAGEMAP_SCAN pair: {machine.pagemap.scan_reason}")
    pairs = [("plain read", PY_PLAIN, C_PLAIN)] + ([("PAGEMAP_SCAN", PY_SCAN, C_SCAN)]
                                                  if has_scan else [])
    for label, py, c in pairs:
        print(f"ratio python / C with kscand's strategy, {label}: "
              f"{best[c].seconds / best[py].seconds:.2f}x wall, "
              f"{best_cpu[c] / best_cpu[py]:.2f}x CPU (target >= 0.8x)")
    print(f"ratio python (plain) / C minimal: "
          f"{best[C_MINIMAL].seconds / best[PY_PLAIN].seconds:.2f}x wall, "
          f"{best_cpu[C_MINIMAL] / best_cpu[PY_PLAIN]:.2f}x CPU")
    if len(counts) != 1:
        print(f"bench_pagemap: readers disagree on (present, eligible): {sorted(counts)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
