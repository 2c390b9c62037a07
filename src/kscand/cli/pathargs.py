"""argparse types for path arguments: a path the kernel cannot take is a usage error.

A NUL byte cannot be in a path; open() would raise ValueError deep inside
the command. Refused here, it is one line and exit status 2 like any other
bad argument.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def path_str_arg(text: str) -> str:
    """A path argument kept as text (procfs/sysfs roots)."""
    if "\0" in text:
        raise argparse.ArgumentTypeError("a path cannot hold a NUL byte")
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return text


def path_arg(text: str) -> Path:
    """A path argument."""
    return Path(path_str_arg(text))
