"""`--json FILE` for every one-shot command: the data the tables show, machine-readable.

One convention: `--json FILE` writes the JSON to FILE and the tables still go to
stdout; `--json -` writes the JSON to stdout instead of the tables. Keys are
stable, numbers are numbers, and a key carries its unit (_bytes, _pages, _ms).
Errors stay one line on stderr with the usual exit status, with --json too.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from kscand.cli.pathargs import path_arg
from kscand.errors import ConfigError

STDOUT = Path("-")
JSON_HELP = "also write {what} as JSON to FILE ('-': to stdout, instead of the tables)"


def add_json_argument(parser: Any, what: str, *, bare: bool = False) -> None:
    """--json FILE; bare: a lone --json means stdout (`kscand status --json`, kept)."""
    extra = {"nargs": "?", "const": STDOUT} if bare else {}
    parser.add_argument("--json", type=path_arg, default=None, metavar="FILE",
                        help=JSON_HELP.format(what=what), **extra)


def to_stdout(dest: Path | None) -> bool:
    """Whether --json goes to stdout (then the command prints no tables)."""
    return dest == STDOUT


def write_json(dest: Path | None, data: Any, *, indent: int = 2, sort_keys: bool = False) -> None:
    """data as JSON to dest (nothing when --json was not given)."""
    if dest is None:
        return
    body = json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n"
    if to_stdout(dest):
        sys.stdout.write(body)
        return
    try:
        dest.write_text(body)
    except OSError as err:
        raise ConfigError(f"--json: cannot write {dest}: {err.strerror}") from err
