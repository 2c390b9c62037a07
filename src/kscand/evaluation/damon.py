"""DAMON virtual-address monitoring with a DAMOS migrate_hot scheme, as a simulator Policy.

`damon-hot` in `kscand compare`: promotion alone. `damon` is damos_tier.py, the
mem_tier pair (physical-address migrate_cold + migrate_hot with quota goals).

The mechanism, after mm/damon/core.c, vaddr.c and ops-common.c (v6.x):

- One kdamond monitors every process (one target each). A new target's address
  space is cut into three regions (the VMAs minus the two largest gaps between
  them, damon_va_three_regions), each split evenly so the target starts with
  about min_nr_regions regions.
- Every sample interval, for each region: was the page sampled last time
  accessed since it was made old? (nr_accesses += 1), then pick a new random
  page in the region and make it old. Sampling goes through the Machine's
  test_and_clear_young, so DAMON sees exactly the Accessed bits kscand sees.
- Every aggregation interval: merge adjacent regions whose nr_accesses differ by
  at most a tenth of the largest nr_accesses (no merged region larger than the
  monitored size / min_nr_regions; the threshold doubles while there are more
  than max_nr_regions); age += 1 where nr_accesses stayed within that threshold,
  else 0; apply the schemes (every apply interval); reset nr_accesses; then split
  every region in two (three when the count did not change and is under a third
  of the maximum) at random 10-90 % points, unless there are more than
  max_nr_regions / 2.
- DAMOS migrate_hot: regions whose access pattern matches (size, nr_accesses and
  age ranges) are migrated to target_nid, within a size quota per reset
  interval. Over the quota, regions are prioritised by damon_hot_score()
  (weights for nr_accesses and age); the quota charges whole region sizes, a
  region that would overflow it is split, and the next window resumes after the
  last charged address. The young filter keeps only folios accessed since they
  were last made old (and makes them old).

Defaults are the kernel's DAMON memory-tiering sample (samples/damon/mtier.c):
5 ms sampling, 100 ms aggregation, 10..1000 regions, min_nr_accesses 1, applied
every 1 s, a 200 MiB/s quota with weights nr_accesses 100 / age 100, a young
filter. Not modelled: the sample's quota goal (node memory-used target, which
only lowers the effective quota) and its interval auto-tuning; vaddr's periodic
region update (simulated VMAs do not change). A target with fewer than three
VMAs gets one region per run of VMAs (the kernel would refuse to start it).
Costs go to the kdamond thread (daemon). Only pages of the kinds every policy may
move (MOVABLE_KINDS) are migrated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.core.stats import Stats
from kscand.errors import ProcessGone
from kscand.evaluation.counters import Damon, Vmstat
from kscand.evaluation.damon_regions import (
    DAMON_MIN_REGION,
    DAMOS_MAX_SCORE,
    Regions,
    hot_score,
    initial_regions,
    merge_regions,
    split_regions,
    three_regions,
)
from kscand.machine import HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, ProcessId
from kscand.sim.machine import SimMachine
from kscand.sim.process import MOVABLE_KINDS, SimProcess, SimVma

__all__ = ["DAMOS_MAX_SCORE", "DamonParams", "DamonPolicy", "Regions", "hot_score",
           "initial_regions", "merge_regions", "split_regions", "three_regions"]

I64Array = npt.NDArray[np.int64]



@dataclass(frozen=True, slots=True)
class DamonParams:
    """kdamond attributes and the migrate_hot scheme (samples/damon/mtier.c defaults)."""

    sample_us: int = 5_000
    aggr_us: int = 100_000
    min_nr_regions: int = 10
    max_nr_regions: int = 1000
    min_nr_accesses: int = 1  # access pattern: nr_accesses >= this (per aggregation)
    min_age: int = 0  # access pattern: age >= this (aggregation intervals)
    min_sz_bytes: int = PAGE_SIZE
    apply_us: int = 1_000_000  # apply interval
    quota_mib: int = 200  # quota: bytes per reset interval (0: no quota)
    quota_reset_ms: int = 1000
    weight_nr_accesses: int = 100
    weight_age: int = 100
    young_filter: bool = True

    @property
    def max_nr_accesses(self) -> int:
        return max(1, self.aggr_us // self.sample_us)


@dataclass
class _Target:
    proc: ProcessId
    regions: Regions


@dataclass
class _Quota:
    """damos_quota's charge window and the resume point after an exhausted window."""

    charged_from_s: float = -1e18
    charged_bytes: int = 0
    charge_target: ProcessId | None = None
    charge_addr: int = 0
    min_score: int = 0
    nr_windows_exceeded: int = 0


@dataclass
class _Clock:
    next_aggr_s: float
    next_apply_s: float
    last_nr_regions: int = 0
    max_nr_accesses: int = 0


