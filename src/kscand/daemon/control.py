"""The daemon's control socket: a Unix stream socket speaking JSON lines.

A request is one JSON object on one line, ``{"cmd": "status"}``; the answer
is one JSON object on one line with ``"ok": true`` and the command's fields,
or ``"ok": false`` and a one-line ``"error"``. Only peers whose uid
(SO_PEERCRED) is root or the daemon's own may talk to it; the socket itself
is mode 0600 inside the 0700 state directory (kscand.daemon.statedir).

The server is one thread that serves one connection at a time with a short
timeout, so a stuck client cannot hold it for long and nothing grows
without bound.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kscand.errors import AccessDenied, ConfigError, DaemonUnreachable, KscandError

log = logging.getLogger("kscand.daemon.control")

Handler = Callable[[dict[str, Any]], dict[str, Any]]

REQUEST_MAX_BYTES = 64 << 10
CLIENT_TIMEOUT_S = 2.0
ACCEPT_POLL_S = 0.25
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


REPLY_MAX_BYTES = 64 << 20  # a status of ~100,000 processes; more is not a kscand reply


class DaemonNotRunning(DaemonUnreachable):
    """Nothing listens on the control socket."""


class ReplyShapeError(KscandError):
    """The daemon answered, but not with the fields this kscand expects (another version)."""


_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """value if it is of kind (bool is no int here); ReplyShapeError naming what otherwise."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        names = " or ".join(_KINDS.get(k, k.__name__) for k in kinds)
        raise ReplyShapeError(
            f"the daemon's reply: {what} is not {names} (a kscand of another version?)"
        )
    return value


def _expect_int_map(value: Any, what: str) -> dict[str, int]:
    mapping: dict[str, int] = _expect(value, dict, what)
    for name, count in mapping.items():
        _expect(count, int, f"{what}.{name}")
    return mapping


_NUMBER = (int, float)
# Fields of one process in a status, and their kinds (checked when present).
_PROCESS_FIELDS: dict[str, type | tuple[type, ...]] = {
    "pid": int, "start_time": int, "comm": str, "resume_vaddr": int, "full_scans": int,
    "scale": int, "scan_period_ms": _NUMBER, "scan_size_bytes": int, "queued_folios": int,
}


def check_status(reply: Any) -> dict[str, Any]:
    """A status object (socket reply or state file) with the shape `kscand status` reads."""
    status: dict[str, Any] = _expect(reply, dict, "status")
    for name in ("totals", "access_source_counters"):
        if status.get(name) is not None:
            _expect_int_map(status[name], name)
    for name in ("daemon", "queue", "tunables"):
        if status.get(name) is not None:
            _expect(status[name], dict, name)
    for name in ("uptime_s", "written_at", "snapshot_age_s"):
        if status.get(name) is not None:
            _expect(status[name], _NUMBER, name)
    queue = status.get("queue") or {}
    for name in ("queued_folios", "migrate_queue_max"):
        if name in queue:
            _expect(queue[name], int, f"queue.{name}")
    for i, proc in enumerate(_expect(status.get("processes", []), list, "processes")):
        _expect(proc, dict, f"processes[{i}]")
        for name, kind in _PROCESS_FIELDS.items():
            if proc.get(name) is not None:
                _expect(proc[name], kind, f"processes[{i}].{name}")
        if "counters" in proc:
            _expect_int_map(proc["counters"], f"processes[{i}].counters")
    return status


