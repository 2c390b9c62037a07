"""The live machine for reading one process, nothing moved (`kscand scan`, `kscand record`).

Imported by those subcommands only when they run: it loads the live backend.
"""

from __future__ import annotations

from kscand.errors import Unsupported
from kscand.live import LinuxMachine, ProcessSelection, Topic, probe


def open_one_process(procfs: str, sysfs: str, pid: int, access_source: str) -> LinuxMachine:
    """A LinuxMachine that lists only pid, with the access source asked for.

    Refuses (Unsupported, one line) when kscand lacks the privilege or the kernel
    shows no page flags: nothing could be read, and the reason is said up front.
    """
    features = probe(procfs, sysfs)
    for finding in features.findings():
        if finding.blocking and finding.topic in (Topic.PRIVILEGE, Topic.PAGE_FLAGS):
            raise Unsupported(finding.sentence)
    return LinuxMachine(
        procfs, sysfs,
        selection=ProcessSelection(pids=(pid,)),
        access_source=access_source,
        self_pid=-1,
    )
