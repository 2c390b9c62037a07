"""The status snapshot: everything `kscand status` shows, as plain JSON data.

build_snapshot() is pure: it reads the engine and what the loop hands it (the
header, the daemon's counters, each process's command name) and changes nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kscand.core.counters import EngineCounter
from kscand.core.engine import Kscand
from kscand.machine import ProcessId

# Counters the engine counts outside SERIES_COUNTERS that readers of the status rely on:
# present from the first status on, zero until counted (a reader never meets a KeyError).
ALWAYS_REPORTED_TOTALS = (EngineCounter.MM_ENTER, EngineCounter.MM_EXIT)

DAEMON_COUNTER_NAMES = (
    "steps",
    "long_steps",
    "abandoned_steps",
    "step_errors",
    "reloads",
    "reload_errors",
    "tunable_changes",
    "state_write_errors",
)


@dataclass
class DaemonCounters:
    """The daemon's own counters (the engine's are in engine.stats)."""

    counts: Counter[str] = field(default_factory=Counter)
    step_ns_last: int = 0
    step_ns_max: int = 0
    consecutive_failures: int = 0


def reported_totals(totals: dict[str, int]) -> dict[str, int]:
    """The engine's totals with every ALWAYS_REPORTED_TOTALS name present."""
    out: dict[str, int] = {name: 0 for name in ALWAYS_REPORTED_TOTALS}
    out.update(totals)
    return dict(sorted(out.items()))


def daemon_section(counters: DaemonCounters, extra: Mapping[str, int]) -> dict[str, Any]:
    """The snapshot's "daemon" object: the loop's counters, then extra (socket, trace)."""
    return {
        **{k: counters.counts[k] for k in DAEMON_COUNTER_NAMES},
        "step_ms_last": round(counters.step_ns_last / 1e6, 3),
        "step_ms_max": round(counters.step_ns_max / 1e6, 3),
        **extra,
    }


def build_snapshot(
    header: Mapping[str, Any],
    daemon: Mapping[str, Any],
    engine: Kscand,
    comms: Mapping[ProcessId, str],
) -> dict[str, Any]:
    """header's fields, the "daemon" object, then the engine's queue, tunables, totals and
    one entry per listed process (comm from comms, '' when unknown)."""
    processes = [
        {
            "pid": slot.proc.pid,
            "start_time": slot.proc.start_time,
            "comm": comms.get(slot.proc, ""),
            "resume_vaddr": slot.resume_vaddr,
            "full_scans": slot.full_scans,
            "scale": slot.scale,
            "scan_period_ms": round(slot.scan_period_ms, 1),
            "scan_size_bytes": slot.scan_size_bytes,
            "target_nid": slot.target_nid,
            "queued_folios": engine.migrator.queued(slot.proc),
            "counters": dict(sorted(engine.stats.of(slot.proc).items())),
        }
        for slot in engine.mm_list
    ]
    return {
        **header,
        "daemon": dict(daemon),
        "queue": {
            "queued_folios": engine.migrator.nr_queued,
            "migrate_queue_max": engine.tunables.migrate_queue_max,
        },
        "tunables": engine.tunables.as_dict(),
        "totals": reported_totals(engine.stats.snapshot()),
        "processes": processes,
    }
