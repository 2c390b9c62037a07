"""The daemon's state directory: a private directory for the control socket and status.json.

kscand runs as root and the socket accepts commands that change what it
does, so the directory must be a real directory (not a symlink), owned by
the daemon's user and closed to everyone else (0700). The state file is
replaced atomically (write a temporary file, then rename) so a reader never
sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from kscand.errors import AccessDenied, ConfigError, KscandError
from kscand.paths import has_nul, untrusted_symlink

SOCKET_NAME = "kscand.sock"
STATE_FILE_NAME = "status.json"
STATE_FILE_MAX_BYTES = 64 << 20
SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) - 1 for the terminating NUL


def socket_path(state_dir: Path) -> Path:
    return state_dir / SOCKET_NAME


def state_file_path(state_dir: Path) -> Path:
    return state_dir / STATE_FILE_NAME


def state_dir_problem(st: os.stat_result, euid: int) -> str | None:
    """Why a directory with this lstat() must not hold the socket, or None."""
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if st.st_uid != euid:
        return f"is owned by uid {st.st_uid}, not by uid {euid}"
    return None


def prepare_state_dir(state_dir: Path) -> Path:
    """Create state_dir (mode 0700) or check an existing one; returns it.

    Refuses a symlink, a non-directory or a directory owned by another
    user (ConfigError naming daemon.state_dir); tightens a directory of our
    own that others could enter to 0700.
    """
    euid = os.geteuid()
    where = f"daemon.state_dir: {state_dir}"
    if len(str(socket_path(state_dir))) > SUN_PATH_MAX:
        raise ConfigError(f"{where}: too long for a Unix socket path ({SUN_PATH_MAX} bytes)")
    if has_nul(state_dir):
        raise ConfigError("daemon.state_dir: a path cannot hold a NUL byte")
    problem = untrusted_symlink(state_dir.parent, euid)
    if problem is not None:
        raise ConfigError(f"{where}: {problem}")
    try:
        os.mkdir(state_dir, 0o700)
    except FileExistsError:
        pass
    except PermissionError as err:
        raise AccessDenied(f"{where}: cannot create: {err.strerror} (run as root)") from err
    except OSError as err:
        raise ConfigError(f"{where}: cannot create: {err.strerror}") from err
    st = os.lstat(state_dir)
    problem = state_dir_problem(st, euid)
    if problem is not None:
        raise ConfigError(f"{where} {problem}; refusing to use it")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(state_dir, 0o700, follow_symlinks=False)
    return state_dir


def write_state_file(state_dir: Path, state: dict[str, Any]) -> None:
    """Replace state_dir/status.json atomically with state (JSON, mode 0600)."""
    final = state_file_path(state_dir)
    tmp = state_dir / f".{STATE_FILE_NAME}.{os.getpid()}.tmp"
    data = json.dumps(state, separators=(",", ":"), sort_keys=True).encode()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        with os.fdopen(fd, "wb", closefd=False) as fh:
            fh.write(data)
    finally:
        os.close(fd)
    os.rename(tmp, final)


def read_state_file(state_dir: Path) -> dict[str, Any]:
    """The last status the daemon wrote; KscandError with one line when there is none."""
    path = state_file_path(state_dir)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError as err:
        raise KscandError(f"no state file at {path}") from err
    except PermissionError as err:
        raise AccessDenied(f"cannot read {path}: {err.strerror} (run as root)") from err
    except OSError as err:
        raise KscandError(f"cannot read {path}: {err.strerror}") from err
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(STATE_FILE_MAX_BYTES)
    try:
        state = json.loads(data)
    except ValueError as err:
        raise KscandError(f"{path}: not a kscand state file ({err})") from err
    if not isinstance(state, dict):
        raise KscandError(f"{path}: not a kscand state file")
    return state


def remove_state(state_dir: Path) -> None:
    """Remove the socket and the state file (a clean stop leaves no stale state)."""
    for path in (socket_path(state_dir), state_file_path(state_dir)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
