"""Runs inside the QEMU guest: one scenario, written to OUT/result.json for the host.

    python -m testbed.inguest promote --source page_idle --out DIR   # end-to-end tests
    python -m testbed.inguest full --source damon --out DIR
    python -m testbed.inguest exchange --source damon --out DIR
    python -m testbed.inguest compare --mechanism numab --out DIR    # make vm-compare

The scenarios are in testbed/scenarios.py (promote, full, exchange) and
testbed/compare_guest.py (compare); the mechanisms vm-compare runs in
testbed/mechanisms.py; the workload and daemon processes in testbed/actors.py; what
they read and write in testbed/guestio.py.

The workload is tests/guest/workload.py; time 0 is the moment it has bound and
touched its memory on node 1 and renamed itself kscand-wl (kscand's config selects
that name, so the daemon sees the process from then on). Every run writes
result.json, also when something went wrong ("errors"); the daemon's stderr goes
to daemon.log and its last state file to status.json. Nothing here imports numpy:
this process only starts and watches others.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from testbed.actors import Tunables, Workload, WorkloadSpec, kscand_config
from testbed.compare_guest import COMPARE_SCENARIOS, cpu_delta, run_compare, vmstat_delta
from testbed.guestio import first_time_at, hot_fraction_on, load_u64_npy
from testbed.mechanisms import MECHANISMS, make_mechanism
from testbed.scenarios import (
    EXCHANGE_TUNABLES,
    FAST_TUNABLES,
    run_exchange,
    run_full,
    run_promote,
)

__all__ = [
    "EXCHANGE_TUNABLES",
    "FAST_TUNABLES",
    "MECHANISMS",
    "Workload",
    "WorkloadSpec",
    "cpu_delta",
    "first_time_at",
    "hot_fraction_on",
    "kscand_config",
    "load_u64_npy",
    "main",
    "make_mechanism",
    "run_compare",
    "vmstat_delta",
]  # fmt: skip
SCENARIOS: dict[str, Callable[..., None]] = {
    "promote": run_promote,
    "full": run_full,
    "exchange": run_exchange,
}


def parse_tunable(item: str) -> tuple[str, int | float]:
    """NAME=NUMBER (an int if it reads as one)."""
    name, sep, value = item.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=NUMBER, got {item!r}")
    try:
        return name, int(value)
    except ValueError:
        pass
    try:
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name}: not a number: {value!r}") from None


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.inguest",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="scenario", required=True)
    for name in SCENARIOS:
        p = sub.add_parser(name)
        p.add_argument("--source", choices=sorted(FAST_TUNABLES), required=True)
        p.add_argument("--out", type=Path, required=True)
        p.add_argument(
            "--tunable",
            action="append",
            default=[],
            metavar="NAME=NUMBER",
            type=parse_tunable,
            help="override one of the scenario's tunables (repeatable)",
        )
    p = sub.add_parser("compare")
    p.add_argument("--mechanism", choices=MECHANISMS, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--scenario",
        dest="compare_scenario",
        choices=COMPARE_SCENARIOS,
        default="promote",
        help="exchange: a cold filler fills node 0 first (kscand then runs with "
        f"{EXCHANGE_TUNABLES})",
    )
    p.add_argument("--duration-s", type=float, default=90.0)
    p.add_argument("--size-mib", type=int, default=256)
    p.add_argument("--layout", default="chunks:4")
    p.add_argument("--hot-pct", type=float, default=10.0)
    p.add_argument("--fast", action="store_true", help="kscand with the end-to-end tunables")
    p.add_argument(
        "--flush-tlb",
        action="store_true",
        help="the workload flushes its TLB before each pass (see workload.py)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if args.scenario in SCENARIOS:
        SCENARIOS[args.scenario](args.source, args.out, None, dict(args.tunable))
        return 0
    spec = WorkloadSpec(
        size_mib=args.size_mib,
        layout=args.layout,
        hot_pct=args.hot_pct,
        report_interval_s=0,
        flush_tlb=args.flush_tlb,
    )
    source = args.mechanism.removeprefix("kscand-")
    tunables: Tunables = dict(FAST_TUNABLES.get(source, {})) if args.fast else {}
    if args.compare_scenario == "exchange" and args.mechanism.startswith("kscand-"):
        tunables.update(EXCHANGE_TUNABLES)
    run_compare(args.mechanism, args.out, args.duration_s, spec, tunables, args.compare_scenario)
    return 0


if __name__ == "__main__":
    sys.exit(main())
