"""NUMA balancing in memory-tiering mode (numa_balancing=2) as a simulator Policy.

This class alone is `numab-promote` in `kscand compare` (promotion only);
`numab` adds its demotion partner (numab_tier.py: kswapd demoting the LRU tail).

The mechanism, after kernel/sched/fair.c and mm/mprotect.c (v6.x):

- task_numa_work(): every scan period each process marks up to
  numa_balancing_scan_size_mb of its address space PROT_NONE, resuming where the
  last scan stopped (mm->numa_scan_offset), walking at most 8x that much virtual
  space. A chunk only counts against the budget when it updated a PTE. VMAs are
  skipped as the kernel does (not migratable, hugetlb, mixed map, read-only file,
  PROT_NONE); in tiering-only mode top-tier pages are walked but not marked, and a
  page already PROT_NONE keeps its marking time. Marking records the time in the
  folio (folio_xchg_access_time). The first scan comes numa_balancing_scan_delay_ms
  after the process starts.
- The scan period is task_scan_start() = task_scan_min(): scan_period_min scaled
  down by the number of scan_size windows in the RSS, floored so that at most
  2560 MB/s is marked. In numa_balancing=2 alone it never adapts afterwards:
  task_numa_fault() returns before recording statistics for faults on slow-tier
  pages, and top-tier pages are never marked, so update_task_scan_period() (the
  min..max adaptation) is never reached.
- The first access to a marked page is a hint fault in the application. Its time
  is drawn from the page's access rate (exponential: the first event of a Poisson
  process; redrawn from the boundary when the workload's rates change; exact for a
  sequential stream).
- should_numa_migrate_memory() for a slow-tier page: if the target node has free
  memory above its promotion watermark plus max(1 GiB, 1/16 of the node)
  (pgdat_free_space_enough) the page is promoted at once (pgpromote_candidate_nrl)
  and the threshold is reset; otherwise numa_promotion_adjust_threshold() runs
  (every numa_balancing_scan_period_max_ms it moves the threshold by 1/8 of
  hot_threshold_ms, within [hot/8, 2 x hot], towards rate_limit x period
  candidates), a fault latency (fault time - marking time) at or above the
  threshold is rejected, and a candidate (pgpromote_candidate) is promoted unless
  more than promote_rate_limit_MBps of candidates came in the current 1 s window.
- migrate_misplaced_folio() refuses when the target would drop below its high
  watermark (migrate_balanced_pgdat).

Costs (kscand.evaluation.costs) are the application's: the PTE walk (task_work on
return to user space), every hint fault and every migration. Not modelled: the
per-VMA access filters of v6.4+ (vma_is_accessed: every process here is one task
that touches all its VMAs), NUMA groups; demotion is numab_tier.py's.
Only pages of the VMA kinds every policy may move (MOVABLE_KINDS) are promoted;
faults on other marked pages are counted and cost, but do not promote, so the
oracle stays an upper bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.core.filters import vma_skip_reason
from kscand.core.stats import Stats
from kscand.evaluation.counters import Numab, Vmstat
from kscand.evaluation.numab_gate import NumabParams, PromotionGate
from kscand.machine import HPAGE_PMD_NR, PAGE_SHIFT, PAGE_SIZE, PMD_SIZE, ProcessId, Vma
from kscand.sim import workloads as wl
from kscand.sim.machine import SimMachine
from kscand.sim.process import MOVABLE_KINDS, SimProcess, SimVma

__all__ = ["NumabParams", "NumabPolicy", "PromotionGate", "epoch_boundary_s", "next_access_s",
           "task_scan_min_ms"]

IdxArray = npt.NDArray[np.intp]
F64Array = npt.NDArray[np.float64]

MAX_SCAN_WINDOW_MB = 2560  # fair.c: never mark more than this per second
VIRTPAGES_FACTOR = 8  # task_numa_work: walk at most 8x the scan size of virtual space
MAX_BATCHES_PER_VMA = 32  # merge a VMA's pending-fault batches beyond this many


def task_scan_min_ms(rss_pages: int, params: NumabParams) -> int:
    """fair.c task_scan_min(): the scan period of a task with rss_pages resident."""
    windows = MAX_SCAN_WINDOW_MB // params.scan_size_mb if params.scan_size_mb < \
        MAX_SCAN_WINDOW_MB else 1
    floor = 1000 // windows
    nr_scan_pages = params.scan_size_mb << (20 - PAGE_SHIFT)
    rss = rss_pages or nr_scan_pages
    nr_windows = -(-rss // nr_scan_pages)
    return max(floor, params.scan_period_min_ms // nr_windows)


@dataclass
class _Batch:
    """Marked units of one VMA from one scan, sorted by their hint-fault time."""

    unit: npt.NDArray[np.int64]
    fault_s: F64Array
    mark_s: F64Array
    pos: int = 0

    @property
    def left(self) -> int:
        return int(self.unit.shape[0]) - self.pos


@dataclass
class _VmaState:
    """NUMA-balancing state of one VMA: which units are PROT_NONE, and when they fault."""

    pending: npt.NDArray[np.bool_]  # (nr_units,) marked, not faulted yet
    epoch: int
    batches: list[_Batch] = field(default_factory=list)


@dataclass
class _MmState:
    """Per-process scan state (mm->numa_next_scan, numa_scan_offset; p->numa_scan_period)."""

    proc: ProcessId
    next_scan_s: float
    scan_offset: int = 0
    scan_period_ms: int | None = None
    scan_seq: int = 0


def _units(vma: SimVma) -> int:
    return vma.nr_pages // HPAGE_PMD_NR if vma.thp else vma.nr_pages


def _unit_pages(vma: SimVma) -> int:
    return HPAGE_PMD_NR if vma.thp else 1


def next_access_s(
    vma: SimVma, units: IdxArray, t0_s: float, rng: np.random.Generator
) -> F64Array:
    """When each unit is first accessed after t0_s (inf: never, at the current rates)."""
    return vma.workload.next_access_s(units, _unit_pages(vma), t0_s, rng)


def epoch_boundary_s(workload: wl.Workload, lo_s: float, hi_s: float) -> float:
    """The time in (lo_s, hi_s] at which workload.epoch() changes: the end of lo_s's epoch."""
    return min(workload.epoch_bounds(lo_s)[1], hi_s)


