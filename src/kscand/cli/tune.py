"""`kscand tune`: list the running daemon's tunables, or change them (the sysfs knobs' analog).

Values are validated here and again by the daemon, exactly like the config
file's [tunables]; they take effect from the daemon's next step and last
until it re-reads its config file (SIGHUP) or restarts.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from kscand.cli import SUMMARIES, one_line
from kscand.cli.pathargs import path_arg
from kscand.cli.tables import print_table, text
from kscand.config import DEFAULT_STATE_DIR
from kscand.core.tunables import parse_assignment
from kscand.daemon.control import DaemonNotRunning, request
from kscand.daemon.statedir import socket_path

EXIT_NOT_RUNNING = 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tune",
        help=SUMMARIES["tune"],
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument(
        "assignments", nargs="*", metavar="NAME=VALUE",
        help="tunables to set, e.g. scan_sleep_ms=50 scan_size_bytes=256MiB",
    )
    parser.add_argument(
        "--state-dir", type=path_arg, default=DEFAULT_STATE_DIR, metavar="DIR",
        help=f"the daemon's state directory (default {DEFAULT_STATE_DIR})",
    )


def main(args: argparse.Namespace) -> int:
    changes = dict(parse_assignment(text) for text in args.assignments)
    path = socket_path(args.state_dir)
    try:
        before = request(path, {"cmd": "get"})
        if not changes:
            print_table(Console(), list_table(before["tunables"], before["fields"]))
            return 0
        after = request(path, {"cmd": "set", "tunables": changes})
    except DaemonNotRunning as err:
        sys.stderr.write(f"kscand tune: {one_line(str(err))}\n")
        return EXIT_NOT_RUNNING
    old, new = before["tunables"], after["tunables"]
    for name in changes:
        value, previous = new.get(name, "?"), old.get(name, "?")
        was = "" if previous == value else f" (was {previous})"
        sys.stdout.write(one_line(f"{name} = {value}{was}") + "\n")
    return 0


def list_table(values: dict[str, Any], fields: list[dict[str, Any]]) -> Table:
    """Name, value, unit, range and description of each tunable."""
    table = Table(title="kscand tunables", title_justify="left")
    for column in ("name", "value", "unit", "range", "description"):
        table.add_column(column, justify="right" if column in ("value", "range") else "left",
                         no_wrap=column == "name")
    for f in fields:
        lo, hi = f.get("min"), f.get("max")
        span = "" if lo is None and hi is None else f"{lo} .. {hi}"
        table.add_row(text(f["name"]), text(values.get(f["name"])), text(f["unit"]),
                      text(span), text(f["doc"]))
    return table
