"""DAMON as tiering users run it: damo's mem_tier pair of schemes, as a simulator Policy.

`damon` in `kscand compare` (the vaddr migrate_hot-only model is `damon-hot`).
Two kdamonds on physical memory (mm/damon/paddr.c), after damo's
scripts/mem_tier.sh (kernel v6.16+):

- demote: monitors the top node's frames; DAMOS migrate_cold to the slow node
  for regions with access rate 0 %; quota 200 MiB per 1 s; quota goal
  node_mem_free_bp 0.5 % on the top node; a young filter rejecting young folios.
- promote: monitors the slow node's frames; migrate_hot to the top node for
  regions with access rate >= 5 %; quota 200 MiB per 1 s; goal node_mem_used_bp
  99.7 % on the top node; a young filter allowing only young folios.
- each: intervals auto-tuned for 4 % of the observable access events, every 3
  aggregations, sampling between 5 ms and 10 s (aggregation = 20 samples).

The rules, after mm/damon/core.c unless said:

- Regions (damon_regions.py): one region over the node's frames split into
  min_nr_regions; each sample interval the frame sampled last is checked and a new
  random frame per region made old (damon_pa_check_accesses / prepare: a free
  frame is never accessed); merge, age and split at every aggregation
  (kdamond_merge_regions, with the age reset on a zero/non-zero flip;
  kdamond_split_regions). nr_accesses_bp is the kernel's pseudo moving sum
  (damon_update_region_access_rate), which the access pattern reads
  (__damos_valid_target), so schemes may apply mid-aggregation.
- Quota (damos_adjust_quota, damos_set_effective_quota): at each 1 s charge window
  the effective size esz = esz_bp / 10000 is fed back from the goal's score
  (current / target x 10000) by damon_feed_loop_next_input(): esz_bp grows by
  the shortfall's fraction (at most x2 a window) while the goal is unmet, shrinks
  by the excess fraction when over it, and drops to its 1-byte floor when the
  score is twice the goal; then capped by the 200 MiB size quota. Regions are
  prioritised by damon_hot_score / damon_cold_score over a histogram (min_score),
  charged by their whole size, split at the quota's end, and the next window
  resumes after the last charged address (damos_skip_charged_region).
- Apply (damon_pa_migrate, damos_pa_filter_out): every folio of a charged region's
  frames passes the young filter (damon_folio_young, then mkold: the Accessed bit
  is cleared), then migrates (migrate_pages, GFP_NOWAIT: the top node is filled
  down to its min watermark, never further).
- Intervals (kdamond_tune_intervals): score = access events / (4 % of sz x
  aggr_samples summed over regions); adaptation = damon_feed_loop_next_input(1e8,
  score) / 1e4, [1, 1e4] rescaled to [5000, 1e4]; sample interval x adaptation,
  clamped to [5 ms, 10 s]; ages rescaled to the new aggregation interval.

Simplifications: the frame layout is frames.py's; the apply interval is taken at
the sample tick at or after it; a charge resumes at the last charged region's end
(the kernel's end + 1 skips one page); with more than two nodes only the first
CPU top-tier node and the first slow node take part (mem_tier.sh assumes two).
Costs: the daemon pays each sample and each folio check (one PTE each) and the
migrations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core.stats import Stats
from kscand.evaluation.counters import Damon, Vmstat
from kscand.evaluation.damon_regions import DAMOS_MAX_SCORE, Regions, hot_score
from kscand.evaluation.damos_kdamond import Kdamond, SchemeSpec
from kscand.evaluation.folios import FolioIndex
from kscand.evaluation.frames import FrameMap
from kscand.sim.machine import SimMachine

__all__ = ["DAMOS_MAX_SCORE", "DamonTierParams", "DamonTierPolicy", "Regions", "hot_score"]


@dataclass(frozen=True, slots=True)
class DamonTierParams:
    """The mem_tier.sh setup (damo), the knobs a sweep may change."""

    sample_us: int = 5_000  # initial sample interval
    aggr_samples: int = 20  # aggregation interval = this many samples (100 ms at start)
    min_nr_regions: int = 10
    max_nr_regions: int = 1000
    intervals_goal_bp: int = 400  # 4 % of the observable access events
    intervals_goal_aggrs: int = 3  # tune every this many aggregations (0: never)
    min_sample_us: int = 5_000
    max_sample_us: int = 10_000_000
    apply_us: int = 1_000_000
    quota_mib: int = 200  # per reset interval, each scheme
    quota_reset_ms: int = 1000
    demote_goal_free_bp: int = 50  # node_mem_free_bp 0.5 % on the top node
    promote_goal_used_bp: int = 9970  # node_mem_used_bp 99.7 % on the top node
    promote_min_access_pct: int = 5  # --damos_access_rate 5% max
    weight_nr_accesses: int = 100
    weight_age: int = 100
    young_filter: bool = True


class DamonTierPolicy:
    """Two paddr kdamonds, demote (top node) and promote (slow node). A Policy."""

    name = "damon"
    payer = "daemon"

    def __init__(self, machine: SimMachine, params: DamonTierParams, seed: int) -> None:
        self.machine = machine
        self.params = params
        self.stats = Stats()
        self.rng = np.random.default_rng([seed, 0x54494552])  # "TIER"
        top = [n.nid for n in machine.topology().nodes if n.top_tier and n.has_cpu]
        self.top_nid = top[0] if top else (machine.view.top_nids or (0,))[0]
        slow = sorted(machine.view.slow_nids)
        self.slow_nid = slow[0] if slow else self.top_nid
        self.index = FolioIndex(machine)
        self._per_unit = np.ones(0, dtype=np.int64)  # base pages per folio, by vma id
        view = machine.view
        self.frames = FrameMap({int(n): int(view.capacity_pages[n]) for n in view.nids})
        quota = params.quota_mib << 20
        demote = SchemeSpec("demote", "migrate_cold", self.slow_nid, 0, 0, quota,
                            "node_mem_free_bp", params.demote_goal_free_bp, self.top_nid,
                            "reject" if params.young_filter else "")
        min_hot = -(-params.promote_min_access_pct * params.aggr_samples // 100)
        promote = SchemeSpec("promote", "migrate_hot", self.top_nid, min_hot, 2**32 - 1, quota,
                             "node_mem_used_bp", params.promote_goal_used_bp, self.top_nid,
                             "allow" if params.young_filter else "")
        now_s = machine.clock.now_s
        self.kdamonds = [Kdamond(self, self.top_nid, demote, now_s),
                         Kdamond(self, self.slow_nid, promote, now_s)]
        if self.slow_nid == self.top_nid:
            self.kdamonds = []

    def step(self) -> None:
        self._sync()
        now_s = self.machine.clock.now_s
        for kdamond in self.kdamonds:
            if kdamond.next_sample_s <= now_s + 1e-12:
                kdamond.tick(now_s)

    def sleep_ns(self) -> int:
        now_s = self.machine.clock.now_s
        nxt = min((k.next_sample_s for k in self.kdamonds), default=now_s + 1.0)
        return max(1_000_000, round((nxt - now_s) * 1e9))

    def _sync(self) -> None:
        new, gone = self.index.sync()
        for entry in gone:
            self.frames.forget(entry)
        for entry in new:
            self.frames.track(entry)
        if new:
            lut = np.ones(max(e.vid for e in new) + 1, dtype=np.int64)
            lut[: self._per_unit.shape[0]] = self._per_unit
            for entry in new:
                lut[entry.vid] = entry.per_unit
            self._per_unit = lut

    # --- what the kdamonds ask of the machine ----------------------------------------------

    def node_bp(self, metric: str, nid: int) -> int:
        """damos_get_node_mem_bp(): used or free memory of nid in basis points."""
        total = int(self.machine.view.capacity_pages[nid])
        free = total - int(self.machine.view.used_pages[nid])
        numerator = total - free if metric == "node_mem_used_bp" else free
        return numerator * 10000 // max(1, total)

    def folio_keys(self, nid: int, frames: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """The folio key behind each frame of nid (-1: a free frame)."""
        owner = self.frames.nodes[nid].owner[frames]
        out = np.full(frames.shape[0], -1, dtype=np.int64)
        used = owner >= 0
        if not used.any():
            return out
        vids = owner[used] >> np.int64(32)
        pages = owner[used] & np.int64((1 << 32) - 1)
        per = self._per_unit[vids]
        out[used] = (vids << np.int64(32)) | (pages // per)
        return out

    def young(self, keys: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Test and clear the Accessed bit of each folio (any order, repeats, -1 allowed)."""
        out = np.zeros(keys.shape[0], dtype=np.bool_)
        real = keys >= 0
        if not real.any():
            return out
        uniq, inverse = np.unique(keys[real], return_inverse=True)
        out[real] = self.index.young(uniq)[inverse]
        return out

    def migrate(self, keys: npt.NDArray[np.int64], src: int, dst: int, floor_pages: int) -> int:
        """Migrate folios (unique keys on src) to dst, keeping dst's free pages at or
        above floor_pages; count the moved base pages per process (pgmigrate_success).
        Returns the base pages moved."""
        movable = np.array([self.index.entries[int(v)].movable if int(v) in self.index.entries
                            else False for v in (keys >> np.int64(32)).tolist()], dtype=np.bool_)
        self.stats.add(None, Damon.SKIP_NOT_MOVABLE, int(np.count_nonzero(~movable)))
        keys = keys[movable]
        pages = self.index.pages_of(keys)
        free = self.machine.view.free_pages(dst)
        fits = np.cumsum(pages) <= max(0, free - floor_pages)
        self.stats.add(None, Damon.FAIL_NO_ROOM, int(pages[~fits].sum()))
        keys, pages = keys[fits], pages[fits]
        if not keys.size:
            return 0
        moved = self.index.move(keys, dst)
        vids = keys >> np.int64(32)
        units = keys & np.int64((1 << 32) - 1)
        for vid in np.unique(vids[moved]).tolist():
            entry = self.index.entries.get(vid)
            if entry is not None:
                sel = moved & (vids == vid)
                self.frames.moved(entry, units[sel], np.full(int(sel.sum()), src, np.intp), dst)
                self.stats.add(entry.sim_proc.proc, Vmstat.PGMIGRATE_SUCCESS, int(pages[sel].sum()))
        self.stats.add(None, Vmstat.PGMIGRATE_FAIL, int(pages[~moved].sum()))
        return int(pages[moved].sum())

