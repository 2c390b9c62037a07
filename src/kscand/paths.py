"""Path checks for a root daemon: never follow a symlink that another user planted.

A root process that opens /etc/kscand.toml, /run/kscand or a trace file would
follow a symlink wherever it points; whoever owns the symlink then decides
what kscand reads or overwrites. Symlinks owned by root or by the daemon's
own user are trusted (the administrator made them); any other owner is
refused, for every component of the path (the rule fs.protected_symlinks
applies only in sticky world-writable directories).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def untrusted_symlink(path: Path, euid: int) -> str | None:
    """Why path must not be followed, or None: the first component that is a symlink
    owned by neither root nor euid. Components that do not exist are not checked
    (opening them reports that)."""
    absolute = Path(os.path.abspath(path))
    for component in [*reversed(absolute.parents), absolute]:
        try:
            st = os.lstat(component)
        except (OSError, ValueError):
            return None
        if stat.S_ISLNK(st.st_mode) and st.st_uid not in (0, euid):
            return f"{component} is a symlink owned by uid {st.st_uid}; refusing to follow it"
    return None


def has_nul(path: Path | str) -> bool:
    """Whether a path holds a NUL byte (the kernel cannot take it: a usage error)."""
    return "\0" in str(path)
