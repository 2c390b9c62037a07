"""What every promotion was worth: the ledger of pages moved between the tiers.

It reads the simulated machine's move history (SimMachine.view.move_history, kept
while record_moves is set), which every policy's moves go through, so kscand,
NUMA balancing and DAMON are accounted by the same code. Definitions (base
pages; a THP counts 512):

- promoted: pages moved from a slow-tier node to a top-tier node.
- demoted: pages moved from a top-tier node to a slow-tier node.
- moved: every page move, whatever the nodes (a page moved twice counts twice).
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
- top accesses of promoted pages: the accesses served by promoted pages from the
  moment of their promotion while they stay on the top tier (until demoted or
  their process exits), summed over the samples (observe()): what the promotions
  bought. Divided by the pages promoted: the benefit per migration.
- ping-pong: pages moved more than twice within PING_PONG_WINDOW_S of virtual
  time (three moves, the first and the third at most that far apart); their
  moves: every move of those pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.machine import ProcessId
from kscand.sim.machine import SimMachine
from kscand.sim.metrics import Sample, movable_rates
from kscand.sim.process import MOVABLE_KINDS, MoveChunk, SimVma

IdxArray = npt.NDArray[np.intp]

PING_PONG_WINDOW_S = 60.0
PING_PONG_MOVES = 3  # "more than twice"


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """The promotion ledger at the end of a run."""

    promoted_pages: int
    demoted_pages: int  # moves from a top-tier to a slow-tier node
    move_calls: int  # move_pages calls that moved at least one page
    cold_at_promotion_pages: int
    cold_at_end_pages: int
    promoted_live_at_end_pages: int  # promoted pages still on the top tier in a live process
    outside_oracle_at_promotion_pages: int
    outside_oracle_at_end_pages: int
    moved_pages: int = 0  # every page move, between any two nodes
    ping_pong_pages: int = 0
    ping_pong_moves: int = 0  # moves of the ping-pong pages

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class _Held:
    """Promoted pages of one VMA still on the top tier since their promotion."""

    mask: npt.NDArray[np.bool_]
    rate_per_s: float = 0.0  # their summed access rate in epoch
    epoch: int = field(default=0)


class PromotionLedger:
    """Reads a SimMachine's move history after each policy step and accounts each move."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        machine.record_moves = True
        self._cursor = len(machine.view.move_history)
        self._promoted: dict[SimVma, npt.NDArray[np.bool_]] = {}
        self._held: dict[SimVma, _Held] = {}
        self.promoted_pages = 0
        self.demoted_pages = 0
        self.cold_at_promotion_pages = 0
        self.outside_oracle_at_promotion_pages = 0
        self.top_accesses = 0.0  # accesses served by promoted pages while on the top tier
        self.oracle = OracleCut(machine)

    @property
    def move_calls(self) -> int:
        return self.machine.view.move_history.nr_calls

    def drain(self) -> None:
        """Account the moves recorded since the last drain."""
        history = self.machine.view.move_history
        if self._cursor == len(history):
            return
        chunks = history.chunks(self._cursor)
        self._cursor = len(history)
        for chunk in chunks:
            self._account(chunk)

    def _account(self, chunk: MoveChunk) -> None:
        top = self.machine.view.toptier
        was_top = top[chunk.old_nids.astype(np.intp) + 1]
        vma, t_s = chunk.vma, chunk.t_s
        if not top[chunk.new_nid + 1]:
            demoted = chunk.pages[was_top]
            self.demoted_pages += int(demoted.shape[0])
            held = self._held.get(vma)
            if held is not None and demoted.size:
                self._refresh(vma, held, t_s)
                leaving = demoted[held.mask[demoted]]
                held.mask[leaving] = False
                held.rate_per_s -= float(vma.workload.rates_of(leaving, t_s).sum(dtype=np.float64))
            return
        pages = chunk.pages[~was_top]
        if not pages.size:
            return
        mask = self._promoted.get(vma)
        if mask is None:
            mask = self._promoted[vma] = np.zeros(vma.nr_pages, dtype=np.bool_)
        mask[pages] = True
        self.promoted_pages += int(pages.shape[0])
        hot = vma.workload.hot_of(pages, t_s)
        self.cold_at_promotion_pages += int(np.count_nonzero(~hot))
        rates = vma.workload.rates_of(pages, t_s)
        self.outside_oracle_at_promotion_pages += int(np.count_nonzero(
            rates < self.oracle.threshold(t_s)))
        held = self._held.get(vma)
        if held is None:
            held = self._held[vma] = _Held(np.zeros(vma.nr_pages, dtype=np.bool_),
                                           epoch=vma.workload.epoch(t_s))
        self._refresh(vma, held, t_s)
        held.mask[pages] = True
        held.rate_per_s += float(rates.sum(dtype=np.float64))

    @staticmethod
    def _refresh(vma: SimVma, held: _Held, t_s: float) -> None:
        """Recount the held pages' rate when the workload's rates changed epoch."""
        epoch = vma.workload.epoch(t_s)
        if epoch != held.epoch:
            held.epoch = epoch
            held.rate_per_s = float(vma.workload.rates(t_s)[held.mask].sum(dtype=np.float64))

    def observe(self, sample: Sample, weight_s: float) -> None:
        """Account the accesses the held promoted pages serve in the weight_s after sample."""
        self.drain()
        if not weight_s or not self._held:
            return
        live: set[ProcessId] = set(sample.per_proc)
        live_vmas = {id(v) for p in self.machine.view.alive() if p.proc in live for v in p.vmas}
        for vma, held in self._held.items():
            if id(vma) in live_vmas:
                self._refresh(vma, held, sample.t_s)
                self.top_accesses += held.rate_per_s * weight_s

    def summary(self) -> LedgerSummary:
        """The totals, with the end-of-run coldness and the ping-pong measured now."""
        self.drain()
        now_s = self.machine.clock.now_s
        live = {id(v) for p in self.machine.view.alive() for v in p.vmas}
        cold_at_end = live_at_end = outside_at_end = 0
        threshold = self.oracle.threshold(now_s) if self._promoted else 0.0
        for vma, mask in self._promoted.items():
            if id(vma) not in live:
                continue
            pages = np.flatnonzero(mask & self.machine.view.toptier[vma.nid.astype(np.intp) + 1])
            live_at_end += int(pages.size)
            cold_at_end += int(np.count_nonzero(~vma.workload.hot_of(pages, now_s)))
            outside_at_end += int(np.count_nonzero(
                vma.workload.rates_of(pages, now_s) < threshold))
        page_ids, times_s = self.machine.view.move_history.page_ids_and_times()
        pp_pages, pp_moves = ping_pong(page_ids, times_s)
        return LedgerSummary(
            promoted_pages=self.promoted_pages,
            demoted_pages=self.demoted_pages,
            move_calls=self.move_calls,
            cold_at_promotion_pages=self.cold_at_promotion_pages,
            cold_at_end_pages=cold_at_end,
            promoted_live_at_end_pages=live_at_end,
            outside_oracle_at_promotion_pages=self.outside_oracle_at_promotion_pages,
            outside_oracle_at_end_pages=outside_at_end,
            moved_pages=int(page_ids.shape[0]),
            ping_pong_pages=pp_pages,
            ping_pong_moves=pp_moves,
        )


