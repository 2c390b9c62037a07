"""The live machine for reading one process, nothing moved (`kscand scan`, `kscand record`).

Imported by those subcommands only when they run: it loads the live backend.
"""

from __future__ import annotations

from kscand.errors import ConfigError, ProcessGone, Unsupported
from kscand.live import LinuxMachine, ProcessSelection, Topic, probe
from kscand.live.procfs import ProcStat
from kscand.machine import ProcessId


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


def user_process(machine: LinuxMachine, pid: int) -> tuple[ProcessId, ProcStat]:
    """pid's identity and stat; one line when it does not exist or is a kernel thread."""
    try:
        stat = machine.procs.stat(pid)
    except ProcessGone:
        raise ProcessGone(f"no process with pid {pid}") from None
    if stat.is_kernel_thread:
        raise ConfigError(f"pid {pid} ({stat.comm}) is a kernel thread: no user pages")
    return machine.process_id(pid), stat
