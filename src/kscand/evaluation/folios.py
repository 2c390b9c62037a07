"""Folios of a SimMachine as the kernel's reclaim and physical-address code name them.

The LRU model (lru.py) and DAMON's physical-address model (damos_tier.py) work on
folios, not on processes: a folio is one unit of a VMA (a base page, or a THP's
512 pages). Each is named by a key, an int64 = vma id << KEY_SHIFT | unit index;
the ids are handed out here as VMAs appear. Reading and clearing a folio's
Accessed bit (folio_referenced / damon_folio_young + mkold: an rmap walk to the
one PTE that maps it) and migrating folios go through the machine's ordinary
Machine interface (read_pages + test_and_clear_young, move_pages), grouped by
process, so these models see the same Accessed bits every other policy sees and
their moves are in the machine's move log like any other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.errors import AccessDenied, ProcessGone
from kscand.machine import HPAGE_PMD_NR, PAGE_SIZE
from kscand.sim.machine import SimMachine
from kscand.sim.process import MOVABLE_KINDS, SimProcess, SimVma

I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
KEY_SHIFT = 32
UNIT_MASK = (1 << KEY_SHIFT) - 1


@dataclass(eq=False)
class VmaEntry:
    """One VMA the index knows: its id, process and folio size."""

    vid: int
    sim_proc: SimProcess
    vma: SimVma

    @property
    def per_unit(self) -> int:
        return HPAGE_PMD_NR if self.vma.thp else 1

    @property
    def nr_units(self) -> int:
        return self.vma.nr_pages // self.per_unit

    @property
    def movable(self) -> bool:
        return self.vma.kind_name in MOVABLE_KINDS

    def unit_nid(self, units: I64Array) -> npt.NDArray[np.intp]:
        """The node of each unit (its head page), -1 when not present."""
        return self.vma.nid[units * self.per_unit].astype(np.intp)


def keys_of(vid: int, units: npt.NDArray[np.integer]) -> I64Array:
    return (np.int64(vid) << np.int64(KEY_SHIFT)) | units.astype(np.int64)


def split_keys(keys: I64Array) -> tuple[I64Array, I64Array]:
    """(vma ids, unit indices) of keys."""
    return keys >> np.int64(KEY_SHIFT), keys & np.int64(UNIT_MASK)


class FolioIndex:
    """The live VMAs of a machine, by id; young tests and moves of folios by key."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        self.entries: dict[int, VmaEntry] = {}
        self._procs: dict[int, tuple[SimProcess, list[int]]] = {}
        self._next_vid = 0

    def sync(self) -> tuple[list[VmaEntry], list[VmaEntry]]:
        """Follow process starts and exits: (VMAs that appeared, VMAs that went)."""
        alive = {p.pid: self.machine.view.procs[p.pid] for p in self.machine.processes()}
        gone: list[VmaEntry] = []
        for pid in [pid for pid, (sp, _) in self._procs.items() if alive.get(pid) is not sp]:
            _, vids = self._procs.pop(pid)
            gone += [self.entries.pop(v) for v in vids]
        new: list[VmaEntry] = []
        for pid, sim_proc in alive.items():
            if pid in self._procs:
                continue
            vids = []
            for vma in sim_proc.vmas:
                entry = VmaEntry(self._next_vid, sim_proc, vma)
                self.entries[entry.vid] = entry
                vids.append(entry.vid)
                new.append(entry)
                self._next_vid += 1
            self._procs[pid] = (sim_proc, vids)
        return new, gone

    def live(self, keys: I64Array) -> BoolArray:
        vids, _ = split_keys(keys)
        known = np.fromiter(self.entries, dtype=np.int64, count=len(self.entries))
        return np.isin(vids, known)

    def pages_of(self, keys: I64Array) -> I64Array:
        """Base pages of each key's folio (0 for a VMA that is gone)."""
        vids, _ = split_keys(keys)
        out = np.zeros(keys.shape[0], dtype=np.int64)
        for vid in np.unique(vids).tolist():
            entry = self.entries.get(vid)
            if entry is not None:
                out[vids == vid] = entry.per_unit
        return out

    def _groups(self, keys: I64Array) -> list[tuple[SimProcess, npt.NDArray[np.intp],
                                                    npt.NDArray[np.uint64]]]:
        """Per process: positions in keys and the folios' head addresses, ascending."""
        order = np.argsort(keys, kind="stable")
        vids, units = split_keys(keys[order])
        bounds = np.flatnonzero(np.diff(vids)) + 1
        by_proc: dict[int, tuple[SimProcess, list[npt.NDArray[np.intp]],
                                 list[npt.NDArray[np.uint64]]]] = {}
        for lo, hi in zip([0, *bounds.tolist()], [*bounds.tolist(), keys.shape[0]], strict=True):
            entry = self.entries.get(int(vids[lo]))
            if entry is None:
                continue
            step = np.uint64(entry.per_unit * PAGE_SIZE)
            vaddrs = np.uint64(entry.vma.start) + units[lo:hi].astype(np.uint64) * step
            group = by_proc.setdefault(entry.sim_proc.proc.pid, (entry.sim_proc, [], []))
            group[1].append(order[lo:hi])
            group[2].append(vaddrs)
        return [(sp, np.concatenate(pos), np.concatenate(va))
                for sp, pos, va in by_proc.values()]

    def young(self, keys: I64Array) -> BoolArray:
        """Test and clear each folio's Accessed bit (unique keys; gone: not young)."""
        out = np.zeros(keys.shape[0], dtype=np.bool_)
        for sim_proc, pos, vaddrs in self._groups(keys):
            try:
                batch = self.machine.read_pages(sim_proc.proc, vaddrs)
                out[pos] = self.machine.test_and_clear_young(sim_proc.proc, batch)
            except ProcessGone:
                continue
        return out

    def move(self, keys: I64Array, nid: int) -> BoolArray:
        """migrate_pages() of the folios (unique keys) to nid: which moved."""
        out = np.zeros(keys.shape[0], dtype=np.bool_)
        for sim_proc, pos, vaddrs in self._groups(keys):
            try:
                status = self.machine.move_pages(sim_proc.proc, vaddrs, nid)
            except (ProcessGone, AccessDenied):
                continue
            out[pos] = status == nid
        return out
