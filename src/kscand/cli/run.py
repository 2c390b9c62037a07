"""`kscand run`: the daemon in the foreground (systemd Type=simple), logging to stderr."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kscand.cli import SUMMARIES, early_signals
from kscand.cli.pathargs import path_arg, path_str_arg
from kscand.config import LOG_LEVELS, Config, load_config, parse_metrics_address
from kscand.daemon.metrics import require_prometheus_client

# Under systemd, stderr is a journal stream: journald adds the time and parses
# the "<N>" syslog priority prefix (sd-daemon(3)), so the line carries only
# the level and the message.
_SYSLOG_PRIORITY = {
    logging.DEBUG: 7,
    logging.INFO: 6,
    logging.WARNING: 4,
    logging.ERROR: 3,
    logging.CRITICAL: 2,
}


class JournalFormatter(logging.Formatter):
    """'<6>message': the sd-daemon priority prefix, no timestamp."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _SYSLOG_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def stderr_is_journal() -> bool:
    """Whether stderr is connected to the journal (JOURNAL_STREAM names its device:inode)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    dev, sep, ino = stream.partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == f"{dev}:{ino}"


def setup_logging(level: str, journal: bool) -> None:
    """Log records of the 'kscand' logger to stderr, in a systemd-friendly format."""
    handler = logging.StreamHandler(sys.stderr)
    if journal:
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s kscand[%(process)d] %(levelname)s: %(message)s")
        )
    logger = logging.getLogger("kscand")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help=SUMMARIES["run"],
        description=(
            "Scan every selected process's Accessed bits and promote hot pages from "
            "slow-tier nodes to the top tier, until SIGTERM or SIGINT. SIGHUP re-reads "
            "the config file. Needs root."
        ),
    )
    parser.add_argument("--config", type=path_arg, metavar="FILE", help="TOML config file")
    parser.add_argument(
        "--state-dir",
        type=path_arg,
        metavar="DIR",
        help="directory for the control socket and status.json (default: daemon.state_dir, "
        "/run/kscand)",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="override daemon.log_level")
    parser.add_argument(
        "--metrics",
        metavar="[HOST:]PORT",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (HOST an IP address, "
        "default 127.0.0.1; PORT 0 picks a free one; overrides daemon.metrics; needs "
        "kscand[metrics])",
    )
    parser.add_argument("--procfs", default="/proc", type=path_str_arg,
                        help="procfs root (default /proc; /host/proc in a container with "
                        "hostPID, see contrib/k8s)")
    parser.add_argument("--sysfs", default="/sys", type=path_str_arg,
                        help="sysfs root (default /sys; a writable host /sys mount in a "
                        "container)")
    parser.add_argument(
        "--sim",
        type=path_arg,
        metavar="SCENARIO",
        help="drive a simulated machine from a scenario file (or a shipped scenario's name: "
        "kscand sim --list), in real time, instead of "
        "this host (no root needed; for trying kscand out and for tests); without "
        "--config the scenario's [tunables] apply",
    )


def command_line_overrides(args: argparse.Namespace) -> Callable[[Config], Config]:
    """What --metrics and --state-dir change in a config (at start and on every reload)."""
    metrics = parse_metrics_address(args.metrics, "--metrics") if args.metrics else None
    state_dir = args.state_dir
    if state_dir is not None and not state_dir.is_absolute():
        state_dir = Path.cwd() / state_dir

    def apply(config: Config) -> Config:
        if metrics is not None:
            config = config.with_metrics(metrics)
        if state_dir is not None:
            config = config.with_state_dir(state_dir)
        return config

    return apply


def main(args: argparse.Namespace) -> int:
    from kscand.daemon.loop import Daemon
    from kscand.daemon.signals import run_foreground

    overrides = command_line_overrides(args)
    config = overrides(load_config(args.config) if args.config is not None else Config())
    if config.daemon.metrics is not None:
        require_prometheus_client()
    setup_logging(args.log_level or config.daemon.log_level, stderr_is_journal())
    if args.sim is not None:
        from kscand.backends import open_sim_backend
        from kscand.data import resolve_scenario

        backend = open_sim_backend(resolve_scenario(str(args.sim)))
        if args.config is None and backend.tunables is not None:
            config = dataclasses.replace(config, tunables=backend.tunables)
    else:
        from kscand.backends import open_live_backend

        backend = open_live_backend(config, args.procfs, args.sysfs)
    daemon = Daemon(
        config, backend, config_path=args.config, log_level_override=args.log_level,
        overrides=overrides,
    )
    return run_foreground(daemon, early_signals.take_hangups)
