"""NUMA balancing tiering with its partner: reclaim-driven demotion (demotion_enabled=1).

`numab` in `kscand compare`. Promotion is NumabPolicy's (numa_balancing=2: hint
faults, the auto-adjusted hot threshold, the rate limit, migrate_balanced_pgdat);
this adds what the kernel pairs it with when /sys/kernel/mm/numa/demotion_enabled
is 1:

- mm/migrate.c numamigrate_isolate_folio(): in memory-tiering mode a promotion
  that finds the target node short of free pages (under its high watermark plus
  the folio) fails and wakes kswapd on that node (wakeup_kswapd).
- mm/page_alloc.c: any allocation on the node under its low watermark wakes
  kswapd too; here that is a node found under its low watermark at a step (the
  processes' own faults, e.g. a first-touch placement that filled it).
- mm/vmscan.c kswapd, in lru.py: reclaim to the promotion watermark
  (pgdat_balanced in tiering mode) from the inactive tail, demoting to the next
  lower tier (next_demotion_node), with the LRU aging of folio_check_references
  and shrink_active_list over the machine's Accessed bits.

kswapd runs at the end of the step that woke it (steps are NumabParams.step_ms).
Its work is a kernel thread's: the daemon pays for its rmap walks (one PTE each)
and its demotions, the application for everything NUMA balancing does.
"""

from __future__ import annotations

import math

import numpy as np

from kscand.evaluation.counters import Numab, WakeReason
from kscand.evaluation.folios import FolioIndex, keys_of
from kscand.evaluation.lru import INACTIVE, Kswapd, NodeLru, next_demotion_node
from kscand.evaluation.numab import IdxArray, NumabParams, NumabPolicy, _Fault
from kscand.machine import HPAGE_PMD_NR
from kscand.sim.machine import SimMachine
from kscand.sim.process import SimVma

# kswapd is a thread of its own: woken by a failed promotion, it reclaims while later
# faults go on. The step's faults are resolved in windows this long, kswapd running
# between them, so a promotion waits at most this long for the memory kswapd frees.
KSWAPD_WAKE_LATENCY_S = 0.001


class NumabTieringPolicy(NumabPolicy):
    """numa_balancing=2 with demotion_enabled=1 on a SimMachine."""

    name = "numab"

    def __init__(self, machine: SimMachine, params: NumabParams, seed: int) -> None:
        super().__init__(machine, params, seed)
        self.index = FolioIndex(machine)
        self.lru = NodeLru(self.target_nid)
        self.kswapd = Kswapd(machine, self.index, self.lru,
                             next_demotion_node(machine, self.target_nid), self.stats)
        self._vids: dict[SimVma, int] = {}

    def step(self) -> None:
        self._sync_lru()
        super().step()
        if self.kswapd.free_pages() < self.kswapd.wmark.low_pages:
            self.kswapd.wakeup(WakeReason.ALLOC)
        self.kswapd.run()

    def _resolve(self, faults: list[_Fault]) -> None:
        """The step's faults in KSWAPD_WAKE_LATENCY_S windows; kswapd runs when woken.

        One window when the node has room for every fault of the step above its
        high watermark (no promotion can fail then)."""
        nr_pages = sum(int(f.unit.shape[0]) * (HPAGE_PMD_NR if f.vma.thp else 1) for f in faults)
        if self.kswapd.free_pages() - self.kswapd.wmark.high_pages > nr_pages:
            super()._resolve(faults)
            return
        ordered = []
        for f in faults:
            order = np.argsort(f.fault_s, kind="stable")
            ordered.append(_Fault(f.sim_proc, f.vma, f.unit[order], f.fault_s[order],
                                  f.mark_s[order]))
        lo_s = min(float(f.fault_s[0]) for f in ordered)
        hi_s = max(float(f.fault_s[-1]) for f in ordered)
        nr_windows = max(1, math.ceil((hi_s - lo_s) / KSWAPD_WAKE_LATENCY_S + 1e-9))
        pos = [0] * len(ordered)
        for k in range(nr_windows):
            end_s = math.inf if k == nr_windows - 1 else lo_s + (k + 1) * KSWAPD_WAKE_LATENCY_S
            part = []
            for i, f in enumerate(ordered):
                end = int(np.searchsorted(f.fault_s, end_s, side="left"))
                if end > pos[i]:
                    sl = slice(pos[i], end)
                    part.append(_Fault(f.sim_proc, f.vma, f.unit[sl], f.fault_s[sl], f.mark_s[sl]))
                    pos[i] = end
            if not part:
                continue
            failed_before = self.gate.counts.get(Numab.FAIL_BALANCE, 0)
            super()._resolve(part)
            if self.gate.counts.get(Numab.FAIL_BALANCE, 0) > failed_before:
                self.kswapd.wakeup(WakeReason.PROMOTE)
                self.kswapd.run()

    def _sync_lru(self) -> None:
        new, gone = self.index.sync()
        for entry in gone:
            self.lru.forget(entry)
            self._vids.pop(entry.vma, None)
        for entry in new:
            self.lru.track(entry)
            self._vids[entry.vma] = entry.vid

    def _promoted(self, vma: SimVma, units: IdxArray) -> None:
        if vma not in self._vids:
            self._sync_lru()
        vid = self._vids.get(vma)
        if vid is None or not units.size:
            return
        self.lru.add(keys_of(vid, units.astype(np.int64)), INACTIVE)
