"""The kscand engine: the scan loop of the series over any Machine.

One step() is one wake-up of the daemon: refresh the mm list, scan up to
mms_to_scan processes (each within its scan budget), then let the migrator
drain the candidate queues. The caller sleeps scan_sleep_ms between steps
(virtual time in the simulator, an interruptible wait in the daemon).
"""

from __future__ import annotations

from dataclasses import dataclass

from kscand.machine import Machine, ProcessId
from kscand.migrator import Migrator
from kscand.mmlist import MmList
from kscand.scanner import ScanEnd, Scanner
from kscand.stats import MigrateDrop, Stats
from kscand.tunables import Tunables


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step did."""

    nr_scanned_mms: int
    nr_promoted_pages: int
    entered: tuple[ProcessId, ...]
    exited: tuple[ProcessId, ...]


class Kscand:
    """Scanner + migrator + mm list, driven one step at a time."""

    def __init__(self, machine: Machine, tunables: Tunables, stats: Stats | None = None) -> None:
        self.machine = machine
        self.tunables = tunables
        self.stats = stats if stats is not None else Stats()
        self.mm_list = MmList()
        self.migrator = Migrator(machine, self.stats, tunables.migrate_queue_max)
        self.scanner = Scanner(machine, self.migrator, self.stats)

    def set_tunables(self, tunables: Tunables) -> None:
        """Apply new tunables; they take effect from the next step (the sysfs analog)."""
        self.tunables = tunables
        self.migrator.queue_max = tunables.migrate_queue_max

    def step(self) -> StepResult:
        """One wake-up: sync the mm list, scan a pass, migrate what was found."""
        entered, exited = self._sync()
        if not self.tunables.scan_enabled:
            return StepResult(0, 0, entered, exited)
        nr_scanned = self.scan_pass()
        promoted = self.migrator.migrate(self.machine.topology(), self.tunables)
        return StepResult(nr_scanned, promoted, entered, exited)

    def _sync(self) -> tuple[tuple[ProcessId, ...], tuple[ProcessId, ...]]:
        entered, exited = self.mm_list.sync(self.machine.processes())
        for proc in exited:
            self.migrator.drop(proc, MigrateDrop.PROC_GONE)
        self.stats.add(None, "nr_kscand_mm_enter", len(entered))
        self.stats.add(None, "nr_kscand_mm_exit", len(exited))
        return tuple(entered), tuple(exited)

    def scan_pass(self) -> int:
        """Visit up to mms_to_scan processes, each at most once. Returns the number visited."""
        topology = self.machine.topology()
        limit = min(self.tunables.mms_to_scan, len(self.mm_list))
        visited = 0
        while visited < limit:
            slot = self.mm_list.cursor()
            if slot is None:
                break
            end = self.scanner.scan_mm(slot, self.tunables, topology)
            visited += 1
            if end is ScanEnd.GONE:
                self._release(slot.proc)
            self.mm_list.advance()
        return visited

    def _release(self, proc: ProcessId) -> None:
        """A process vanished under the scanner: free its slot and drop its queue."""
        self.mm_list.exit(proc)
        self.migrator.drop(proc, MigrateDrop.PROC_GONE)
        self.stats.add(None, "nr_kscand_mm_exit")
        self.stats.add(proc, "scan_proc_gone")
