"""`kscand compare SCENARIO`: kscand against its baselines on the same simulated machine."""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import textwrap
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

import kscand
from kscand.cli import SUMMARIES
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.scenarioargs import add_scenario_argument, print_scenario_list, scenario_path
from kscand.cli.tables import print_table, text
from kscand.errors import ConfigError
from kscand.evaluation.compare import Comparison, check_jobs, compare
from kscand.evaluation.policies import DEFAULT_POLICIES, POLICY_NAMES, parse_sweep, plan_runs
from kscand.evaluation.report import COLUMNS, row_of, write_report
from kscand.sim.run import nothing_to_promote
from kscand.sim.scenario import load_scenario

TABLE_WIDTH = 240  # columns of the table when stdout is not a terminal


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "compare",
        help=SUMMARIES["compare"],
        description="Run policies (and parameter sweeps) on the same simulated scenario and "
        "seed; print a table, optionally write an HTML report with plots and the raw JSON.",
    )
    add_scenario_argument(parser)
    parser.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                        help=f"comma-separated, from {','.join(POLICY_NAMES)} "
                        f"(default: {','.join(DEFAULT_POLICIES)})")
    parser.add_argument("--sweep", action="append", default=[], metavar="NAME=V1,V2,...",
                        help="run the parameter's policy once per value (repeat for a grid); "
                        "NAME: a kscand tunable, scan_size or scan_period (fixed: the "
                        "adaptive clamps follow), or POLICY.FIELD of a baseline (numab, "
                        "numab-promote, damon, damon-hot)")
    parser.add_argument("--seed", type=int, default=None, help="override the scenario's seed")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="override the scenario's virtual duration")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs in parallel worker processes (default: 2)")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="run on a Ray cluster instead of local workers: alone, a local "
                        "Ray; ADDRESS: HOST:PORT or ray://HOST:PORT of a running head "
                        "(needs pip install 'kscand[ray]'; trace paths must exist on the "
                        "workers)")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR",
                        help="write DIR/report.html, PNG plots and DIR/report.json")
    parser.add_argument("--no-plots", action="store_true",
                        help="with --report: no PNG plots (no matplotlib needed)")
    add_json_argument(parser, "the raw comparison")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    if args.list:
        print_scenario_list(Console(width=TABLE_WIDTH))
        return 0
    if args.seed is not None and args.seed < 0:
        raise ConfigError(f"--seed: must not be negative, got {args.seed}")
    jobs = check_jobs(args.jobs)
    sweeps = [parse_sweep(text) for text in args.sweep]
    runs = plan_runs([p.strip() for p in args.policies.split(",") if p.strip()], sweeps)
    scenario = load_scenario(scenario_path(args))
    if args.duration is not None:
        if not 0 < args.duration <= 1e7:
            raise ConfigError(f"--duration: must be in (0, 1e7] seconds, got {args.duration}")
        scenario = dataclasses.replace(scenario, duration_s=args.duration)
    if args.report is not None and not args.no_plots:
        _require_matplotlib()
    pool = None
    if args.ray is not None:  # connect before any run: a bad address fails now
        from kscand.evaluation.raypool import ray_pool

        pool = ray_pool(args.ray or None)
    progress = Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=args.quiet,
        transient=True,
    )
    shown = [r for r in runs if r.policy != "oracle"] or runs
    with progress:
        tasks: list[TaskID] = [progress.add_task(text(r.label), total=1.0) for r in shown]

        def on_progress(index: int, fraction: float) -> None:
            if index < len(tasks):
                progress.update(tasks[index], completed=fraction)

        comparison = compare(scenario, runs, sweeps, seed=args.seed, jobs=jobs,
                             progress=on_progress, pool=pool)
    comparison.commit = source_commit()
    if to_stdout(args.json):
        write_json(args.json, comparison.to_json(), indent=1)
        if args.report is not None:
            write_report(comparison, args.report, plots=not args.no_plots)
        return 0
    console = Console()
    if not console.is_terminal:  # a log or a pipe: no wrapping at 80 columns
        console = Console(width=TABLE_WIDTH)
    reason = nothing_to_promote(scenario)
    if reason is not None:
        console.print(f"[yellow]note:[/] {text(reason)} (every policy's share is 100 % by "
                      "construction)", highlight=False)
    print_table(console, comparison_table(comparison))
    write_json(args.json, comparison.to_json(), indent=1)
    if args.report is not None:
        written = write_report(comparison, args.report, plots=not args.no_plots)
        console.print(f"report: {text(written[-1])}", highlight=False)
    return 0


def _require_matplotlib() -> None:
    """Fail before the runs, not after them, when plots are asked for but cannot be drawn."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--report: plots need matplotlib: pip install 'kscand[plot]' (or pass --no-plots)"
        ) from None


def comparison_table(comparison: Comparison) -> Table:
    ended = next((r.trace_end_s for r in comparison.runs), None)
    until = (f" (its traces end at {ended:g} s)"
             if ended is not None and ended <= comparison.duration_s else "")
    table = Table(title=f"{text(comparison.scenario)}: seed {comparison.seed}, "
                  f"{comparison.duration_s:g} s virtual{until}, {comparison.wall_s:.1f} s wall")
    rows = [row_of(run, comparison.duration_s) for run in comparison.runs]
    for i, col in enumerate(COLUMNS):
        # Cells never wrap (a number split over two lines misreads); headers may.
        widest = max((len(row[i]) for row in rows), default=0)
        header = col if col == "run" else textwrap.fill(col, width=max(widest, 8))
        table.add_column(header, justify="left" if col == "run" else "right", no_wrap=True)
    for row in rows:
        table.add_row(*(text(cell) for cell in row))
    table.caption = (
        "acc-wt: each sample interval weighted by the accesses it served. % of static best / "
        "% of oracle: the acc-wt share against the best static placement in hindsight / the "
        "per-sample oracle. traffic / min: pages moved against the fewest the static best "
        "needs. ping-pong: pages moved >2 times in 60 s (their share of all moves). acc / "
        "promo: top-tier accesses per promoted page. cold: promoted pages outside the hot set "
        "at promotion / at the end. CPU: cost model in kscand.evaluation.costs. Every column: "
        "report.html, docs/evaluation.md.")
    return table


def source_commit() -> str:
    """The git commit of the kscand source tree, when it is a checkout (else "")."""
    root = Path(kscand.__file__).resolve().parents[2]
    try:
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""
