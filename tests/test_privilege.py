"""Privilege and exposure: the live daemon refuses without its capabilities (tested by
really dropping them in a subprocess), the control socket refuses other users (a client
really running as `nobody`), state and trace paths refuse another user's symlinks."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import require
from daemon_fakes import DaemonThread, FakeMachine, fast_config, recording_handler

from kscand.config import config_from_text
from kscand.daemon.control import ControlServer
from kscand.daemon.statedir import prepare_state_dir, socket_path
from kscand.daemon.trace import open_trace
from kscand.errors import ConfigError
from kscand.live.features import Features, missing_capabilities

NOBODY = 65534
REPO = Path(__file__).resolve().parents[1]
# Imports the child needs, done while it is still root: after the switch to `nobody` it
# cannot read the interpreter's own library (under /root, mode 0700).
PRELUDE = """
import encodings.ascii, encodings.latin_1, encodings.utf_8, os, sys
import kscand.backends, kscand.cli, kscand.daemon.control, kscand.daemon.loop, kscand.live
import kscand.cli.run, kscand.daemon.signals, kscand.daemon.statedir
kscand.cli.build_parser()
"""
DROP_TO_NOBODY = f"""
os.setgroups([])
os.setgid({NOBODY})
os.setuid({NOBODY})
"""


def python(code: str, *, preexec: Callable[[], object] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
        cwd="/", env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        preexec_fn=preexec,
    )


@pytest.fixture
def root() -> None:
    require(os.geteuid() == 0, "needs root to drop privileges in a subprocess")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A directory `nobody` may enter (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="kscand-priv-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


# -- the capability check ------------------------------------------------------------


def test_missing_capabilities_from_capeff() -> None:
    assert missing_capabilities("Name:\tx\nCapEff:\t000001ffffffffff\n") == ()
    assert missing_capabilities("CapEff:\t0000000000000000\n") == (
        "CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE")
    without_admin = (1 << 41) - 1 & ~(1 << 21)
    assert missing_capabilities(f"CapEff:\t{without_admin:016x}\n") == ("CAP_SYS_ADMIN",)
    assert missing_capabilities("CapEff:\tzz\n") is None
    assert missing_capabilities("Name:\tx\n") is None


def test_privilege_sentence_names_what_is_missing_and_why() -> None:
    root_without = Features(missing_caps=("CAP_SYS_PTRACE",), euid=0, online_nodes=(0, 1),
                            slow_tier_nodes=(1,))
    reason = root_without.blocking_reason()
    assert reason == (
        "running as root without CAP_SYS_PTRACE (CAP_SYS_PTRACE: move_pages(2) on other "
        "users' processes); run kscand as root with these capabilities "
        "(contrib/kscand.service keeps them)")
    assert Features(missing_caps=(), euid=1000, is_root=False, online_nodes=(0, 1),
                    slow_tier_nodes=(1,)).blocking_reason() is None  # file capabilities


def first_blocker(stderr: str) -> str:
    """The first blocker in `kscand run`'s one-line refusal (which names every blocker:
    this host may have others, one NUMA node or no access source)."""
    line = stderr.removeprefix("kscand run: ").removesuffix("\n")
    head, numbered, rest = line.partition(" things block promotion here: (1) ")
    if not numbered:
        return line
    assert int(head) >= 2
    return rest.split("; (2) ")[0]


def test_live_run_as_nobody_is_refused_in_one_line(root: None, tmp_path: Path) -> None:
    state_dir = tmp_path / "s"
    proc = python(PRELUDE + DROP_TO_NOBODY + f"""
sys.exit(kscand.cli.main(["run", "--state-dir", {str(state_dir)!r}]))
""")
    assert proc.returncode == 2, proc.stderr
    assert first_blocker(proc.stderr).startswith(
        "running as uid 65534 without CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE (")
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not state_dir.exists()


def test_live_run_as_root_without_cap_sys_admin_is_refused(root: None, tmp_path: Path) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop, cap_sys_admin = 24, 21

    def drop_sys_admin() -> None:  # root after exec gets the bounding set: without it
        if libc.prctl(pr_capbset_drop, cap_sys_admin, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "PR_CAPBSET_DROP")

    state_dir = tmp_path / "s"
    proc = python(PRELUDE + f"""
