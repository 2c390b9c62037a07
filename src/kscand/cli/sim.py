"""`kscand sim SCENARIO`: run the engine on the simulated machine and summarize."""

from __future__ import annotations

import argparse
import heapq
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kscand.cli import SUMMARIES
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.scenarioargs import add_scenario_argument, print_scenario_list, scenario_path
from kscand.cli.tables import print_table, text
from kscand.errors import ConfigError
from kscand.machine import PAGE_SIZE
from kscand.sim.run import ProcSummary, SimReport, hot_fraction, run_scenario
from kscand.sim.scenario import load_scenario
from kscand.units import format_bytes

# Counters shown in the summary besides the series' nr_kscand_* (all go to --json).
SHOWN_PREFIXES = ("nr_kscand_", "promoted_pages_", "vma_", "page_", "drop_", "move_fail_", "scan_")
# Rows of the per-process table by default (--top): the processes with the most accesses.
DEFAULT_TOP = 20


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "sim",
        help=SUMMARIES["sim"],
        description="Run the kscand engine on a simulated machine described by a scenario file "
        "or a shipped scenario's name (--list).",
    )
    add_scenario_argument(parser)
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    add_json_argument(parser, "the full report (timeline, processes, counters)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, metavar="N",
                        help="per-process table: the N processes with the most accesses/s "
                        f"(default {DEFAULT_TOP}; 0 = all); --json always has every process")


def main(args: argparse.Namespace) -> int:
    # Wide enough for the tables when the output is a pipe or a CI log.
    console = Console(stderr=False, width=None if sys.stdout.isatty() else 132)
    if args.list:
        print_scenario_list(console)
        return 0
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed: must not be negative, got {args.seed}")
    if args.top < 0:
        raise ConfigError(f"--top: must not be negative, got {args.top}")
    scenario = load_scenario(scenario_path(args))
    progress = Progress(
        TextColumn(f"[bold]{text(scenario.name)}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% of {task.fields[virtual]} virtual"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=args.quiet,
        transient=True,
    )
    with progress:
        task = progress.add_task("sim", total=1.0, virtual=f"{scenario.duration_s:g}s")
        report = run_scenario(
            scenario, seed=args.seed, progress=lambda f: progress.update(task, completed=f)
        )
    write_json(args.json, report.to_json(), indent=1)
    if to_stdout(args.json):
        return 0
    print_report(console, report, args.top)
    return 0


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def print_report(console: Console, report: SimReport, top: int = DEFAULT_TOP) -> None:
    """The summary tables: over time, per process (the top processes by accesses, 0 =
    all), counters."""
    console.print(
        f"[bold]{text(report.scenario)}[/] seed {report.seed}: {report.duration_s:g} s virtual "
        f"in {report.wall_s:.1f} s wall, peak RSS {report.peak_rss_mib:.0f} MiB",
        highlight=False,
    )
    if report.nothing_to_promote is not None:
        console.print(f"[yellow]note:[/] {text(report.nothing_to_promote)} (every share below "
                      "is 100 % by construction, not kscand's doing)", highlight=False)
    print_table(console, _timeline_table(report))
    shown = top_processes(report.procs, top)
    print_table(console, _process_table(shown))
    if len(shown) < len(report.procs):
        console.print(f"{len(report.procs) - len(shown):,} of {len(report.procs):,} processes "
                      f"not shown (the {len(shown):,} with the most accesses/s are; --top 0 "
                      "for all)", highlight=False)
    print_table(console, _counter_table(report.counters))


def _timeline_table(report: SimReport) -> Table:
    table = Table(title="Share of accesses served by the top tier (all processes)")
    for col in ("time", "top tier", "oracle", "of oracle", "hot pages on top", "mean latency",
                "promoted"):
        table.add_column(col, justify="right")
    samples = report.samples
    for i in timeline_marks([s.t_s for s in samples]):
        s = samples[i]
        of_oracle = s.top_share / s.oracle_share if s.oracle_share else 0.0
        table.add_row(
            f"{s.t_s:.1f}s", _pct(s.top_share), _pct(s.oracle_share), _pct(of_oracle),
            _pct(hot_fraction(s)), f"{s.latency_ns:.0f} ns",
            format_bytes(report.promoted_pages_at[i] * PAGE_SIZE),
        )
    table.caption = (f"time to 90% of the oracle: {_secs(report.t90_s)}"
                     if report.nothing_to_promote is None
                     else "time to 90% of the oracle: n/a (nothing to promote)")
    return table


def timeline_marks(times_s: list[float], nr_rows: int = 10) -> list[int]:
    """Sample indices to show: dense early (where promotion happens), then spread out.

    Times double from the first interval up to the end: 0, dt, 2dt, 4dt, ...
    topped up with evenly spaced rows and always the last sample.
    """
    if not times_s:
        return []
    last = len(times_s) - 1
    marks = {0, last}
    step = 1
    while step < last and len(marks) < nr_rows // 2 + 1:
        marks.add(step)
        step *= 2
    spread = max(1, last // max(1, nr_rows - len(marks)))
    for i in range(0, last, spread):
        if len(marks) >= nr_rows:
            break
        marks.add(i)
    return sorted(marks)


def top_processes(procs: list[ProcSummary], top: int) -> list[ProcSummary]:
    """The top processes by accesses/s, most first (ties in report order); 0 = all."""
    if top == 0 or top >= len(procs):
        return sorted(procs, key=lambda p: -p.rate_per_s)
    return heapq.nsmallest(top, procs, key=lambda p: -p.rate_per_s)


def _process_table(procs: list[ProcSummary]) -> Table:
    table = Table(title="Processes")
    for col in ("process", "size", "hot", "accesses/s", "top tier", "oracle", "hot on top",
                "t90", "promoted", "PTEs scanned", "move failures"):
        table.add_column(col, justify="left" if col in ("process", "move failures") else "right")
    for p in procs:
        failures = ", ".join(f"{k.removeprefix('move_fail_')}={v}"
                             for k, v in p.move_failures.items()) or "-"
        table.add_row(
            text(f"{p.label}[{p.pid}]" + (" exited" if p.exited else "")),
            format_bytes(p.nr_pages * PAGE_SIZE), format_bytes(p.nr_hot * PAGE_SIZE),
            f"{p.rate_per_s:,.0f}", _pct(p.top_share), _pct(p.oracle_share),
            _pct(p.hot_on_top), _secs(p.t90_s),
            format_bytes(p.promoted_pages * PAGE_SIZE), f"{p.ptes_scanned:,}", text(failures),
        )
    return table


def _counter_table(counters: dict[str, int]) -> Table:
    table = Table(title="Counters (pages unless named otherwise)")
    table.add_column("counter")
    table.add_column("value", justify="right")
    for name, value in counters.items():
        if name.startswith(SHOWN_PREFIXES) and (value or name.startswith("nr_kscand_")):
            table.add_row(text(name), f"{value:,}")
    return table