def check_reply(cmd: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The fields the client reads of a reply to cmd, checked; ReplyShapeError if not."""
    if cmd == "status":
        check_status(reply.get("status"))
    elif cmd in ("get", "set"):
        _expect(reply.get("tunables"), dict, "tunables")
    if cmd == "get":
        for i, f in enumerate(_expect(reply.get("fields"), list, "fields")):
            _expect(f, dict, f"fields[{i}]")
            for name in ("name", "unit", "doc"):
                _expect(f.get(name), str, f"fields[{i}].{name}")
    elif cmd == "scale":
        for i, proc in enumerate(_expect(reply.get("processes"), list, "processes")):
            _expect(proc, dict, f"processes[{i}]")
            _expect(proc.get("pid"), int, f"processes[{i}].pid")
            _expect(proc.get("scale"), int, f"processes[{i}].scale")
    elif cmd == "ping":
        _expect(reply.get("pid"), int, "pid")
    return reply


def peer_uid(conn: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    raw = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return int(uid)


def encode(message: dict[str, Any]) -> bytes:
    """One JSON line."""
    return json.dumps(message, separators=(",", ":"), sort_keys=True).encode() + b"\n"


def decode_request(line: bytes) -> dict[str, Any]:
    """A request object from one line; ConfigError with one line when it is not one."""
    try:
        request = json.loads(line)
    except (ValueError, RecursionError) as err:
        raise ConfigError(f"request is not JSON: {str(err)[:80]}") from err
    if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
        raise ConfigError('request must be a JSON object with a string "cmd"')
    return request


def answer(handler: Handler, line: bytes) -> dict[str, Any]:
    """The reply to one request line: the handler's fields, or a one-line error."""
    try:
        reply = handler(decode_request(line))
    except KscandError as err:
        return {"ok": False, "error": str(err), "error_kind": type(err).__name__}
    except Exception as err:  # a bug must not kill the server thread
        log.exception("control request failed")
        return {"ok": False, "error": f"internal error: {err}", "error_kind": "InternalError"}
    return {"ok": True, **reply}


def _remove_stale_socket(path: Path) -> None:
    """Unlink a socket left by a daemon that died; refuse when one still answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise KscandError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise KscandError(f"another kscand daemon is running (it answers on {path})")


class ControlServer:
    """The socket server thread; handler runs in it, so it must only read shared state."""

    def __init__(
        self,
        path: Path,
        handler: Handler,
        *,
        allowed_uids: Iterable[int] | None = None,
        thread_setup: Callable[[], None] | None = None,
    ) -> None:
        self.path = path
        self.handler = handler
        self.allowed_uids = frozenset(allowed_uids or {0, os.geteuid()})
        self.thread_setup = thread_setup
        self.nr_refused = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        """Bind the socket (mode 0600) and start serving in a thread."""
        _remove_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        except OSError as err:
            sock.close()
            raise KscandError(f"cannot bind {self.path}: {err.strerror}") from err
        finally:
            os.umask(old_umask)
        os.chmod(self.path, 0o600)
        sock.listen(8)
        sock.settimeout(ACCEPT_POLL_S)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="kscand-ctl", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread, close and unlink the socket."""
        self._closing.set()
        if self._sock is not None:
            with contextlib.suppress(OSError):  # wakes a blocked accept() at once
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=CLIENT_TIMEOUT_S + 1.0)
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self._sock = None

    def _serve(self) -> None:
        if self.thread_setup is not None:
            self.thread_setup()
        assert self._sock is not None
        while not self._closing.is_set():
            try:
                conn, _addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closing.is_set():
                    return
                raise
            with conn:
                self._serve_connection(conn)

    def _serve_connection(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        uid = peer_uid(conn)
        try:
            if uid not in self.allowed_uids:
                self.nr_refused += 1
                log.warning("control socket: refused a client with uid %d", uid)
                conn.sendall(encode({"ok": False, "error": f"uid {uid} may not control kscand",
                                     "error_kind": "AccessDenied"}))
                return
            reader = conn.makefile("rb")
            while not self._closing.is_set():
                line = reader.readline(REQUEST_MAX_BYTES + 1)
                if not line:
                    return
                if len(line) > REQUEST_MAX_BYTES:
                    conn.sendall(encode({"ok": False, "error": "request line too long"}))
                    return
                conn.sendall(encode(answer(self.handler, line)))
        except OSError:
            return  # the client went away or timed out: not the daemon's problem


def request(path: Path, message: dict[str, Any], timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon and return its reply (client side).

    Raises DaemonNotRunning when nothing listens, AccessDenied when we may
    not connect, and ConfigError or KscandError with the daemon's one-line
    error when it refused the request.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    with sock:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise DaemonNotRunning(
                f"no kscand daemon is running (nothing listens on {path})"
            ) from err
        except PermissionError as err:
            raise AccessDenied(f"cannot connect to {path}: {err.strerror} (run as root)") from err
        except OSError as err:
            raise DaemonNotRunning(f"cannot connect to {path}: {err.strerror}") from err
        try:
            # A daemon that refuses us replies and hangs up at once: read its reply anyway.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(encode(message))
            line = sock.makefile("rb").readline(REPLY_MAX_BYTES + 1)
        except TimeoutError as err:
            raise DaemonUnreachable(f"the daemon did not answer within {timeout_s:g} s") from err
        except OSError as err:
            raise DaemonUnreachable(f"lost the connection to the daemon: {err.strerror}") from err
    if not line:
        raise DaemonUnreachable("the daemon closed the connection without an answer")
    if len(line) > REPLY_MAX_BYTES:
        raise ReplyShapeError(f"the daemon's reply is longer than {REPLY_MAX_BYTES} bytes")
    if not line.endswith(b"\n"):
        raise DaemonUnreachable("the daemon closed the connection in the middle of its answer")
    reply = decode_reply(line)
    if not reply.get("ok"):
        error = str(reply.get("error", "request refused"))[:500]
        if reply.get("error_kind") == "ConfigError":
            raise ConfigError(error)
        if reply.get("error_kind") == "AccessDenied":
            raise AccessDenied(error)
        raise KscandError(error)
    return check_reply(str(message.get("cmd", "")), reply)


def decode_reply(line: bytes) -> dict[str, Any]:
    """One reply line as a JSON object; ReplyShapeError (one line) when it is not one."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError) as err:  # RecursionError: nesting past the limit
        raise ReplyShapeError(
            f"the daemon sent something that is not JSON: {str(err)[:80]}") from err
    if not isinstance(reply, dict):
        raise ReplyShapeError("the daemon sent something that is not a JSON object")
    return reply
