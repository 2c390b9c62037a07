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
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.pathargs import path_arg
from kscand.cli.tables import fit_numbers, print_table, size, text
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
    add_json_argument(parser, "the tunables, their fields and what changed")


def main(args: argparse.Namespace) -> int:
    changes = dict(parse_assignment(text) for text in args.assignments)
    path = socket_path(args.state_dir)
    try:
        before = request(path, {"cmd": "get"})
        after = request(path, {"cmd": "set", "tunables": changes}) if changes else before
    except DaemonNotRunning as err:
        sys.stderr.write(f"kscand tune: {one_line(str(err))}\n")
        return EXIT_NOT_RUNNING
    old, new = before["tunables"], after["tunables"]
    write_json(args.json, tune_json(old, new, before["fields"], list(changes)))
    if to_stdout(args.json):
        return 0
    if not changes:
        print_list(Console(), before["tunables"], before["fields"])
        return 0
    for name in changes:
        value, previous = new.get(name, "?"), old.get(name, "?")
        was = "" if previous == value else f" (was {previous})"
        sys.stdout.write(one_line(f"{name} = {value}{was}") + "\n")
    return 0


def tune_json(old: dict[str, Any], new: dict[str, Any], fields: list[dict[str, Any]],
              asked: list[str]) -> dict[str, Any]:
    """--json: the resulting tunables, their fields (unit, range, doc) and, per
    tunable asked for, its value before and after (`changed`: whether it differs)."""
    return {
        "tunables": new,
        "fields": fields,
        "set": {name: {"value": new.get(name), "was": old.get(name),
                       "changed": new.get(name) != old.get(name)} for name in asked},
    }


def print_list(console: Console, values: dict[str, Any], fields: list[dict[str, Any]]) -> None:
    """The tunables' table; when its meaning column would fold narrower than
    TEXT_MIN_WIDTH (80 columns, a pipe), the table without it and each meaning below
    as a paragraph."""
    table = list_table(values, fields)
    if fit_numbers(table) <= console.width:
        print_table(console, table)
        return
    print_table(console, list_table(values, fields, meanings=False))
    for f in fields:
        console.print(f"[bold]{text(f['name'])}[/]: {text(f['doc'])}", highlight=False)


def list_table(values: dict[str, Any], fields: list[dict[str, Any]],
               meanings: bool = True) -> Table:
    """Name, value, unit, range and (meanings) meaning, its doc, of each tunable."""
    table = Table(title="kscand tunables", title_justify="left")
    columns = ("name", "value", "unit", "range") + (("meaning",) if meanings else ())
    for column in columns:
        table.add_column(column, justify="right" if column in ("value", "range") else "left",
                         no_wrap=column == "name")
    for f in fields:
        lo, hi = f.get("min"), f.get("max")
        unit = f["unit"]
        span = "" if lo is None and hi is None else f"{shown(unit, lo)} .. {shown(unit, hi)}"
        row = [text(f["name"]), shown(unit, values.get(f["name"])), text(unit), span]
        table.add_row(*row, *([text(f["doc"])] if meanings else []))
    return table


def shown(unit: str, value: object) -> str:
    """A tunable's value (or bound) for a table: a bytes one as a size."""
    if unit == "bytes" and isinstance(value, int) and not isinstance(value, bool):
        return size(value)
    return text(value)