def ping_pong(page_ids: npt.NDArray[np.int64], times_s: npt.NDArray[np.float64],
              window_s: float = PING_PONG_WINDOW_S,
              nr_moves: int = PING_PONG_MOVES) -> tuple[int, int]:
    """(pages moved at least nr_moves times within window_s, all the moves of those pages)
    from one (page id, time) pair per move. int64 (n,), float64 (n,)."""
    n = page_ids.shape[0]
    if n < nr_moves:
        return 0, 0
    order = np.lexsort((times_s, page_ids))
    ids, t_s = page_ids[order], times_s[order]
    span = nr_moves - 1
    burst = (ids[span:] == ids[:-span]) & (t_s[span:] - t_s[:-span] <= window_s)
    pages = np.unique(ids[span:][burst])
    if not pages.size:
        return 0, 0
    return int(pages.shape[0]), int(np.count_nonzero(np.isin(ids, pages, assume_unique=False)))


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
        procs = self.machine.view.alive()
        key = tuple((p.proc, tuple(v.workload.epoch(t_s) for v in p.vmas)) for p in procs)
        if key != self._key:
            self._key = key
            self._threshold = self._compute(t_s)
        return self._threshold

    def _compute(self, t_s: float) -> float:
        machine = self.machine
        procs = machine.view.alive()
        top = machine.view.toptier
        fixed = sum(int(np.count_nonzero(top[v.nid.astype(np.intp) + 1]))
                    for p in procs for v in p.vmas if v.kind_name not in MOVABLE_KINDS)
        room = machine.view.top_capacity_pages() - fixed
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
