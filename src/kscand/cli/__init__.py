"""The kscand command line: one module per subcommand, registered in COMMANDS.

Each subcommand module exposes add_parser(subparsers) and main(args) -> int.
Only this package prints or exits; errors become one line on stderr and a
non-zero exit status. Exit statuses, the same for every subcommand:

  0    done
  1    no daemon answered (none runs, no answer in time, the connection was lost),
       or the daemon itself failed while running (systemd restarts it on 1)
  2    bad input (arguments, config or scenario file, a request the daemon refused,
       a reply of a shape this kscand does not read) or a machine kscand cannot use
  3    `kscand topology` only: it read the machine, and kscand cannot promote on it
       (every blocker is printed; `kscand run` would refuse to start, with status 2)
  130  interrupted (SIGINT) in a one-shot command
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
from collections.abc import Sequence

from kscand import __version__
from kscand.errors import ConfigError, DaemonUnreachable, KscandError

# Subcommand name -> module under kscand.cli (imported lazily, so `kscand sim`
# does not pay for the live backend and vice versa).
COMMANDS: dict[str, str] = {
    "sim": "kscand.cli.sim",
    "topology": "kscand.cli.topology",
    "scan": "kscand.cli.scan",
    "record": "kscand.cli.record",
    "run": "kscand.cli.run",
    "status": "kscand.cli.status",
    "tune": "kscand.cli.tune",
    "scale": "kscand.cli.scale",
    "compare": "kscand.cli.compare",
    "report": "kscand.cli.report",
}

# Subcommand name -> its one-line help, for `kscand --help` without importing the
# subcommands (each module's add_parser uses the same line).
SUMMARIES: dict[str, str] = {
    "sim": "run kscand on the simulated two-tier machine",
    "topology": "show NUMA nodes, memory tiers and what kscand can do on this machine",
    "scan": "scan one process a few times and show what would be promoted (moves nothing)",
    "record": "record a process's page accesses into a trace kscand sim replays",
    "run": "run the kscand daemon in the foreground",
    "status": "show the running daemon's counters and per-process state",
    "tune": "show or change the running daemon's tunables",
    "scale": "set a running process's scan scale (0 = never scan it)",
    "compare": "compare kscand with no tiering, NUMA balancing, DAMON and the oracle",
    "report": "draw a trace's accesses over address and time (report heatmap)",
}

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANNOT_PROMOTE = 3


def one_line(text: str) -> str:
    """text with control characters escaped, so an error stays on one line whatever
    argument or path it quotes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"kscand: {one_line(message)}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The command line's parser: every subcommand's in full, or (only) that one's in full
    and the others by name and summary, so that a command imports only its own module."""
    parser = _Parser(prog="kscand", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"kscand {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, module_name in COMMANDS.items():
        if only is not None and name != only:
            sub.add_parser(name, help=SUMMARIES[name])
            continue
        module = importlib.import_module(module_name)
        module.add_parser(sub)
    return parser


def chosen_command(words: Sequence[str]) -> str:
    """The subcommand words name ('' when none does): the first word that is not an
    option (the top level has only --help and --version, neither takes a value)."""
    first = next((w for w in words if not w.startswith("-")), "")
    return first if first in COMMANDS else ""


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    in_main_thread = threading.current_thread() is threading.main_thread()
    if words[:1] == ["run"] and in_main_thread:  # before every subcommand's imports
        from kscand.cli import early_signals

        early_signals.install()
    parser = build_parser(only=chosen_command(words))
    args = parser.parse_args(words)
    module = importlib.import_module(COMMANDS[args.command])
    try:
        return int(module.main(args))
    except DaemonUnreachable as err:
        sys.stderr.write(f"kscand {args.command}: {one_line(str(err))}\n")
        return EXIT_FAILURE
    except ConfigError as err:
        sys.stderr.write(f"kscand {args.command}: {one_line(str(err))}\n")
        return EXIT_USAGE
    except KscandError as err:
        sys.stderr.write(f"kscand {args.command}: {one_line(str(err))}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("kscand: interrupted\n")
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
