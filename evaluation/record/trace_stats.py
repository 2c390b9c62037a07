"""Sizes and skew of trace files, read through kscand's own trace loader.

    .venv/bin/python evaluation/record/trace_stats.py evaluation/traces/redis-zipf.csv ...

Per file: records (rows), pages touched, accesses (the sum of count), virtual
duration, windows, span, and the share of the accesses that falls on the hottest
10 % and 25 % of the pages touched (over the whole trace), as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kscand.errors import ConfigError
from kscand.sim.workloads import load_trace


def top_share(per_page: npt.NDArray[np.float64], fraction: float) -> float:
    ranked = np.sort(per_page)[::-1]
    n = max(1, round(fraction * ranked.shape[0]))
    return float(ranked[:n].sum() / ranked.sum())


def row(path: str) -> str:
    trace = load_trace(path)
    _, inverse = np.unique(trace.page, return_inverse=True)
    per_page = np.bincount(inverse, weights=trace.count).astype(np.float64)
    pages = per_page.shape[0]
    span = int(trace.page.max() - trace.page.min()) + 1
    times = np.unique(trace.t_s)
    return (
        f"| {Path(path).name} | {trace.t_s.shape[0]:,} | {pages:,} ({pages * 4 // 1024} MiB) "
        f"| {int(trace.count.sum()):,} | {times.shape[0]} | {trace.t_s.max():.3f} s "
        f"| {span:,} | {top_share(per_page, 0.10):.1%} | {top_share(per_page, 0.25):.1%} |"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("traces", nargs="+")
    args = ap.parse_args()
    print("| trace | rows | pages touched | accesses | windows | last record | span, pages "
          "| hottest 10 % | hottest 25 % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for path in args.traces:
        try:
            print(row(path))
        except ConfigError as err:
            print(f"trace_stats: {err}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
