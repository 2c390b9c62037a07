"""A config reload (SIGHUP), as a pure plan: what of a freshly read config the running
daemon takes, and what changed that only a restart applies."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from kscand.config import Config


@dataclass(frozen=True, slots=True)
class Reload:
    """The outcome of re-reading the config file."""

    config: Config  # the running config with what a reload changes (not the tunables)
    needs_restart: tuple[str, ...]  # the sections that changed but apply after a restart
    rules_changed: bool  # the [[process]] rules differ


def plan_reload(running: Config, new: Config) -> Reload:
    """What a reload from running to new changes: the daemon's log level, status interval
    and trace level and the [[process]] rules; the tunables the caller applies itself."""
    needs_restart = tuple(
        name
        for name, old_value, new_value in (
            ("[scan]", running.scan, new.scan),
            ("[topology]", running.topology, new.topology),
            ("daemon.trace", running.daemon.trace, new.daemon.trace),
            ("daemon.state_dir", running.daemon.state_dir, new.daemon.state_dir),
            ("daemon.metrics", running.daemon.metrics, new.daemon.metrics),
        )
        if old_value != new_value
    )
    daemon = dataclasses.replace(
        running.daemon,
        log_level=new.daemon.log_level,
        status_interval_ms=new.daemon.status_interval_ms,
        trace_level=new.daemon.trace_level,
    )
    return Reload(
        config=dataclasses.replace(running, daemon=daemon, process_rules=new.process_rules),
        needs_restart=needs_restart,
        rules_changed=new.process_rules != running.process_rules,
    )
