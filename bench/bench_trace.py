"""Trace loading benchmark: kscand's trace loader against a plain csv reader, side by side.

Run: .venv/bin/python bench/bench_trace.py [--rows 6400000] [--gzip]
Target (issue 13): a 6.4 M row trace loaded in <= 2 s with <= 300 MB peak RSS.

Writes a trace of --rows records in the format of evaluation/traces/phases.csv
(time_s,pid,0x address,count; a header line), then loads it in fresh processes,
one per way, each timing itself and reporting its own peak RSS:

- reference: Python's csv reader, one record at a time, into numpy arrays (the
  same work: hex addresses, pages, a sort by time);
- kscand, parse: kscand.sim.tracefile.load_trace with the cache off;
- kscand, first load: with an empty cache (parse, then write the .npy cache);
- kscand, cached: a second process loading the same file from the cache.

Prints time and peak RSS of each, and the reference's over kscand's as ratios.
"""

from __future__ import annotations

import argparse
import gzip
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TARGET_S = 2.0
TARGET_RSS_MIB = 300.0
BASE = 0x7F3A_0000_0000
CHILD = "--child"


def write_trace(path: Path, nr_rows: int, compress: bool, seed: int = 1) -> None:
    """nr_rows records over 600 s of 4 pids and 1 M pages, in blocks (bounded memory)."""
    rng = np.random.default_rng(seed)
    opener = gzip.open if compress else open
    block = 1 << 20
    with opener(path, "wt") as out:  # type: ignore[operator]
        out.write("time_s,pid,address,count\n")
        for lo in range(0, nr_rows, block):
            n = min(block, nr_rows - lo)
            t = np.sort(rng.random(n)) * (600.0 / (nr_rows / n)) + 600.0 * lo / nr_rows
            pid = rng.integers(4000, 4004, n)
            addr = BASE + rng.integers(0, 1 << 20, n) * 4096
            count = rng.integers(1, 2000, n)
            lines = [f"{a:.6f},{b},{c:#x},{d}" for a, b, c, d in zip(
                t.tolist(), pid.tolist(), addr.tolist(), count.tolist(), strict=True)]
            out.write("\n".join(lines) + "\n")


def reference_load(path: str) -> int:
    """The same work with a plain csv reader: numpy arrays of time, pid, page, count."""
    import csv

    t_s: list[float] = []
    pid: list[int] = []
    page: list[int] = []
    count: list[float] = []
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:  # type: ignore[operator]
        rows = csv.reader(f)
        next(rows)  # the header
        for row in rows:
            t_s.append(float(row[0]))
            pid.append(int(row[1]))
            page.append(int(row[2], 0) >> 12)
            count.append(float(row[3]))
    t = np.array(t_s, dtype=np.float64)
    order = np.argsort(t, kind="stable")
    arrays = (t[order], np.array(pid, dtype=np.int32)[order],
              np.array(page, dtype=np.int64)[order], np.array(count, dtype=np.float32)[order])
    return int(arrays[0].shape[0])


def kscand_load(path: str) -> int:
    from kscand.sim.tracefile import load_trace

    trace = load_trace(path)
    # Touch every array (a cached trace is memory-mapped): the work is done, not deferred.
    checksum = float(trace.t_s.sum()) + float(trace.page.sum()) + float(trace.count.sum())
    checksum += float(trace.pid.sum())
    return trace.nr_rows if checksum == checksum else 0


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child(way: str, path: str) -> None:
    """In a fresh process: load once, print 'rows wall_s cpu_s peak_rss_mib'."""
    start, cpu = time.perf_counter(), time.process_time()
    rows = reference_load(path) if way == "reference" else kscand_load(path)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"{rows} {elapsed:.3f} {cpu:.3f} {peak_rss_mib():.1f}")


def measure(way: str, path: Path, cache: str) -> tuple[int, float, float, float]:
    """(rows, wall s, CPU s, peak RSS MiB) of one load in a fresh process."""
    env = {**os.environ, "KSCAND_TRACE_CACHE": cache}
    out = subprocess.run([sys.executable, __file__, CHILD, way, str(path)], env=env,
                         capture_output=True, text=True, check=True)
    rows, wall, cpu, rss = out.stdout.split()
    return int(rows), float(wall), float(cpu), float(rss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=6_400_000)
    parser.add_argument("--gzip", action="store_true", help="a .csv.gz trace")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kscand-bench-trace-") as tmp:
        path = Path(tmp) / ("trace.csv.gz" if args.gzip else "trace.csv")
        start = time.perf_counter()
        write_trace(path, args.rows, args.gzip)
        print(f"trace: {args.rows:,} rows, {path.stat().st_size / (1 << 20):.0f} MiB"
              f"{' gzip' if args.gzip else ''}, written in {time.perf_counter() - start:.1f} s")
        cache = str(Path(tmp) / "cache")
        ref = measure("reference", path, "off")
        results = [
            ("kscand, parse (cache off)", measure("kscand", path, "off")),
            ("kscand, first load (parse + cache write)", measure("kscand", path, cache)),
            ("kscand, cached (another process)", measure("kscand", path, cache)),
        ]
    print(f"{'way':<44}{'rows':>11}{'wall':>9}{'CPU':>9}{'peak RSS':>12}{'ref/this CPU':>14}"
          f"{'ref/this RSS':>14}")
    print(f"{'reference: csv reader -> numpy':<44}{ref[0]:>11,}{ref[1]:>8.2f}s{ref[2]:>8.2f}s"
          f"{ref[3]:>8.0f} MiB")
    for name, (rows, wall, cpu, rss) in results:
        if rows != ref[0]:
            raise SystemExit(f"{name}: {rows} rows, the reference read {ref[0]}")
        print(f"{name:<44}{rows:>11,}{wall:>8.2f}s{cpu:>8.2f}s{rss:>8.0f} MiB"
              f"{ref[2] / cpu:>13.1f}x{ref[3] / rss:>13.1f}x")
    print(f"target (6.4 M rows): <= {TARGET_S:g} s, <= {TARGET_RSS_MIB:g} MB; CPU time is the "
          "fair measure on a shared machine, wall time includes waiting for a core")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == CHILD:
        child(sys.argv[2], sys.argv[3])
    else:
        main()
