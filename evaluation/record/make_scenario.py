"""Write the evaluation scenario of a recorded trace from its summary JSON.

The process sits on the slow node; its one anonymous VMA spans the trace's pages
(lowest to highest page touched, rounded up to 2 MiB); the top tier holds 25 % of
the working set (the pages the trace touches, rounded up to 4 KiB, at least the
simulator's 2 MiB minimum); the replay window is the recording's bin window.

    python3 make_scenario.py --summary evaluation/traces/redis-zipf.summary.json \
        --name redis-zipf --process redis-server --pid 6379 --what "..." \
        --out evaluation/scenarios/redis-zipf.toml
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PAGE_KIB = 4
TOP_SHARE = 0.25
MIN_NODE_KIB = 2048  # the simulator's smallest node
DURATION_S = 30


def round_up(value: int, step: int) -> int:
    return -(-value // step) * step


def scenario_toml(summary: dict[str, object], name: str, process: str, pid: int,
                  what: str, trace_rel: str) -> str:
    pages = int(str(summary["pages"]))
    span_kib = round_up(int(str(summary["span_pages"])) * PAGE_KIB, 2048)
    top_kib = max(MIN_NODE_KIB, round_up(int(pages * TOP_SHARE) * PAGE_KIB, PAGE_KIB))
    slow_kib = max(MIN_NODE_KIB, round_up(2 * span_kib, 2048))
    window_s = float(str(summary["window_s"]))
    trace_s = float(str(summary["trace_s"]))
    workload = (f'{{ kind = "trace", path = "{trace_rel}", trace_pid = {pid}, '
                f'window_s = {window_s:g}, hot_share = 0.9 }}')
    return f"""# {what}
# Recorded under valgrind's lackey by evaluation/record/record.sh (see
# docs/recorded-workloads.md): {pages} pages touched ({pages * PAGE_KIB // 1024} MiB),
# {int(str(summary["accesses"]))} data accesses over {trace_s:.3f} virtual s
# (1e8 data accesses = 1 s), binned per {window_s:g} s; the trace loops.
# The top tier holds 25 % of the pages touched. Written by
# evaluation/record/make_scenario.py from the trace's summary JSON.
name = "{name}"
description = "recorded trace: {process} ({pages * PAGE_KIB // 1024} MiB touched), top tier 25 %"
seed = 1
duration_s = {DURATION_S}
sample_interval_s = 0.5

[[nodes]]
nid = 0
capacity = "{top_kib}KiB"
cpus = true
tier = 4          # DRAM
latency_ns = 80

[[nodes]]
nid = 1
capacity = "{slow_kib}KiB"
cpus = false
tier = 67         # CXL: a slower, CPU-less node
latency_ns = 300

[[processes]]
name = "{process}"
placement = "slow"
vmas = [{{ kind = "anon", size = "{span_kib}KiB", workload = {workload} }}]
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--summary", type=Path, required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--process", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--what", required=True, help="the first comment line")
    ap.add_argument("--trace", default="", help="trace path relative to the scenario")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        summary = json.loads(args.summary.read_text())
    except (OSError, ValueError) as err:
        print(f"make_scenario: {args.summary}: {err}", file=sys.stderr)
        return 2
    trace_rel = args.trace or f"../traces/{args.name}.csv"
    args.out.write_text(scenario_toml(summary, args.name, args.process, args.pid, args.what,
                                      trace_rel))
    return 0


if __name__ == "__main__":
    sys.exit(main())
