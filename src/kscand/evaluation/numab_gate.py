"""NUMA balancing's promotion decision on the target node (kernel/sched/fair.c v6.x).

should_numa_migrate_memory() in memory-tiering mode, for a slow-tier folio that
hint-faulted: the free-space shortcut (pgdat_free_space_enough), the hot
threshold auto-adjusted towards the promote rate limit
(numa_promotion_adjust_threshold), the fault-latency test, the rate limit
(numa_promotion_rate_limit), and mm/migrate.c's migrate_balanced_pgdat()
(the high watermark). The sysctls are NumabParams.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.evaluation.counters import Numab
from kscand.machine import PAGE_SHIFT, PAGE_SIZE

IdxArray = npt.NDArray[np.intp]
F64Array = npt.NDArray[np.float64]

NUMA_MIGRATION_ADJUST_STEPS = 16
RATE_LIMIT_WINDOW_S = 1.0  # numa_promotion_rate_limit: one-second windows
ENOUGH_FREE_MIN_BYTES = 1 << 30  # pgdat_free_space_enough: at least 1 GiB ...
ENOUGH_FREE_SHIFT = 4  # ... or 1/16 of the node
# Zone watermarks as fractions of the node (mm/page_alloc.c __setup_per_zone_wmarks
# with the default watermark_scale_factor of 10 = 0.1 %): min (from min_free_kbytes,
# about 0.1 % of a few-GiB node), low = min + 0.1 %, high = low + 0.1 %, and the
# promotion watermark WMARK_PROMO = high + 0.1 %.
WMARK_MIN_FRACTION = 0.001
WMARK_LOW_FRACTION = 0.002
WMARK_HIGH_FRACTION = 0.003
WMARK_PROMO_FRACTION = 0.004


@dataclass(frozen=True, slots=True)
class NumabParams:
    """The numa_balancing sysctls the model uses (kernel defaults), plus the step."""

    scan_delay_ms: int = 1000  # numa_balancing_scan_delay_ms
    scan_period_min_ms: int = 1000  # numa_balancing_scan_period_min_ms
    scan_period_max_ms: int = 60_000  # numa_balancing_scan_period_max_ms
    scan_size_mb: int = 256  # numa_balancing_scan_size_mb
    hot_threshold_ms: int = 1000  # debugfs sched/numa_balancing/hot_threshold_ms
    promote_rate_limit_mbps: int = 65_536  # numa_balancing_promote_rate_limit_MBps
    step_ms: float = 10.0  # simulation: faults are resolved (promoted) in steps this long



@dataclass
class PromotionGate:
    """The target node's promotion state (pgdat->nbp_*) and should_numa_migrate_memory().

    decide() takes a step's hint faults in time order and returns which promote,
    applying the free-space shortcut, the threshold adjustment, the latency
    threshold, the rate limit and the watermark check in the kernel's order.
    """

    params: NumabParams
    capacity_pages: int
    threshold_ms: int = 0  # nbp_threshold; 0 = hot_threshold_ms
    th_start_s: float = -math.inf  # nbp_th_start: a machine up for long
    th_nr_cand: int = 0  # nbp_th_nr_cand
    rl_start_s: float = -math.inf  # nbp_rl_start
    rl_nr_cand: int = 0  # nbp_rl_nr_cand
    nr_cand: int = 0  # PGPROMOTE_CANDIDATE
    nr_cand_nrl: int = 0  # PGPROMOTE_CANDIDATE_NRL
    counts: dict[str, int] = field(default_factory=dict)  # by Numab member

    @property
    def rate_limit_pages(self) -> int:
        return self.params.promote_rate_limit_mbps << (20 - PAGE_SHIFT)

    @property
    def enough_free_pages(self) -> int:
        """Free pages above which pgdat_free_space_enough() holds."""
        enough = max(ENOUGH_FREE_MIN_BYTES // PAGE_SIZE, self.capacity_pages >> ENOUGH_FREE_SHIFT)
        return enough + int(self.capacity_pages * WMARK_PROMO_FRACTION)

    @property
    def high_wmark_pages(self) -> int:
        return int(self.capacity_pages * WMARK_HIGH_FRACTION)

    def _count(self, name: Numab, value: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + value

    def adjust_threshold(self, t_s: float) -> None:
        """numa_promotion_adjust_threshold() at a fault at t_s."""
        period_ms = self.params.scan_period_max_ms
        if (t_s - self.th_start_s) * 1000 <= period_ms:
            return
        ref_th = self.params.hot_threshold_ms
        ref_cand = self.rate_limit_pages * period_ms // 1000
        diff = self.nr_cand - self.th_nr_cand
        unit_th = ref_th * 2 // NUMA_MIGRATION_ADJUST_STEPS
        th = self.threshold_ms or ref_th
        if diff > ref_cand * 11 // 10:
            th = max(th - unit_th, unit_th)
        elif diff < ref_cand * 9 // 10:
            th = min(th + unit_th, ref_th * 2)
        self.th_nr_cand = self.nr_cand
        self.threshold_ms = th
        self.th_start_s = t_s

    def decide(
        self, t_s: F64Array, latency_ms: F64Array, nr_pages: npt.NDArray[np.int64],
        free_pages: int,
    ) -> npt.NDArray[np.bool_]:
        """Which of a step's faults (sorted by t_s) promote. All arrays (n,)."""
        n = t_s.shape[0]
        promote = np.zeros(n, dtype=np.bool_)
        i = 0
        while i < n and free_pages > self.enough_free_pages:
            # pgdat_free_space_enough(): promote while free stays above the mark.
            before = np.cumsum(nr_pages[i:]) - nr_pages[i:]
            k = max(1, int(np.searchsorted(before, free_pages - self.enough_free_pages)))
            promote[i : i + k] = True
            taken = int(nr_pages[i : i + k].sum())
            self.nr_cand_nrl += taken
            self.threshold_ms = 0  # "workload changed, reset hot threshold"
            free_pages -= taken
            i += k
        while i < n:
            self.adjust_threshold(float(t_s[i]))
            seg_end = int(np.searchsorted(
                t_s, self.th_start_s + self.params.scan_period_max_ms / 1000, side="right"))
            seg_end = max(seg_end, i + 1)
            th = self.threshold_ms or self.params.hot_threshold_ms
            cand = i + np.flatnonzero(latency_ms[i:seg_end] < th)
            self._count(Numab.REJECT_LATENCY, int(nr_pages[i:seg_end].sum()
                                                    - nr_pages[cand].sum()))
            allowed = self._rate_limit(t_s, nr_pages, cand)
            before = np.cumsum(nr_pages[allowed]) - nr_pages[allowed]
            fits = free_pages - before - nr_pages[allowed] > self.high_wmark_pages
            self._count(Numab.FAIL_BALANCE, int(nr_pages[allowed[~fits]].sum()))
            promote[allowed[fits]] = True
            free_pages -= int(nr_pages[allowed[fits]].sum())
            i = seg_end
        return promote

    def _rate_limit(
        self, t_s: F64Array, nr_pages: npt.NDArray[np.int64], cand: IdxArray
    ) -> IdxArray:
        """numa_promotion_rate_limit() over candidate faults: the ones not limited."""
        limit = self.rate_limit_pages
        kept: list[IdxArray] = []
        c = 0
        t_cand = t_s[cand]
        while c < cand.shape[0]:
            if t_cand[c] - self.rl_start_s > RATE_LIMIT_WINDOW_S:
                self.rl_start_s = float(t_cand[c])
                self.rl_nr_cand = self.nr_cand + int(nr_pages[cand[c]])
            end = int(np.searchsorted(t_cand, self.rl_start_s + RATE_LIMIT_WINDOW_S,
                                      side="right"))
            end = max(end, c + 1)
            block = cand[c:end]
            nr_cand = self.nr_cand + np.cumsum(nr_pages[block])
            limited = nr_cand - self.rl_nr_cand >= limit
            self._count(Numab.REJECT_RATE_LIMIT, int(nr_pages[block[limited]].sum()))
            kept.append(block[~limited])
            self.nr_cand = int(nr_cand[-1])
            c = end
        return np.concatenate(kept) if kept else np.zeros(0, dtype=np.intp)
