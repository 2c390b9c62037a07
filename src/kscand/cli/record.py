"""`kscand record --pid PID --duration S --interval S --out FILE`: a live process's page
accesses as a trace `kscand sim` replays (kscand.inspect.record).

Exit status: 0 when every interval was recorded, and also when the process exited
after at least one whole interval (the file holds those; the summary says the
process ended); 2 on bad input, a machine without an access source, or a process
gone before its first interval ended; 130 on SIGINT (the file is closed whole, up
to the last interval, and its trailer says it was interrupted).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from kscand.cli import SUMMARIES
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.pathargs import path_arg, path_str_arg
from kscand.cli.tables import text
from kscand.config import ACCESS_SOURCES
from kscand.errors import ConfigError, ProcessGone, Unsupported
from kscand.machine import PAGE_SIZE, PMD_SIZE
from kscand.units import format_bytes

if TYPE_CHECKING:
    from kscand.inspect.record import RecordSummary

EXIT_INTERRUPTED = 130
MAX_INTERVALS = 1_000_000  # a replay keeps per-window arrays: bounded like the trace limits
ADDRESS_MODES = ("compact", "vaddr")  # kscand.inspect.record.AddressMode


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "record",
        help=SUMMARIES["record"],
        description="Record which pages of a process are accessed, interval by interval, "
        "with the live access source (page_idle or DAMON), into a trace file `kscand sim` "
        "replays (a process with kind = \"trace\"). The first pass only clears the "
        "Accessed bits. Nothing is moved.",
    )
    parser.add_argument("--pid", type=int, required=True, help="process to record")
    parser.add_argument("--duration", type=float, required=True, metavar="SECONDS",
                        help="how long to record (whole intervals)")
    parser.add_argument("--interval", type=float, required=True, metavar="SECONDS",
                        help="one interval: the replay's window_s")
    parser.add_argument("--out", type=out_arg, required=True, metavar="FILE",
                        help="the trace file (gzip when it ends in .gz)")
    parser.add_argument("--source", choices=ACCESS_SOURCES, default="auto",
                        help="where Accessed bits come from (default auto)")
    parser.add_argument("--addresses", choices=ADDRESS_MODES, default="compact",
                        help="compact: 2 MiB chunks end to end, replayable (default); "
                        "vaddr: virtual addresses")
    parser.add_argument("--procfs", default="/proc", type=path_str_arg,
                        help="procfs root (default /proc)")
    parser.add_argument("--sysfs", default="/sys", type=path_str_arg,
                        help="sysfs root (default /sys)")
    add_json_argument(parser, "the summary")


def out_arg(value: str) -> Path:
    """--out FILE: not a directory (the file is opened once the process is found)."""
    path = path_arg(value)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{value}: is a directory; name a file in it")
    return path


def _seconds(value: float, name: str) -> float:
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--{name}: must be a positive number of seconds, got {value:g}")
    return value


def main(args: argparse.Namespace) -> int:
    duration_s = _seconds(args.duration, "duration")
    interval_s = _seconds(args.interval, "interval")
    if interval_s > duration_s:
        raise ConfigError(f"--interval: {interval_s:g} s is longer than --duration "
                          f"{duration_s:g} s")
    if duration_s / interval_s > MAX_INTERVALS:
        raise ConfigError(f"--duration {duration_s:g} s makes more than {MAX_INTERVALS:,} "
                          f"intervals of {interval_s:g} s")

    from kscand.cli.oneprocess import open_one_process, user_process
    from kscand.inspect.record import (
        AddressMode,
        RecordEnd,
        RecordHeader,
        TraceOutput,
        intervals_of,
        kernel_release,
        record_process,
    )

    with open_one_process(args.procfs, args.sysfs, args.pid, args.source) as machine:
        if machine.access_source_name == "none":
            raise Unsupported(f"no access source: {machine.access_source_reason}")
        proc, stat = user_process(machine, args.pid)
        header = RecordHeader(
            kernel_release=kernel_release(), access_source=machine.access_source_name,
            interval_s=interval_s, duration_s=duration_s, pid=args.pid, comm=stat.comm,
            page_size=PAGE_SIZE,
            start_utc=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            addresses=AddressMode(args.addresses))
        out = TraceOutput(args.out)
        try:
            summary = record_process(machine, proc, out, header,
                                     intervals_of(duration_s, interval_s))
        finally:
            out.close()
    what = f"pid {args.pid} ({stat.comm})"
    if summary.ended is RecordEnd.GONE and not summary.intervals:
        raise ProcessGone(f"{what} exited before the first interval ended; {args.out} holds "
                          "no records")
    if not to_stdout(args.json):
        print_summary(Console(), summary, what, args.out, args.pid, interval_s)
    write_json(args.json, record_json(summary, args, stat.comm, machine.access_source_name,
                                      interval_s))
    return EXIT_INTERRUPTED if summary.ended is RecordEnd.INTERRUPTED else 0


def replay_vma_bytes(summary: RecordSummary) -> int:
    """The anonymous VMA a replay needs: the recorded span, rounded up to 2 MiB."""
    return -(-summary.span_bytes // PMD_SIZE) * PMD_SIZE


def replay_snippet(summary: RecordSummary, out: Path, pid: int, interval_s: float) -> str:
    """The scenario's VMA line that replays the file."""
    return (f'vmas = [{{ kind = "anon", size = "{replay_vma_bytes(summary) >> 10}KiB", '
            f'workload = {{ kind = "trace", path = {json.dumps(str(out))}, trace_pid = {pid}, '
            f"window_s = {interval_s:g} }} }}]")


