"""What every promotion was worth: the ledger of pages moved to the top tier.

It reads the simulated machine's move log (SimMachine.record_moves), which
every policy's moves go through, so kscand, NUMA balancing and DAMON are
accounted by the same code. Definitions (base pages; a THP counts 512):

- promoted: pages moved from a slow-tier node to a top-tier node.
- cold at promotion: promoted pages that were not in their workload's hot set
  (Workload.hot) at the moment they were moved: the policy promoted a page the
  workload does not call hot.
- cold at end: pages promoted during the run that, at the end of the run, are
  still present on the top tier in a live process but are not in the hot set
  then: top-tier capacity spent on pages that are cold now (for a moving hot
  set this includes pages that were hot when moved).
- outside the oracle (at promotion / at end): the same two counts against the
  oracle's placement instead of the workload's hot set: promoted pages whose
  access rate is below the rate of the coldest page the oracle puts on the top
  tier (metrics.py's oracle: the hottest movable pages that fit). A page outside
  the hot set can still be worth its top-tier page (a Zipf tail when the top tier
  is larger than the hot set); a page outside the oracle's set is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import HPAGE_PMD_NR, PAGE_SHIFT, ProcessId, U64Array
from kscand.sim.machine import MOVABLE_KINDS, SimMachine, SimVma
from kscand.sim.metrics import movable_rates

IdxArray = npt.NDArray[np.intp]


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """The promotion ledger at the end of a run."""

    promoted_pages: int
    demoted_pages: int  # moves to a slow-tier node (kscand's optional demotion)
    move_calls: int  # move_pages calls that moved at least one page
    cold_at_promotion_pages: int
    cold_at_end_pages: int
    promoted_live_at_end_pages: int  # promoted pages still on the top tier in a live process
    outside_oracle_at_promotion_pages: int
    outside_oracle_at_end_pages: int

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class PromotionLedger:
    """Drains a SimMachine's move log after each policy step and accounts each move."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        machine.record_moves = True
        self._promoted: dict[SimVma, npt.NDArray[np.bool_]] = {}
        self.promoted_pages = 0
        self.demoted_pages = 0
        self.move_calls = 0
        self.cold_at_promotion_pages = 0
        self.outside_oracle_at_promotion_pages = 0
        self.oracle = OracleCut(machine)

    def drain(self) -> None:
        """Account the moves logged since the last drain (at the machine's current time)."""
        log = self.machine.move_log
        if not log:
            return
        now_s = self.machine.clock.now_s
        for proc, vaddrs in log:
            if vaddrs.size:
                self.move_calls += 1
                self._account(proc, vaddrs, now_s)
        log.clear()

    def _account(self, proc: ProcessId, vaddrs: U64Array, now_s: float) -> None:
        sim_proc = self.machine.procs.get(proc.pid)
        if sim_proc is None or sim_proc.proc != proc:
            return
        vma_idx = sim_proc.vma_of(vaddrs)
        for v in np.unique(vma_idx[vma_idx >= 0]).tolist():
            vma = sim_proc.vmas[v]
            pages = _folio_pages(vma, vaddrs[vma_idx == v])
            on_top = self.machine.toptier[vma.nid[pages].astype(np.intp) + 1]
            self.demoted_pages += int(np.count_nonzero(~on_top))
            pages = pages[on_top]
            if not pages.size:
                continue
            mask = self._promoted.get(vma)
            if mask is None:
                mask = self._promoted[vma] = np.zeros(vma.nr_pages, dtype=np.bool_)
            mask[pages] = True
            self.promoted_pages += int(pages.size)
            hot = vma.workload.hot_of(pages, now_s)
            self.cold_at_promotion_pages += int(np.count_nonzero(~hot))
            rates = vma.workload.rates_of(pages, now_s)
            self.outside_oracle_at_promotion_pages += int(np.count_nonzero(
                rates < self.oracle.threshold(now_s)))

    def summary(self) -> LedgerSummary:
        """The totals, with the end-of-run coldness measured now."""
        self.drain()
        now_s = self.machine.clock.now_s
        live = {id(v) for p in self.machine.alive() for v in p.vmas}
        cold_at_end = live_at_end = outside_at_end = 0
        threshold = self.oracle.threshold(now_s) if self._promoted else 0.0
        for vma, mask in self._promoted.items():
            if id(vma) not in live:
                continue
            pages = np.flatnonzero(mask & self.machine.toptier[vma.nid.astype(np.intp) + 1])
            live_at_end += int(pages.size)
            cold_at_end += int(np.count_nonzero(~vma.workload.hot_of(pages, now_s)))
            outside_at_end += int(np.count_nonzero(
                vma.workload.rates_of(pages, now_s) < threshold))
        return LedgerSummary(
            promoted_pages=self.promoted_pages,
            demoted_pages=self.demoted_pages,
            move_calls=self.move_calls,
            cold_at_promotion_pages=self.cold_at_promotion_pages,
            cold_at_end_pages=cold_at_end,
            promoted_live_at_end_pages=live_at_end,
            outside_oracle_at_promotion_pages=self.outside_oracle_at_promotion_pages,
            outside_oracle_at_end_pages=outside_at_end,
        )


class OracleCut:
    """The access rate of the coldest page the oracle places on the top tier.

    The oracle (kscand.sim.metrics) fills the free top tier with the hottest
    movable pages of every live process; a promoted page with a lower rate is
    one the oracle would not have promoted. Cached while no process starts or
    exits and no workload changes epoch.
    """

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        self._key: tuple[object, ...] | None = None
        self._threshold = 0.0

    def threshold(self, t_s: float) -> float:
        procs = self.machine.alive()
        key = tuple((p.proc, tuple(v.workload.epoch(t_s) for v in p.vmas)) for p in procs)
        if key != self._key:
            self._key = key
            self._threshold = self._compute(t_s)
        return self._threshold

    def _compute(self, t_s: float) -> float:
        machine = self.machine
        procs = machine.alive()
        top = machine.toptier
        fixed = sum(int(np.count_nonzero(top[v.nid.astype(np.intp) + 1]))
                    for p in procs for v in p.vmas if v.kind_name not in MOVABLE_KINDS)
        room = int(sum(machine.capacity_pages[nid] for nid in machine.top_nids)) - fixed
        parts = [movable_rates(p, t_s) for p in procs]
        rates = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
        return kth_largest(rates, room)


def kth_largest(values: npt.NDArray[np.float32], k: int) -> float:
    """The k-th largest value (-inf when k exceeds the count, +inf when k <= 0).

    By value counts, not np.partition, which degrades on the many ties of
    hot-set workloads."""
    if k <= 0:
        return float("inf")
    if k >= values.shape[0]:
        return float("-inf")
    uniq, counts = np.unique(values, return_counts=True)
    from_top = np.cumsum(counts[::-1])
    return float(uniq[::-1][int(np.searchsorted(from_top, k))])


def _folio_pages(vma: SimVma, vaddrs: U64Array) -> IdxArray:
    """Page indices in vma of every base page the moved addresses stand for (THP: 512)."""
    idx = ((vaddrs - np.uint64(vma.start)) >> np.uint64(PAGE_SHIFT)).astype(np.intp)
    if not vma.thp:
        return np.unique(idx)
    heads = np.unique(idx - idx % HPAGE_PMD_NR)
    return (heads[:, None] + np.arange(HPAGE_PMD_NR)).ravel()
