"""What the daemon logs when it starts: what it scans, with which access source, where
its socket and endpoint are, its rules, tunables and trace."""

from __future__ import annotations

import logging
import os

from kscand import __version__
from kscand.backends import Backend
from kscand.config import Config
from kscand.core.tunables import Tunables
from kscand.daemon.statedir import socket_path

log = logging.getLogger("kscand")


def log_start(config: Config, backend: Backend, tunables: Tunables,
              metrics_url: str | None) -> None:
    """The start-up lines, at INFO."""
    scan = config.scan
    selection = [f"pids {list(scan.pids)}"] if scan.pids else []
    selection += [f"cgroups {list(scan.cgroups)}"] if scan.cgroups else []
    selection += [f"commands {list(scan.comm_patterns)}"] if scan.comm_patterns else []
    log.info(
        "kscand %s starting (pid %d) on the %s machine; scanning %s",
        __version__,
        os.getpid(),
        backend.kind,
        "; ".join(selection) or "every user process",
    )
    log.info("access source: %s (%s)", backend.access_source, backend.access_source_reason)
    log.info("control socket %s", socket_path(config.daemon.state_dir))
    if metrics_url is not None:
        log.info("metrics endpoint %s", metrics_url)
    if config.process_rules:
        log.info("[[process]] rules: %d (first match sets a new process's scale)",
                 len(config.process_rules))
    log.info("tunables: %s", " ".join(f"{k}={v}" for k, v in tunables.as_dict().items()))
    if config.daemon.trace:
        log.info(
            "trace events (JSON lines, level %s) to %s",
            config.daemon.trace_level, config.daemon.trace,
        )
