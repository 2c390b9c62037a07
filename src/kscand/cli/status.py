"""`kscand status`: the running daemon's counters, per-process state and tunables.

Asks the daemon over its control socket; when the socket does not answer
(busy, or gone while the daemon still runs) it reads state_dir/status.json,
which the daemon rewrites every few seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from kscand.cli import SUMMARIES, one_line
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.pathargs import path_arg
from kscand.cli.tables import pages_size, print_table, size, text
from kscand.config import DEFAULT_STATE_DIR
from kscand.core.stats import SERIES_COUNTERS
from kscand.daemon.control import DaemonNotRunning, ReplyShapeError, check_status, request
from kscand.daemon.statedir import read_state_file, socket_path, state_file_path
from kscand.errors import AccessDenied, KscandError

EXIT_NOT_RUNNING = 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "status",
        help=SUMMARIES["status"],
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    add_json_argument(parser, "the daemon's raw status (a lone --json: to stdout)", bare=True)
    parser.add_argument(
        "--state-dir", type=path_arg, default=DEFAULT_STATE_DIR, metavar="DIR",
        help=f"the daemon's state directory (default {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--top", type=int, default=20, metavar="N",
        help="processes to show, most promoted first (0 = all; default 20)",
    )


def pid_alive(pid: object) -> bool:
    """Whether a process with this pid exists (the state file's writer)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fetch_status(state_dir: Path) -> tuple[dict[str, Any], str]:
    """(status, where it came from): the socket, else a state file whose writer still runs."""
    try:
        reply = request(socket_path(state_dir), {"cmd": "status"})
        return dict(reply["status"]), "socket"
    except (AccessDenied, ReplyShapeError):
        raise
    except KscandError as err:
        socket_error = err
    try:
        state = read_state_file(state_dir)
    except KscandError:
        raise socket_error from None
    state = check_status(state)
    if not pid_alive(state.get("pid")):
        raise DaemonNotRunning(
            f"no kscand daemon is running (stale {state_file_path(state_dir)} "
            f"of pid {state.get('pid')})"
        )
    return state, f"state file ({socket_error})"


def main(args: argparse.Namespace) -> int:
    if args.top < 0:
        sys.stderr.write("kscand status: --top must not be negative\n")
        return 2
    try:
        status, source = fetch_status(args.state_dir)
    except DaemonNotRunning as err:
        sys.stderr.write(f"kscand status: {one_line(str(err))}\n")
        return EXIT_NOT_RUNNING
    write_json(args.json, status, sort_keys=True)
    if to_stdout(args.json):
        return 0
    render(Console(), status, source, args.top)
    return 0


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{days}d"] if days else []
    parts += [f"{hours}h"] if hours or days else []
    parts += [f"{minutes}m", f"{secs}s"] if not days else [f"{minutes}m"]
    return "".join(parts)


def render(console: Console, status: dict[str, Any], source: str, top: int) -> None:
    """Print the status as a header and four tables."""
    console.print(
        f"kscand {text(status.get('version', '?'))} pid {text(status.get('pid'))} "
        f"[bold]{text(status.get('state', '?'))}[/bold], "
        f"up {_duration(status.get('uptime_s') or 0)}, {text(status.get('machine', '?'))} machine",
        highlight=False,
    )
    console.print(
        f"access source: {text(status.get('access_source'))} "
        f"({text(status.get('access_source_reason'))})",
        highlight=False,
    )
    access_counters = status.get("access_source_counters") or {}
    if access_counters:
        listed = ", ".join(f"{text(name)} {value:,}" for name, value in access_counters.items())
        console.print(f"access source counters: {listed}", highlight=False)
    if source != "socket":
        age = time.time() - float(status.get("written_at") or time.time())
        console.print(f"[yellow]from the {text(source)}, written {age:.0f} s ago[/yellow]")
    print_table(console, counters_table(status.get("totals") or {}))
    print_table(console, daemon_table(status))
    print_table(console, processes_table(status.get("processes") or [], top), keep=2)
    print_table(console, tunables_table(status.get("tunables") or {}))


def counters_table(totals: dict[str, int]) -> Table:
    """The series' nr_kscand_* counters first, then every other non-zero counter."""
    table = Table(title="Counters (base pages)", title_justify="left")
    table.add_column("counter", no_wrap=True)
    table.add_column("total", justify="right")
    names: list[str] = [n for n in SERIES_COUNTERS if n in totals]
    names += sorted(n for n in totals if n not in SERIES_COUNTERS and totals[n])
    for name in names:
        table.add_row(text(name), f"{totals[name]:,}")
    return table


def daemon_table(status: dict[str, Any]) -> Table:
    table = Table(title="Daemon", title_justify="left")
    table.add_column("item", no_wrap=True)
    table.add_column("value", justify="right")
    for name, value in (status.get("daemon") or {}).items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        table.add_row(text(name), text(shown))
    queue = status.get("queue") or {}
    queued, cap = queue.get("queued_folios", 0), queue.get("migrate_queue_max", 0)
    table.add_row("queued folios", f"{queued:,} of {cap:,}")
    return table


_PROC_COUNTS = (("scans", "nr_kscand_mm_scans"),)
_PROC_SIZES = (  # base-page counters, shown as sizes
    ("slow tier", "nr_kscand_slowtier"),
    ("top tier", "nr_kscand_toptier"),
    ("hot", "nr_kscand_hotpage"),
    ("candidates", "nr_kscand_migadded"),
    ("promoted", "nr_kscand_migrated"),
    ("failed", "nr_kscand_migrate_failed"),
)


def processes_table(processes: list[dict[str, Any]], top: int) -> Table:
    """One row per scanned process, most promoted pages first."""
    def key(p: dict[str, Any]) -> tuple[int, int, int]:
        counters = p.get("counters") or {}
        return (
            -counters.get("nr_kscand_migrated", 0),
            -counters.get("nr_kscand_hotpage", 0),
            p.get("pid") or 0,
        )

    ordered = sorted(processes, key=key)
    shown = ordered if top == 0 else ordered[:top]
    title = f"Processes ({len(shown)} of {len(processes)})"
    table = Table(title=title, title_justify="left")
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("command", no_wrap=True)
    for header, _name in _PROC_COUNTS + _PROC_SIZES:
        table.add_column(header, justify="right")
    table.add_column("in queue", justify="right")
    table.add_column("full scans", justify="right")
    table.add_column("scale", justify="right")
    table.add_column("period ms", justify="right")
    table.add_column("resume at", justify="right")
    for p in shown:
        counters = p.get("counters") or {}
        table.add_row(
            str(p.get("pid")),
            text(p.get("comm") or ""),
            *(f"{counters.get(name, 0):,}" for _header, name in _PROC_COUNTS),
            *(pages_size(counters.get(name, 0)) for _header, name in _PROC_SIZES),
            f"{p.get('queued_folios') or 0:,}",
            str(p.get("full_scans") or 0),
            str(p.get("scale", "")),
            f"{p.get('scan_period_ms') or 0:,.0f}",
            f"{p.get('resume_vaddr') or 0:#x}",
        )
    return table


def tunables_table(tunables: dict[str, Any]) -> Table:
    table = Table(title="Tunables", title_justify="left")
    table.add_column("name", no_wrap=True)
    table.add_column("value", justify="right")
    for name, value in tunables.items():
        table.add_row(text(name), tunable_value(name, value))
    return table


def tunable_value(name: str, value: object) -> str:
    """A tunable's value for a table: a *_bytes one as a size."""
    if name.endswith("_bytes") and isinstance(value, int) and not isinstance(value, bool):
        return size(value)
    return text(value)
