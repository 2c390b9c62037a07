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


def png_arg(text: str) -> Path:
    """A FILE.png argument: not a directory (matplotlib would write DIR.png and kscand
    say DIR), not another format (x.txt was a traceback)."""
    path = path_arg(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: is a directory; name a FILE.png in it")
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"{text}: the heatmap is a PNG file: name it FILE.png")
    return path