def print_summary(console: Console, summary: RecordSummary, what: str, out: Path, pid: int,
                  interval_s: float) -> None:
    """What was written, why it ended, what was skipped and how to replay it."""
    from kscand.inspect.record import RecordEnd

    ended = {
        RecordEnd.DONE: "",
        RecordEnd.GONE: "; [yellow]the process ended[/]: the file holds the whole intervals "
                        "before",
        RecordEnd.INTERRUPTED: "; [yellow]interrupted[/]: the file holds the whole intervals "
                               "before",
    }[summary.ended]
    console.print(
        f"recorded {text(what)}: {summary.intervals} of {summary.planned_intervals} "
        f"interval(s) of {interval_s:g} s, {summary.records:,} record(s) to {text(out)}{ended}",
        highlight=False)
    if summary.late_intervals:
        console.print(f"[yellow]{summary.late_intervals} pass(es) started late[/]: the longest "
                      f"pass took {summary.longest_pass_s:.3f} s (intervals were longer)",
                      highlight=False)
    skips = ", ".join(f"{name}={n:,}" for name, n in
                      sorted((summary.page_skips + summary.vma_skips).items()))
    if skips:
        console.print(f"skipped over {summary.passes} pass(es): {skips}", highlight=False)
    if not summary.records:
        console.print("no page was found accessed: the file has no records to replay",
                      highlight=False)
        return
    console.print(f"span {format_bytes(summary.span_bytes)}; replay it with "
                  f"{text(replay_snippet(summary, out, pid, interval_s))}",
                  highlight=False, soft_wrap=True)


def record_json(summary: RecordSummary, args: argparse.Namespace, comm: str, source: str,
                interval_s: float) -> dict[str, Any]:
    """--json: the summary, keys with units."""
    return {
        "pid": args.pid,
        "comm": comm,
        "out": str(args.out),
        "access_source": source,
        "addresses": args.addresses,
        "interval_s": interval_s,
        "ended": summary.ended.value,
        "intervals": summary.intervals,
        "planned_intervals": summary.planned_intervals,
        "records": summary.records,
        "passes": summary.passes,
        "late_intervals": summary.late_intervals,
        "longest_pass_ms": round(summary.longest_pass_s * 1e3, 3),
        "span_bytes": summary.span_bytes,
        "replay_vma_bytes": replay_vma_bytes(summary),
        "skips": dict(sorted((summary.page_skips + summary.vma_skips).items())),
    }