sys.exit(kscand.cli.main(["run", "--state-dir", {str(state_dir)!r}]))
""", preexec=drop_sys_admin)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("kscand run: ") and proc.stderr.count("\n") == 1
    assert first_blocker(proc.stderr) == (
        "running as root without CAP_SYS_ADMIN (CAP_SYS_ADMIN: PFNs in "
        "/proc/PID/pagemap and /proc/kpageflags); run kscand as root with these capabilities "
        "(contrib/kscand.service keeps them)")
    assert not state_dir.exists()


# -- the control socket ------------------------------------------------------------------


def test_other_user_cannot_reach_the_daemons_socket(root: None, public_dir: Path) -> None:
    run = DaemonThread(fast_config(public_dir / "s"), FakeMachine())
    try:
        proc = python(PRELUDE + DROP_TO_NOBODY + f"""
sys.exit(kscand.cli.main(["status", "--state-dir", {str(public_dir / "s")!r}]))
""")
        assert proc.returncode == 2
        assert proc.stderr == (f"kscand status: cannot connect to {public_dir}/s/kscand.sock: "
                               "Permission denied (run as root)\n")
        assert run.daemon.status()["daemon"]["control_refused"] == 0  # never got that far
    finally:
        run.stop()


def test_socket_refuses_another_uid_by_peer_credentials(root: None, public_dir: Path) -> None:
    # Even if the socket file were opened up (a mistake), the daemon checks who connects.
    calls: list[str] = []
    path = public_dir / "kscand.sock"
    server = ControlServer(path, recording_handler(calls, {"ok": True}))
    server.start()
    try:
        path.chmod(0o666)
        proc = python(PRELUDE + DROP_TO_NOBODY + f"""
from kscand.daemon.control import request
from kscand.errors import AccessDenied
try:
    request(__import__("pathlib").Path({str(path)!r}), {{"cmd": "set", "tunables": {{}}}})
except AccessDenied as err:
    print(err)
""")
        assert proc.stdout == "uid 65534 may not control kscand\n", proc.stderr
    finally:
        server.close()
    assert calls == [] and server.nr_refused == 1


# -- paths planted by other users ------------------------------------------------------------


def test_state_dir_and_trace_through_another_users_symlink_are_refused(
    root: None, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    os.lchown(link, NOBODY, NOBODY)
    with pytest.raises(ConfigError, match=r"link is a symlink owned by uid 65534; refusing"):
        prepare_state_dir(link / "kscand")
    assert not (real / "kscand").exists()
    with pytest.raises(ConfigError, match=r"^daemon.trace: .*link is a symlink owned by uid"):
        open_trace(str(link / "trace.jsonl"), lambda: 0)
    assert not (real / "trace.jsonl").exists()
    # The final component of a trace path is never followed, whoever owns it.
    (tmp_path / "victim").write_text("keep\n")
    (real / "t.jsonl").symlink_to(tmp_path / "victim")
    with pytest.raises(ConfigError, match="daemon.trace: cannot open"):
        open_trace(str(real / "t.jsonl"), lambda: 0)
    assert (tmp_path / "victim").read_text() == "keep\n"
    # Root's own symlinks are the administrator's: followed.
    own = tmp_path / "own"
    own.symlink_to(real)
    assert prepare_state_dir(own / "kscand") == own / "kscand"
    assert socket_path(own / "kscand").parent.is_dir()


def test_config_state_dir_is_checked_when_the_daemon_starts(root: None, tmp_path: Path) -> None:
    link = tmp_path / "run"
    link.symlink_to(tmp_path)
    os.lchown(link, NOBODY, NOBODY)
    config = config_from_text(f'[daemon]\nstate_dir = "{link}/kscand"\n')
    run_error = None
    from daemon_fakes import fake_backend

    from kscand.daemon.loop import Daemon

    daemon = Daemon(config, fake_backend(FakeMachine()))
    try:
        daemon.start()
    except ConfigError as err:
        run_error = str(err)
    finally:
        daemon.close()
    assert run_error is not None and "symlink owned by uid 65534" in run_error
    assert not (tmp_path / "kscand").exists()
