"""`kscand scale PID SCALE`: set a running process's scan scale (the series' prctl analog).

SCALE is 0..10: 0 never scans the process, 1 scans it at its adaptive period,
higher values stretch the period by (SCALE - 1) / 9 (the default is the
default_scale tunable, 8). The setting lasts as long as the process.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from kscand.cli import SUMMARIES, one_line
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.pathargs import path_arg
from kscand.config import DEFAULT_STATE_DIR
from kscand.daemon.control import DaemonNotRunning, request
from kscand.daemon.statedir import socket_path

EXIT_NOT_RUNNING = 1


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "scale",
        help=SUMMARIES["scale"],
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("pid", type=int, help="process id")
    parser.add_argument("scale", type=int, help="0..10")
    parser.add_argument(
        "--state-dir", type=path_arg, default=DEFAULT_STATE_DIR, metavar="DIR",
        help=f"the daemon's state directory (default {DEFAULT_STATE_DIR})",
    )
    add_json_argument(parser, "the daemon's reply (pid, start_time, scale per process)")


def main(args: argparse.Namespace) -> int:
    message = {"cmd": "scale", "pid": args.pid, "scale": args.scale}
    try:
        reply = request(socket_path(args.state_dir), message)
    except DaemonNotRunning as err:
        sys.stderr.write(f"kscand scale: {one_line(str(err))}\n")
        return EXIT_NOT_RUNNING
    write_json(args.json, {"processes": reply["processes"]})
    if to_stdout(args.json):
        return 0
    for proc in reply["processes"]:
        sys.stdout.write(f"pid {proc['pid']}: scale {proc['scale']}\n")
    return 0