@dataclass
class _Fault:
    """A step's hint faults of one VMA."""

    sim_proc: SimProcess
    vma: SimVma
    unit: npt.NDArray[np.int64]
    fault_s: F64Array
    mark_s: F64Array


class NumabPolicy:
    """numa_balancing=2 on a SimMachine. A Policy for kscand.sim.run.run_scenario."""

    name = "numab-promote"
    payer = "app"

    def __init__(self, machine: SimMachine, params: NumabParams, seed: int) -> None:
        self.machine = machine
        self.params = params
        self.stats = Stats()
        self.rng = np.random.default_rng([seed, 0x4E554D41])  # "NUMA"
        top_cpu = [n.nid for n in machine.topology().nodes if n.top_tier and n.has_cpu]
        self.target_nid = top_cpu[0] if top_cpu else (machine.view.top_nids or (0,))[0]
        self.gate = PromotionGate(params, int(machine.view.capacity_pages[self.target_nid]))
        self._mms: dict[int, _MmState] = {}
        self._vmas: dict[SimVma, _VmaState] = {}
        self._last_step_s = machine.clock.now_s

    # --- the Policy interface ---------------------------------------------------------

    def step(self) -> None:
        now_s = self.machine.clock.now_s
        procs = self._sync(now_s)
        faults = [f for sim_proc in procs for f in self._due_faults(sim_proc, now_s)]
        if faults:
            self._resolve(faults)
        for sim_proc in procs:
            mm = self._mms[sim_proc.proc.pid]
            if mm.next_scan_s <= now_s:
                self._task_numa_work(sim_proc, mm, now_s)
        self._last_step_s = now_s

    def sleep_ns(self) -> int:
        now_s = self.machine.clock.now_s
        step_s = self.params.step_ms / 1000
        next_scan = min((mm.next_scan_s for mm in self._mms.values()), default=math.inf)
        return max(1_000_000, round(min(step_s, next_scan - now_s) * 1e9))

    # --- processes ----------------------------------------------------------------------

    def _sync(self, now_s: float) -> list[SimProcess]:
        alive = {p.pid: p for p in self.machine.processes()}
        procs = [self.machine.view.procs[pid] for pid in alive]
        for pid in list(self._mms):
            if pid not in alive or self._mms[pid].proc != alive[pid]:
                self._forget(pid)
        for sim_proc in procs:
            if sim_proc.proc.pid not in self._mms:
                start_s = sim_proc.proc.start_time / 1e9
                self._mms[sim_proc.proc.pid] = _MmState(
                    sim_proc.proc, start_s + self.params.scan_delay_ms / 1000)
        return procs

    def _forget(self, pid: int) -> None:
        del self._mms[pid]
        live = {v for p in self.machine.view.procs.values() for v in p.vmas}
        for vma in [v for v in self._vmas if v not in live]:
            del self._vmas[vma]

    def _state(self, vma: SimVma, now_s: float) -> _VmaState:
        state = self._vmas.get(vma)
        if state is None:
            state = self._vmas[vma] = _VmaState(
                np.zeros(_units(vma), dtype=np.bool_), vma.workload.epoch(now_s))
        return state

    # --- task_numa_work: marking --------------------------------------------------------

    def _task_numa_work(self, sim_proc: SimProcess, mm: _MmState, now_s: float) -> None:
        if mm.scan_period_ms is None:
            rss = sum(int(np.count_nonzero(v.nid >= 0)) for v in sim_proc.vmas)
            mm.scan_period_ms = task_scan_min_ms(rss, self.params)
        mm.next_scan_s = now_s + mm.scan_period_ms / 1000
        proc = sim_proc.proc
        self.stats.add(proc, Numab.SCANS)
        pages = self.params.scan_size_mb << (20 - PAGE_SHIFT)
        virtpages = pages * VIRTPAGES_FACTOR
        vmas = [v for v in sim_proc.vmas if v.end > mm.scan_offset]
        if not vmas:
            mm.scan_offset, mm.scan_seq = 0, mm.scan_seq + 1
            vmas = sim_proc.vmas
        start = mm.scan_offset
        for vma in vmas:
            if vma_skip_reason(Vma(vma.start, vma.end, vma.vm_flags, vma.kind_name)):
                continue
            while True:
                start = max(start, vma.start)
                end = min(-(-(start + pages * PAGE_SIZE) // PMD_SIZE) * PMD_SIZE, vma.end)
                nr_chunk = (end - start) >> PAGE_SHIFT
                updated = self._change_prot_numa(proc, vma, start, end, now_s)
                self.stats.add(proc, Numab.PTES_WALKED, nr_chunk)
                if updated:
                    pages -= nr_chunk
                virtpages -= nr_chunk
                start = end
                if pages <= 0 or virtpages <= 0:
                    mm.scan_offset = start
                    return
                if end >= vma.end:
                    break
        mm.scan_offset, mm.scan_seq = 0, mm.scan_seq + 1

    def _change_prot_numa(
        self, proc: ProcessId, vma: SimVma, start: int, end: int, now_s: float
    ) -> int:
        """Mark the slow-tier units of [start, end) PROT_NONE; returns pages updated."""
        per_unit = _unit_pages(vma)
        first = ((start - vma.start) >> PAGE_SHIFT) // per_unit
        last = -(-((end - vma.start) >> PAGE_SHIFT) // per_unit)
        state = self._state(vma, now_s)
        head_nid = vma.nid[first * per_unit : last * per_unit : per_unit].astype(np.intp)
        top = self.machine.view.toptier
        mark = (head_nid >= 0) & ~top[head_nid + 1] & ~state.pending[first:last]
        units = first + np.flatnonzero(mark)
        if not units.size:
            return 0
        state.pending[units] = True
        fault_s = next_access_s(vma, units, now_s, self.rng)
        order = np.argsort(fault_s, kind="stable")
        state.batches.append(_Batch(units[order].astype(np.int64), fault_s[order],
                                    np.full(units.shape[0], now_s)))
        if len(state.batches) > MAX_BATCHES_PER_VMA:
            state.batches = [_merge(state.batches)]
        nr_updated = int(units.shape[0]) * per_unit
        self.stats.add(proc, Vmstat.NUMA_PTE_UPDATES, nr_updated)
        if vma.thp:
            self.stats.add(proc, Vmstat.NUMA_HUGE_PTE_UPDATES, int(units.shape[0]))
        return nr_updated

    # --- hint faults ----------------------------------------------------------------------

    def _due_faults(self, sim_proc: SimProcess, now_s: float) -> list[_Fault]:
        """The hint faults of a process in (last step, now_s], redrawing across epochs."""
        out: list[_Fault] = []
        for vma in sim_proc.vmas:
            state = self._vmas.get(vma)
            if state is None:
                continue
            epoch = vma.workload.epoch(now_s)
            if not state.batches:
                state.epoch = epoch  # nothing pending: nothing to redraw
                continue
            if epoch != state.epoch:
                boundary = epoch_boundary_s(vma.workload, self._last_step_s, now_s)
                out += self._pop(sim_proc, vma, state, boundary)
                self._redraw(vma, state, boundary)
                state.epoch = epoch
            out += self._pop(sim_proc, vma, state, now_s)
        return out

    def _pop(self, sim_proc: SimProcess, vma: SimVma, state: _VmaState, upto_s: float
             ) -> list[_Fault]:
        units, fault_s, mark_s = [], [], []
        for batch in state.batches:
            k = int(np.searchsorted(batch.fault_s, upto_s, side="right"))
            if k > batch.pos:
                units.append(batch.unit[batch.pos : k])
                fault_s.append(batch.fault_s[batch.pos : k])
                mark_s.append(batch.mark_s[batch.pos : k])
                batch.pos = k
        state.batches = [b for b in state.batches if b.left]
        if not units:
            return []
        unit = np.concatenate(units)
        state.pending[unit] = False
        return [_Fault(sim_proc, vma, unit, np.concatenate(fault_s), np.concatenate(mark_s))]

    def _redraw(self, vma: SimVma, state: _VmaState, boundary_s: float) -> None:
        """Rates changed at boundary_s: unfaulted units draw their next access again."""
        if not state.batches:
            return
        merged = _merge(state.batches)
        fault_s = next_access_s(vma, merged.unit.astype(np.intp), boundary_s, self.rng)
        order = np.argsort(fault_s, kind="stable")
        state.batches = [_Batch(merged.unit[order], fault_s[order], merged.mark_s[order])]

    def _resolve(self, faults: list[_Fault]) -> None:
        """should_numa_migrate_memory() for every fault of the step, then the moves."""
        for f in faults:
            self.stats.add(f.sim_proc.proc, Vmstat.NUMA_HINT_FAULTS, int(f.unit.shape[0]))
        eligible = [f for f in faults if f.vma.kind_name in MOVABLE_KINDS]
        for f in faults:
            if f.vma.kind_name not in MOVABLE_KINDS:
                self.stats.add(f.sim_proc.proc, Numab.SKIP_NOT_MOVABLE,
                               int(f.unit.shape[0]) * _unit_pages(f.vma))
        if not eligible:
            return
        fault_s = np.concatenate([f.fault_s for f in eligible])
        latency_ms = (fault_s - np.concatenate([f.mark_s for f in eligible])) * 1000
        nr_pages = np.concatenate([np.full(f.unit.shape[0], _unit_pages(f.vma), np.int64)
                                   for f in eligible])
        order = np.argsort(fault_s, kind="stable")
        free = self.machine.view.free_pages(self.target_nid)
        before = dict(self.gate.counts), self.gate.nr_cand, self.gate.nr_cand_nrl
        promote = np.zeros(order.shape[0], dtype=np.bool_)
        promote[order] = self.gate.decide(fault_s[order], latency_ms[order], nr_pages[order],
                                          free)
        self._count_gate(before)
        offset = 0
        for f in eligible:
            n = f.unit.shape[0]
            chosen = f.unit[promote[offset : offset + n]]
            offset += n
            if chosen.size:
                self._migrate(f.sim_proc, f.vma, chosen)

    def _count_gate(self, before: tuple[dict[str, int], int, int]) -> None:
        counts, nr_cand, nr_cand_nrl = before
        self.stats.add(None, Vmstat.PGPROMOTE_CANDIDATE, self.gate.nr_cand - nr_cand)
        self.stats.add(None, Vmstat.PGPROMOTE_CANDIDATE_NRL, self.gate.nr_cand_nrl - nr_cand_nrl)
        for name, value in self.gate.counts.items():
            self.stats.add(None, Numab(name), value - counts.get(name, 0))

    def _migrate(self, sim_proc: SimProcess, vma: SimVma, units: npt.NDArray[np.int64]) -> None:
        """migrate_misplaced_folio() for the chosen units of one VMA (one move call here)."""
        per_unit = _unit_pages(vma)
        units = np.sort(units)
        vaddrs = np.uint64(vma.start) + (units.astype(np.uint64) * np.uint64(per_unit * PAGE_SIZE))
        status = self.machine.move_pages(sim_proc.proc, vaddrs, self.target_nid)
        self._promoted(vma, units[status == self.target_nid].astype(np.intp))
        moved = int(np.count_nonzero(status == self.target_nid)) * per_unit
        failed = int(np.count_nonzero(status != self.target_nid)) * per_unit
        proc = sim_proc.proc
        self.stats.add(proc, Vmstat.PGPROMOTE_SUCCESS, moved)
        self.stats.add(proc, Vmstat.NUMA_PAGES_MIGRATED, moved)
        self.stats.add(proc, Vmstat.PGMIGRATE_FAIL, failed)

    def _promoted(self, vma: SimVma, units: IdxArray) -> None:
        """Units of vma that a promotion moved to the target node (a hook: the LRU)."""
        return None


def _merge(batches: list[_Batch]) -> _Batch:
    """One batch holding every unconsumed entry of batches, sorted by fault time."""
    unit = np.concatenate([b.unit[b.pos :] for b in batches])
    fault_s = np.concatenate([b.fault_s[b.pos :] for b in batches])
    mark_s = np.concatenate([b.mark_s[b.pos :] for b in batches])
    order = np.argsort(fault_s, kind="stable")
    return _Batch(unit[order], fault_s[order], mark_s[order])