@dataclass
class DamonPolicy:
    """DAMON vaddr + DAMOS migrate_hot on a SimMachine. A Policy for run_scenario."""

    machine: SimMachine
    params: DamonParams
    seed: int
    stats: Stats = field(default_factory=Stats)
    name: str = "damon-hot"
    payer: str = "daemon"

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 0x44414D4F])  # "DAMO"
        top_cpu = [n.nid for n in self.machine.topology().nodes if n.top_tier and n.has_cpu]
        self.target_nid = top_cpu[0] if top_cpu else (self.machine.view.top_nids or (0,))[0]
        self.targets: dict[int, _Target] = {}
        self.quota = _Quota()
        now_s = self.machine.clock.now_s
        self.clock = _Clock(now_s + self.params.aggr_us / 1e6,
                            now_s + self.params.apply_us / 1e6)

    # --- the Policy interface -----------------------------------------------------------

    def step(self) -> None:
        """One kdamond iteration: check the last samples, aggregate if due, sample anew."""
        now_s = self.machine.clock.now_s
        self._sync()
        if now_s < self.clock.next_aggr_s:
            # No aggregation in between: check and prepare happen at the same instant,
            # so one Accessed-bit call per target does both.
            self.clock.max_nr_accesses = max(
                (self._check(t, prepare=True) for t in list(self.targets.values())), default=0)
            return
        self.clock.max_nr_accesses = max(
            (self._check(t) for t in list(self.targets.values())), default=0)
        self._aggregate(now_s)
        for target in list(self.targets.values()):
            self._prepare(target)

    def sleep_ns(self) -> int:
        return self.params.sample_us * 1000

    # --- targets ----------------------------------------------------------------------

    def _sync(self) -> None:
        alive = {p.pid: p for p in self.machine.processes()}
        for pid in [pid for pid, t in self.targets.items() if alive.get(pid) != t.proc]:
            del self.targets[pid]
        for pid, proc in alive.items():
            if pid not in self.targets:
                sim_proc = self.machine.view.procs[pid]
                bounds = three_regions([(v.start, v.end) for v in sim_proc.vmas])
                self.targets[pid] = _Target(
                    proc, initial_regions(bounds, self.params.min_nr_regions))

    def _sim_proc(self, target: _Target) -> SimProcess | None:
        sim_proc = self.machine.view.procs.get(target.proc.pid)
        return sim_proc if sim_proc is not None and sim_proc.proc == target.proc else None

    # --- sampling -----------------------------------------------------------------------

    def _young(self, target: _Target, addrs: I64Array) -> npt.NDArray[np.bool_]:
        """Test-and-clear the Accessed bit at each address (THP: of its folio)."""
        sim_proc = self._sim_proc(target)
        if sim_proc is None or not addrs.size:
            return np.zeros(addrs.shape[0], dtype=np.bool_)
        heads = _folio_heads(sim_proc, addrs)
        ascending = bool(np.all(heads[1:] > heads[:-1]))
        uniq, inverse = (heads, None) if ascending else np.unique(heads, return_inverse=True)
        try:
            batch = self.machine.read_pages(target.proc, uniq)
            young = self.machine.test_and_clear_young(target.proc, batch)
        except ProcessGone:
            return np.zeros(addrs.shape[0], dtype=np.bool_)
        return young if inverse is None else young[inverse]

    def _check(self, target: _Target, prepare: bool = False) -> int:
        """check_accesses: count the regions whose sampled page was accessed (and, with
        prepare, sample anew in the same call). Returns the largest nr_accesses."""
        regions = target.regions
        sampled = regions.sampling >= 0
        old = regions.sampling[sampled]
        new = self._new_samples(target) if prepare else np.zeros(0, dtype=np.int64)
        if old.size or new.size:
            young = self._young(target, np.concatenate([old, new]))
            regions.nr_accesses[sampled] += young[: old.shape[0]].astype(np.int64)
        if prepare:
            regions.sampling = new
        return int(regions.nr_accesses.max()) if len(regions) else 0

    def _new_samples(self, target: _Target) -> I64Array:
        """A random page address in each region (counted as a sample)."""
        regions = target.regions
        nr_pages = np.maximum(regions.size // PAGE_SIZE, 1)
        offset = (self.rng.random(len(regions)) * nr_pages).astype(np.int64)
        self.stats.add(target.proc, Damon.SAMPLES, len(regions))
        return regions.start + offset * PAGE_SIZE

    def _prepare(self, target: _Target) -> None:
        """prepare_access_checks: a random page per region, made old."""
        regions = target.regions
        regions.sampling = self._new_samples(target)
        self._young(target, regions.sampling)

    # --- aggregation ---------------------------------------------------------------------

    def _aggregate(self, now_s: float) -> None:
        p = self.params
        self.clock.next_aggr_s = now_s + p.aggr_us / 1e6
        self._merge()
        if now_s >= self.clock.next_apply_s:
            self.clock.next_apply_s = now_s + p.apply_us / 1e6
            self._apply_schemes(now_s)
        for target in self.targets.values():
            target.regions.last_nr_accesses = target.regions.nr_accesses.copy()
            target.regions.nr_accesses[:] = 0
        self._split()

    def _merge(self) -> None:
        """kdamond_merge_regions(): doubling the threshold while over max_nr_regions."""
        p = self.params
        total = sum(int(t.regions.size.sum()) for t in self.targets.values())
        sz_limit = max(DAMON_MIN_REGION, total // p.min_nr_regions)
        thres = self.clock.max_nr_accesses // 10
        while True:
            for target in self.targets.values():
                target.regions = merge_regions(target.regions, thres, sz_limit)
            nr_regions = sum(len(t.regions) for t in self.targets.values())
            thres = max(1, thres * 2)
            if nr_regions <= p.max_nr_regions or thres // 2 >= p.max_nr_accesses:
                break

    def _split(self) -> None:
        """kdamond_split_regions()."""
        p = self.params
        nr_regions = sum(len(t.regions) for t in self.targets.values())
        if nr_regions > p.max_nr_regions // 2:
            return
        nr_subs = 3 if self.clock.last_nr_regions == nr_regions and \
            nr_regions < p.max_nr_regions // 3 else 2
        for target in self.targets.values():
            target.regions = split_regions(target.regions, nr_subs, self.rng)
        self.clock.last_nr_regions = nr_regions

    # --- DAMOS migrate_hot --------------------------------------------------------------

    def _valid(self, regions: Regions) -> npt.NDArray[np.bool_]:
        """__damos_valid_target(): the access pattern (size, nr_accesses, age)."""
        p = self.params
        return (regions.size >= p.min_sz_bytes) & (regions.nr_accesses >= p.min_nr_accesses) \
            & (regions.age >= p.min_age)

    def _apply_schemes(self, now_s: float) -> None:
        p, quota = self.params, self.quota
        esz = p.quota_mib << 20
        if esz and now_s >= quota.charged_from_s + p.quota_reset_ms / 1000:
            if quota.charged_bytes >= esz:
                quota.nr_windows_exceeded += 1
                self.stats.add(None, Damon.QT_EXCEEDS)
            quota.charged_from_s, quota.charged_bytes = now_s, 0
        if esz:
            quota.min_score = self._min_score(esz)
        for target in list(self.targets.values()):
            self._apply_target(target, esz)

    def _min_score(self, esz: int) -> int:
        """The lowest priority score whose regions (hottest first) still fit the quota."""
        histogram = np.zeros(DAMOS_MAX_SCORE + 1, dtype=np.int64)
        for target in self.targets.values():
            r = target.regions
            for i in np.flatnonzero(self._valid(r)).tolist():
                score = hot_score(int(r.nr_accesses[i]), int(r.age[i]), self.params)
                histogram[score] += int(r.size[i])
        cumulated = 0
        for score in range(DAMOS_MAX_SCORE, -1, -1):
            cumulated += int(histogram[score])
            if cumulated >= esz or score == 0:
                return score
        return 0

    def _apply_target(self, target: _Target, esz: int) -> None:
        """damon_do_apply_schemes() over one target's regions, in address order."""
        rows = target.regions.rows()
        out: list[list[int]] = []
        for i, original in enumerate(rows):
            if esz and self.quota.charged_bytes >= esz:
                out.append(original)
                continue
            resumed = self._skip_charged(target, original, i == len(rows) - 1, out)
            if resumed is None:
                continue
            row = resumed
            if not self._matches(row, esz):
                out.append(row)
                continue
            start, end = row[0], row[1]
            size = end - start
            if esz and self.quota.charged_bytes + size > esz:
                size = (esz - self.quota.charged_bytes) // DAMON_MIN_REGION * DAMON_MIN_REGION
                if not size:
                    out.append(row)
                    continue
                rest = [start + size, end, 0, row[3], row[4], -1]
                row = [start, start + size, *row[2:]]
            else:
                rest = None
            self._migrate_region(target, start, start + size)
            row[4] = 0  # an action other than stat resets the region's age
            out.append(row)
            if rest is not None:
                out.append(rest)
            self.quota.charged_bytes += size
            if esz and self.quota.charged_bytes >= esz:
                self.quota.charge_target, self.quota.charge_addr = target.proc, start + size
        target.regions = Regions.from_rows(out)

    def _skip_charged(
        self, target: _Target, row: list[int], is_last: bool, out: list[list[int]]
    ) -> list[int] | None:
        """damos_skip_charged_region(): resume after the last window's charged address.

        Returns the (part of the) region to consider, or None when it is skipped
        (then it was appended to out as is)."""
        quota = self.quota
        if quota.charge_target is None:
            return row
        if quota.charge_target != target.proc or is_last:
            if is_last and quota.charge_target == target.proc:
                quota.charge_target, quota.charge_addr = None, 0
            out.append(row)
            return None
        if row[1] <= quota.charge_addr:
            out.append(row)
            return None
        if row[0] < quota.charge_addr:
            skip = max(DAMON_MIN_REGION,
                       (quota.charge_addr - row[0]) // DAMON_MIN_REGION * DAMON_MIN_REGION)
            out.append([row[0], row[0] + skip, *row[2:5], -1])
            row = [row[0] + skip, *row[1:5], -1]
        quota.charge_target, quota.charge_addr = None, 0
        return row

    def _matches(self, row: list[int], esz: int) -> bool:
        """The access pattern, and (under a quota) the priority score limit."""
        p = self.params
        start, end, nr, _, age, _ = row
        if end - start < p.min_sz_bytes or nr < p.min_nr_accesses or age < p.min_age:
            return False
        return not esz or hot_score(nr, age, p) >= self.quota.min_score

    def _migrate_region(self, target: _Target, start: int, end: int) -> None:
        """damos_va_migrate(): young (filter) slow-tier folios of [start, end) to target_nid."""
        proc = target.proc
        self.stats.add(proc, Damon.NR_TRIED)
        self.stats.add(proc, Damon.SZ_TRIED, end - start)
        sim_proc = self._sim_proc(target)
        if sim_proc is None:
            return
        candidates: list[npt.NDArray[np.uint64]] = []
        for vma in sim_proc.vmas:
            lo, hi = max(start, vma.start), min(end, vma.end)
            if lo >= hi:
                continue
            first, last = (lo - vma.start) >> PAGE_SHIFT, (hi - vma.start) >> PAGE_SHIFT
            present = vma.nid[first:last] >= 0
            self.stats.add(proc, Damon.PTES_WALKED, int(np.count_nonzero(present)))
            if vma.kind_name not in MOVABLE_KINDS:
                continue
            candidates.append(self._slow_folios(vma, first, last))
        vaddrs = np.concatenate(candidates) if candidates else np.zeros(0, dtype=np.uint64)
        if not vaddrs.size:
            return
        if self.params.young_filter:
            young = self._young(target, vaddrs.astype(np.int64))
            self.stats.add(proc, Damon.FILTERED_NOT_YOUNG, int(np.count_nonzero(~young)))
            vaddrs = vaddrs[young]
        if not vaddrs.size:
            return
        try:
            status = self.machine.move_pages(proc, vaddrs, self.target_nid)
        except ProcessGone:
            return
        moved_folios = status == self.target_nid
        moved = int(sum(_folio_size(sim_proc, vaddrs[moved_folios])))
        self.stats.add(proc, Damon.NR_APPLIED)
        self.stats.add(proc, Damon.SZ_APPLIED, moved * PAGE_SIZE)
        self.stats.add(proc, Damon.MIGRATE_CALLS)
        self.stats.add(proc, Vmstat.PGMIGRATE_FAIL, int(sum(_folio_size(sim_proc,
                                                                    vaddrs[~moved_folios]))))

    def _slow_folios(self, vma: SimVma, first: int, last: int) -> npt.NDArray[np.uint64]:
        """Addresses of the folios (heads) in pages [first, last) of vma on slow-tier nodes."""
        step = HPAGE_PMD_NR if vma.thp else 1
        lo = -(-first // step) * step if vma.thp else first
        idx = np.arange(lo, last, step, dtype=np.int64)
        nid = vma.nid[idx].astype(np.intp)
        keep = (nid >= 0) & ~self.machine.view.toptier[nid + 1]
        return (np.uint64(vma.start) + idx[keep].astype(np.uint64) * np.uint64(PAGE_SIZE))


def _folio_heads(sim_proc: SimProcess, addrs: I64Array) -> npt.NDArray[np.uint64]:
    """Each address rounded down to its folio's head (THP VMAs: 2 MiB)."""
    out = addrs.astype(np.uint64)
    vma_idx = sim_proc.vma_of(out)
    thp = np.array([v.thp for v in sim_proc.vmas], dtype=np.bool_)
    in_thp = (vma_idx >= 0) & thp[np.maximum(vma_idx, 0)]
    out[in_thp] &= ~np.uint64(PMD_SIZE - 1)
    return out


def _folio_size(sim_proc: SimProcess, vaddrs: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """Base pages of the folio at each address."""
    vma_idx = sim_proc.vma_of(vaddrs)
    thp = np.array([v.thp for v in sim_proc.vmas], dtype=np.bool_)
    return np.where(thp[np.maximum(vma_idx, 0)], HPAGE_PMD_NR, 1).astype(np.int64)
