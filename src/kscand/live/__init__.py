"""The live Linux machine: the only code of kscand that touches /proc, /sys and syscalls."""

from __future__ import annotations

from kscand.live.clock import LiveClock
from kscand.live.damon import DAMON_YOUNG_SCANS
from kscand.live.features import Features, Finding, Topic, probe
from kscand.live.linux import AccessSource, LinuxMachine, NoAccessSource
from kscand.live.move import PageMover
from kscand.live.processes import ProcessSelection

__all__ = [
    "DAMON_YOUNG_SCANS",
    "AccessSource",
    "Features",
    "Finding",
    "LinuxMachine",
    "LiveClock",
    "NoAccessSource",
    "PageMover",
    "ProcessSelection",
    "Topic",
    "probe",
]
