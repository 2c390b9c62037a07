"""One physical-address kdamond with one DAMOS scheme (the rules: damos_tier.py's docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from kscand.core.stats import Stats
from kscand.evaluation.counters import BaselineFamily, Damon, DamosStat
from kscand.evaluation.damon_regions import (
    DAMOS_MAX_SCORE,
    Regions,
    hot_score,
    initial_regions,
    merge_regions,
    split_regions,
)
from kscand.evaluation.lru import Watermarks
from kscand.machine import PAGE_SIZE
from kscand.sim.machine import SimMachine

I64Array = npt.NDArray[np.int64]
ULONG_MAX = (1 << 64) - 1
FEED_GOAL = 10_000
FEED_MIN_INPUT = 10_000


def feed_loop_next_input(last_input: int, score: int) -> int:
    """damon_feed_loop_next_input(): the next input for a score whose goal is 10,000."""
    if score == FEED_GOAL:
        return last_input
    if score >= FEED_GOAL * 2:
        return FEED_MIN_INPUT
    diff = abs(score - FEED_GOAL)
    compensation = last_input * diff // FEED_GOAL
    if score > FEED_GOAL:
        return max(last_input - compensation, FEED_MIN_INPUT)
    return min(last_input + compensation, ULONG_MAX)


@dataclass(frozen=True, slots=True)
class SchemeSpec:
    """One DAMOS scheme of the mem_tier pair."""

    name: str  # "demote" or "promote": the scheme label of its counters
    action: str  # "migrate_cold" or "migrate_hot"
    target_nid: int
    min_nr_accesses: int
    max_nr_accesses: int
    quota_bytes: int  # per reset interval
    goal_metric: str  # "node_mem_free_bp" or "node_mem_used_bp"
    goal_bp: int
    goal_nid: int
    young_filter: str  # "reject" (young folios out), "allow" (only young ones), "" none


@dataclass(frozen=True, slots=True)
class _ScoreAttrs:
    aggr_us: int
    max_nr_accesses: int
    weight_nr_accesses: int
    weight_age: int


@dataclass
class Quota:
    """damos_quota: the goal-tuned effective size and the charge window."""

    esz_bp: int = 0
    esz: int = 0
    charged_sz: int = 0
    charged_from_s: float | None = None
    total_charged_sz: int = 0
    charge_addr_from: int | None = None
    min_score: int = 0


class TierParams(Protocol):
    """The DamonTierParams fields a kdamond reads."""

    @property
    def sample_us(self) -> int: ...
    @property
    def aggr_samples(self) -> int: ...
    @property
    def min_nr_regions(self) -> int: ...
    @property
    def max_nr_regions(self) -> int: ...
    @property
    def intervals_goal_bp(self) -> int: ...
    @property
    def intervals_goal_aggrs(self) -> int: ...
    @property
    def min_sample_us(self) -> int: ...
    @property
    def max_sample_us(self) -> int: ...
    @property
    def apply_us(self) -> int: ...
    @property
    def quota_reset_ms(self) -> int: ...
    @property
    def weight_nr_accesses(self) -> int: ...
    @property
    def weight_age(self) -> int: ...


class Host(Protocol):
    """What a kdamond asks of its policy (DamonTierPolicy)."""

    machine: SimMachine
    stats: Stats
    rng: np.random.Generator

    @property
    def params(self) -> TierParams: ...
    def node_bp(self, metric: str, nid: int) -> int: ...
    def folio_keys(self, nid: int, frames: I64Array) -> I64Array: ...
    def young(self, keys: I64Array) -> npt.NDArray[np.bool_]: ...
    def migrate(self, keys: I64Array, src: int, dst: int, floor_pages: int) -> int: ...


class Kdamond:
    """A paddr DAMON context over one node's frames, with one scheme."""

    def __init__(self, host: Host, nid: int, scheme: SchemeSpec, now_s: float) -> None:
        p = host.params
        self.host, self.nid, self.scheme = host, nid, scheme
        self.sample_us = p.sample_us
        self.size_bytes = int(host.machine.view.capacity_pages[nid]) * PAGE_SIZE
        self.regions = initial_regions([(0, self.size_bytes)], p.min_nr_regions)
        self.sz_limit = max(PAGE_SIZE, self.size_bytes // p.min_nr_regions)
        self.passed = 0  # passed_sample_intervals
        self.in_window = 0  # samples since the last aggregation reset
        self.next_aggr = p.aggr_samples
        self.next_tune = p.aggr_samples * p.intervals_goal_aggrs
        self.last_nr_regions = 0
        self.next_sample_s = now_s + self.sample_us / 1e6
        self.next_apply_s = now_s + max(p.apply_us, self.sample_us) / 1e6
        self.quota = Quota()
        self.floor_pages = Watermarks.of(int(host.machine.view.capacity_pages[scheme.target_nid])
                                         ).min_pages

    def _count(self, stat: DamosStat, value: int = 1) -> None:
        self.host.stats.add(None, BaselineFamily.DAMOS_SCHEME, value, scheme=self.scheme.name,
                            stat=stat)

    # --- sampling ---------------------------------------------------------------------------

    def _new_samples(self) -> I64Array:
        r = self.regions
        nr_pages = np.maximum(r.size // PAGE_SIZE, 1)
        offset = (self.host.rng.random(len(r)) * nr_pages).astype(np.int64)
        self.host.stats.add(None, Damon.SAMPLES, len(r))
        return r.start + offset * PAGE_SIZE

    def _keys(self, addrs: I64Array) -> I64Array:
        return self.host.folio_keys(self.nid, addrs // PAGE_SIZE)

    def _check_and_prepare(self, prepare: bool) -> None:
        """Count the last samples' accesses; with prepare, sample anew in the same walk."""
        r = self.regions
        sampled = r.sampling >= 0
        old = self._keys(r.sampling[sampled])
        new_addrs = self._new_samples() if prepare else np.zeros(0, dtype=np.int64)
        young = self.host.young(np.concatenate([old, self._keys(new_addrs)]))
        r.nr_accesses[sampled] += young[: old.shape[0]].astype(np.int64)
        if prepare:
            r.sampling = new_addrs

    def tick(self, now_s: float) -> None:
        """One kdamond_fn() iteration at the end of a sample interval."""
        p = self.host.params
        self.passed += 1
        self.in_window += 1
        aggregate = self.passed >= self.next_aggr
        self._check_and_prepare(prepare=not aggregate)
        if aggregate:
            thres = int(self.regions.nr_accesses.max()) // 10 if len(self.regions) else 0
            self._merge(thres)
        if now_s + 1e-12 >= self.next_apply_s:
            self.next_apply_s = now_s + max(p.apply_us, self.sample_us) / 1e6
            self.apply(now_s, at_aggregation=aggregate)
        if aggregate:
            if p.intervals_goal_aggrs and self.passed >= self.next_tune:
                self.next_tune += p.aggr_samples * p.intervals_goal_aggrs
                self.tune_intervals()
            self.next_aggr = self.passed + p.aggr_samples
            self.regions.last_nr_accesses = self.regions.nr_accesses.copy()
            self.regions.nr_accesses[:] = 0
            self.in_window = 0
            self._split()
            self.regions.sampling = self._new_samples()
            self.host.young(self._keys(self.regions.sampling))
        self.next_sample_s = now_s + self.sample_us / 1e6

    def _merge(self, thres: int) -> None:
        p = self.host.params
        while True:
            self.regions = merge_regions(self.regions, thres, self.sz_limit, zero_flip=True)
            thres = max(1, thres * 2)
            if len(self.regions) <= p.max_nr_regions or thres // 2 >= p.aggr_samples:
                break

    def _split(self) -> None:
        p = self.host.params
        nr = len(self.regions)
        if nr > p.max_nr_regions // 2:
            return
        nr_subs = 3 if self.last_nr_regions == nr and nr < p.max_nr_regions // 3 else 2
        self.regions = split_regions(self.regions, nr_subs, self.host.rng)
        self.last_nr_regions = nr

    # --- intervals auto-tuning ----------------------------------------------------------------

    def tune_intervals(self) -> None:
        """kdamond_tune_intervals(): toward intervals_goal_bp of the observable events."""
        p = self.host.params
        r = self.regions
        access = int((r.size * r.nr_accesses).sum())
        target = int((r.size * p.aggr_samples).sum()) * p.intervals_goal_bp // 10000 or 1
        adaptation = feed_loop_next_input(100_000_000, access * 10000 // target) // 10000
        if adaptation <= 10000:
            adaptation = 5000 + adaptation // 2
        if adaptation == 10000:
            return
        sample = min(p.max_sample_us, self.sample_us * adaptation // 10000)
        sample = max(p.min_sample_us, sample)
        r.age = r.age * self.sample_us // sample  # damon_age_for_new_attrs (same aggr_samples)
        self.sample_us = sample
        self._count(DamosStat.INTERVALS_TUNED)

    # --- the scheme -----------------------------------------------------------------------------

    def _pattern_nr(self, nr: int, last: int, at_aggregation: bool) -> int:
        """nr_accesses_bp / 10000: the pseudo moving sum of the last aggregation window."""
        if at_aggregation:
            return nr
        n = self.host.params.aggr_samples
        return (last * 10000 - self.in_window * (last * 10000 // n) + nr * 10000) // 10000

    def _score(self, nr: int, age: int) -> int:
        p = self.host.params
        attrs = _ScoreAttrs(self.sample_us * p.aggr_samples, p.aggr_samples,
                            p.weight_nr_accesses, p.weight_age)
        hot = hot_score(nr, age, attrs)
        return hot if self.scheme.action == "migrate_hot" else DAMOS_MAX_SCORE - hot

    def set_effective_quota(self) -> None:
        """damos_set_effective_quota() with one goal and a size quota."""
        s, q = self.scheme, self.quota
        current = self.host.node_bp(s.goal_metric, s.goal_nid)
        score = current * 10000 // max(1, s.goal_bp)
        q.esz_bp = feed_loop_next_input(max(q.esz_bp, 10000), score)
        esz = q.esz_bp // 10000
        q.esz = min(esz, s.quota_bytes) if s.quota_bytes else esz

    def adjust_quota(self, now_s: float) -> None:
        """damos_adjust_quota(): the charge window and the effective size."""
        p, q = self.host.params, self.quota
        if q.charged_from_s is None:
            q.charged_from_s = now_s
            self.set_effective_quota()
        if now_s + 1e-12 >= q.charged_from_s + p.quota_reset_ms / 1000:
            if q.esz and q.charged_sz >= q.esz:
                self._count(DamosStat.QT_EXCEEDS)
            q.total_charged_sz += q.charged_sz
            q.charged_from_s, q.charged_sz = now_s, 0
            self.set_effective_quota()

    def apply(self, now_s: float, at_aggregation: bool) -> None:
        """kdamond_apply_schemes() for the one scheme."""
        s, q = self.scheme, self.quota
        self.adjust_quota(now_s)
        rows = self.regions.rows()
        nrs = [self._pattern_nr(r[2], r[3], at_aggregation) for r in rows]
        valid = [s.min_nr_accesses <= n <= s.max_nr_accesses for n in nrs]
        histogram = np.zeros(DAMOS_MAX_SCORE + 1, dtype=np.int64)
        for row, nr, ok in zip(rows, nrs, valid, strict=True):
            if ok:
                histogram[self._score(nr, row[4])] += row[1] - row[0]
        cumulated, q.min_score = 0, 0
        for score in range(DAMOS_MAX_SCORE, -1, -1):
            cumulated += int(histogram[score])
            if cumulated >= q.esz or score == 0:
                q.min_score = score
                break
        self._walk(rows, at_aggregation)

    def _walk(self, rows: list[list[int]], at_aggregation: bool) -> None:
        """damon_do_apply_schemes() over the regions in address order."""
        s, q = self.scheme, self.quota
        out: list[list[int]] = []
        i = 0
        while i < len(rows):
            row = rows[i]
            i += 1
            if q.esz and q.charged_sz >= q.esz:
                out.append(row)
                continue
            if q.charge_addr_from is not None:  # damos_skip_charged_region()
                addr = q.charge_addr_from
                if i == len(rows):
                    q.charge_addr_from = None
                    out.append(row)
                    continue
                if row[1] <= addr:
                    out.append(row)
                    continue
                if row[0] < addr:
                    skip = max(PAGE_SIZE, (addr - row[0]) // PAGE_SIZE * PAGE_SIZE)
                    if skip < row[1] - row[0]:
                        out.append([row[0], row[0] + skip, *row[2:5], -1])
                        rows.insert(i, [row[0] + skip, *row[1:5], -1])
                    else:
                        out.append(row)
                    continue
                q.charge_addr_from = None
            nr = self._pattern_nr(row[2], row[3], at_aggregation)
            if not (s.min_nr_accesses <= nr <= s.max_nr_accesses) or \
                    self._score(nr, row[4]) < q.min_score:
                out.append(row)
                continue
            sz = row[1] - row[0]
            if q.esz and q.charged_sz + sz > q.esz:
                sz = (q.esz - q.charged_sz) // PAGE_SIZE * PAGE_SIZE
                if not sz:
                    self._count(DamosStat.NR_TRIED)
                    out.append(row)
                    continue
                rows.insert(i, [row[0] + sz, row[1], *row[2:5], -1])
                row = [row[0], row[0] + sz, *row[2:]]
            self._act(row[0], row[1])
            q.charged_sz += sz
            if q.esz and q.charged_sz >= q.esz:
                q.charge_addr_from = row[1]
            row[4] = 0  # an action other than stat resets the age
            out.append(row)
        self.regions = Regions.from_rows(out)

    def _act(self, start: int, end: int) -> None:
        """damon_pa_migrate(): the region's folios through the young filter, then moved."""
        s = self.scheme
        self._count(DamosStat.NR_TRIED)
        self._count(DamosStat.SZ_TRIED, end - start)
        keys = self._keys(np.arange(start, end, PAGE_SIZE, dtype=np.int64))
        keys = keys[keys >= 0]
        _, first = np.unique(keys, return_index=True)
        keys = keys[np.sort(first)]  # each folio once, in physical order
        if not keys.size:
            return
        if s.young_filter:
            young = self.host.young(keys)
            self.host.stats.add(None, Damon.PTES_WALKED, int(keys.shape[0]))
            keep = ~young if s.young_filter == "reject" else young
            self._count(DamosStat.FILTERED_OUT, int(np.count_nonzero(~keep)))
            keys = keys[keep]
        moved = self.host.migrate(keys, self.nid, s.target_nid, self.floor_pages)
        if moved:
            self._count(DamosStat.NR_APPLIED)
        self._count(DamosStat.SZ_APPLIED, moved * PAGE_SIZE)
        self.host.stats.add(None, Damon.MIGRATE_CALLS)
