"""The simulated two-tier machine: numpy page tables, nodes, tiers, workloads, failures.

It implements kscand.machine.Machine, so the engine that runs here is the
code that runs on Linux. Virtual time advances by what the engine does
(scan cost per PTE, move cost per page and per call) and by its sleeps.
Pages are numbered per VMA; a page's nid array entry is -1 when it is not
present. PFNs are synthesized from (node, page id): moving a page changes
its PFN, as it does on Linux.
"""

from __future__ import annotations

import errno
from collections import Counter

import numpy as np

from kscand.errors import MOVE_CALL_FAULTS, AccessDenied, ConfigError, ProcessGone
from kscand.machine import (
    HPAGE_PMD_NR,
    NID_NONE,
    PAGE_SHIFT,
    PAGE_SIZE,
    BoolArray,
    I32Array,
    NodeInfo,
    PageBatch,
    PageFlag,
    ProcessId,
    ProcessInfo,
    Topology,
    U64Array,
    Vma,
    VmFlag,
    top_tier_from_tiers,
)
from kscand.sim import workloads as wl
from kscand.sim.lifetimes import ExitQueue
from kscand.sim.process import (
    PFN_NODE_SHIFT,
    UNPOPULATED_KINDS,
    VMA_BASE,
    VMA_GAP,
    IdxArray,
    MoveChunk,
    MoveHistory,
    SimClock,
    SimProcess,
    SimVma,
)
from kscand.sim.scenario import ProcessSpec, Scenario
from kscand.sim.tiermoves import TierMoves
from kscand.sim.view import SimView


class SimMachine:
    """A simulated NUMA machine with memory tiers, running a scenario's processes."""

    def __init__(self, scenario: Scenario, seed: int | None = None) -> None:
        self.scenario = scenario
        self.params = scenario.sim
        # SFC64: the fastest of numpy's generators; one draw per page tested.
        # Two streams from one seed: what the workloads look like (the same whatever
        # the policy does, so policies compare on identical processes), and what
        # happens as the run goes (Accessed-bit draws, injected faults).
        workload_seed, run_seed = np.random.SeedSequence(
            scenario.seed if seed is None else seed
        ).spawn(2)
        self.workload_rng = np.random.Generator(np.random.SFC64(workload_seed))
        self.rng = np.random.Generator(np.random.SFC64(run_seed))
        self._clock = SimClock()
        nodes = sorted(scenario.nodes, key=lambda n: n.nid)
        self.nids = np.array([n.nid for n in nodes], dtype=np.int32)
        size = int(self.nids.max()) + 1
        self.capacity_pages = np.zeros(size, dtype=np.int64)
        self.used_pages = np.zeros(size, dtype=np.int64)
        # The kernel's reserve per node (NodeInfo.wmark_pages): moves into a node
        # stop with ENOMEM this far above full. Scenarios leave it 0.
        self.wmark_pages = np.zeros(size, dtype=np.int64)
        self.latency_ns = np.zeros(size, dtype=np.float64)
        for n in nodes:
            self.capacity_pages[n.nid] = n.capacity_pages
            self.latency_ns[n.nid] = n.latency_ns
        top = top_tier_from_tiers({n.nid: n.tier for n in nodes}, {n.nid: n.cpus for n in nodes})
        self._node_specs = {n.nid: n for n in nodes}
        self.top_nids = tuple(n.nid for n in nodes if n.nid in top)
        self.slow_nids = tuple(n.nid for n in nodes if n.nid not in top)
        self.toptier = np.zeros(size + 1, dtype=np.bool_)  # indexed by nid + 1
        for nid in self.top_nids:
            self.toptier[nid + 1] = True
        self.procs: dict[int, SimProcess] = {}
        self._exits = ExitQueue()
        self.exited: list[SimProcess] = []
        self._pending = sorted(
            (
                (p.start_s + r * p.stagger_s, i, r)
                for i, p in enumerate(scenario.processes)
                for r in range(p.count)
            ),
            key=lambda e: (e[0], e[1], e[2]),
        )
        self._page_faults = {
            -getattr(errno, name): rate
            for name, rate in self.params.move_faults
            if name not in MOVE_CALL_FAULTS
        }
        if self.params.ebusy_rate:
            self._page_faults[-errno.EBUSY] = self.params.ebusy_rate
        self._call_faults = dict(self.params.move_faults)
        self._pending_pos = 0
        self._last_pid = 999
        self._last_start_time = -1
        self._next_page_id = 0
        self.record_moves = False
        self.nr_injected: Counter[str] = Counter()  # injected move failures, by errno name
        self.move_log: list[tuple[ProcessId, U64Array]] = []
        self.move_history = MoveHistory()  # recorded while record_moves is set
        self.tier_moves = TierMoves()  # always counted: what every policy promoted
        self.nr_exits = 0
        self._view = SimView(self)
        self._advance()

    @property
    def clock(self) -> SimClock:
        return self._clock

    @property
    def view(self) -> SimView:
        """The read-only view the metrics and the baselines read (kscand.sim.view)."""
        return self._view

    # --- time and lifetimes ----------------------------------------------------------

    def _advance(self) -> None:
        """Start and exit the processes whose time has come (those only: both are queued
        by time, exits first, then starts, each in start order)."""
        now_s = self.clock.now_s
        for sim_proc in self._exits.due(now_s, self.procs):
            self._exit(sim_proc.proc.pid)
        while self._pending_pos < len(self._pending):
            start_s, spec_idx, replica = self._pending[self._pending_pos]
            if start_s > now_s:
                break
            self._pending_pos += 1
            self._start(self.scenario.processes[spec_idx], replica)

    def _alloc_pid(self) -> int:
        pid_max = self.params.pid_max
        pid = self._last_pid
        for _ in range(pid_max):
            pid = pid + 1 if pid + 1 < pid_max else 300
            if pid not in self.procs:
                self._last_pid = pid
                return pid
        raise ConfigError("sim.pid_max: no free pid left")

    def _start(self, spec: ProcessSpec, replica: int) -> SimProcess:
        pid = self._alloc_pid()
        start_time = max(self.clock.now_ns(), self._last_start_time + 1)
        self._last_start_time = start_time
        vmas: list[SimVma] = []
        vaddr = VMA_BASE
        for vspec in spec.vmas:
            n = vspec.nr_pages
            vmas.append(
                SimVma(
                    start=vaddr,
                    kind_name=vspec.kind,
                    spec=vspec,
                    workload=wl.make_workload(vspec.workload, n, self.workload_rng),
                    page_id_base=self._next_page_id,
                    nid=np.full(n, NID_NONE, dtype=np.int8),
                    last_clear_s=np.full(n, self.clock.now_s, dtype=np.float32),
                )
            )
            self._next_page_id += n
            vaddr += n * PAGE_SIZE + VMA_GAP
        exit_s = spec.exit_s
        if spec.lifetime_s is not None:
            exit_s = self.clock.now_s + spec.lifetime_s
        sim_proc = SimProcess(ProcessId(pid, start_time), f"{spec.name}.{replica}"
                              if spec.count > 1 else spec.name, vmas, exit_s, spec.scale)
        self._place(sim_proc, spec)
        self.procs[pid] = sim_proc
        self._exits.started(sim_proc)
        return sim_proc

    def _placement_order(self, spec: ProcessSpec) -> list[int]:
        top, slow = list(self.top_nids), list(self.slow_nids)
        if spec.placement == "node":
            rest = [n for n in top + slow if n not in spec.placement_nids]
            return [*spec.placement_nids, *rest]
        if spec.placement in ("fast", "first-touch"):
            return top + slow
        return slow + top

    def _place(self, sim_proc: SimProcess, spec: ProcessSpec) -> None:
        """Fault in every page of the process, filling nodes in placement order."""
        if spec.placement == "interleave":
            self._interleave(sim_proc, spec.placement_nids)
            return
        order = self._placement_order(spec)
        for vma in sim_proc.vmas:
            if vma.kind_name in UNPOPULATED_KINDS:
                continue
            done = 0
            for nid in order:
                free = int(self.capacity_pages[nid] - self.used_pages[nid])
                take = min(free, vma.nr_pages - done)
                if vma.thp:
                    take -= take % HPAGE_PMD_NR
                if take <= 0:
                    continue
                vma.nid[done : done + take] = nid
                self.used_pages[nid] += take
                done += take
                if done == vma.nr_pages:
                    break
            if done < vma.nr_pages:
                raise ConfigError(
                    f"processes: {sim_proc.name} does not fit in memory at "
                    f"t={self.clock.now_s:.1f}s"
                )

    def _interleave(self, sim_proc: SimProcess, nids: tuple[int, ...]) -> None:
        """MPOL_INTERLEAVE: folio i of each VMA on nids[i % len(nids)]."""
        for vma in sim_proc.vmas:
            if vma.kind_name in UNPOPULATED_KINDS:
                continue
            folio_pages = HPAGE_PMD_NR if vma.thp else 1
            folio = np.arange(vma.nr_pages) // folio_pages
            vma.nid[:] = np.array(nids, dtype=np.int8)[folio % len(nids)]
            per_node = np.bincount(vma.nid.astype(np.intp), minlength=self.used_pages.size)
            self.used_pages += per_node
        if np.any(self.used_pages > self.capacity_pages):
            raise ConfigError(
                f"processes: {sim_proc.name} does not fit on nodes {nids} at "
                f"t={self.clock.now_s:.1f}s"
            )

    def _exit(self, pid: int) -> None:
        sim_proc = self.procs.pop(pid)
        for vma in sim_proc.vmas:
            present = vma.nid[vma.nid >= 0].astype(np.intp)
            self.used_pages -= np.bincount(present, minlength=self.used_pages.size)
        self.exited.append(sim_proc)
        self.nr_exits += 1

    def kill(self, proc: ProcessId) -> None:
        """Make a process exit now (tests: exit mid-scan)."""
        if self.is_alive(proc):
            self._exit(proc.pid)

    def _get(self, proc: ProcessId) -> SimProcess:
        self._advance()
        sim_proc = self.procs.get(proc.pid)
        if sim_proc is None or sim_proc.proc != proc:
            raise ProcessGone(f"process {proc} is gone")
        return sim_proc

    # --- the Machine interface ---------------------------------------------------------

    def topology(self) -> Topology:
        nodes = tuple(
            NodeInfo(
                nid=nid,
                capacity_pages=int(self.capacity_pages[nid]),
                free_pages=int(self.capacity_pages[nid] - self.used_pages[nid]),
                has_cpu=spec.cpus,
                tier=spec.tier,
                top_tier=nid in self.top_nids,
                wmark_pages=int(self.wmark_pages[nid]),
            )
            for nid, spec in self._node_specs.items()
        )
        return Topology(nodes)

    def processes(self) -> list[ProcessId]:
        self._advance()
        return [p.proc for p in self.procs.values()]

    def is_alive(self, proc: ProcessId) -> bool:
        self._advance()
        sim_proc = self.procs.get(proc.pid)
        return sim_proc is not None and sim_proc.proc == proc

    def describe(self, proc: ProcessId) -> ProcessInfo:
        sim_proc = self._get(proc)
        return ProcessInfo(comm=sim_proc.name[:15], cgroup=f"/sim/{sim_proc.name}")

    def vmas(self, proc: ProcessId) -> list[Vma]:
        return [Vma(v.start, v.end, v.vm_flags, v.kind_name) for v in self._get(proc).vmas]

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        sim_proc = self._get(proc)
        self.clock.charge_ns(((end - start) >> PAGE_SHIFT) * self.params.scan_cost_ns_per_pte)
        vaddrs = np.arange(start, end, PAGE_SIZE, dtype=np.uint64)
        vma_idx = sim_proc.vma_index(start)
        if vma_idx < 0 or end > sim_proc.vmas[vma_idx].end:
            return self._gather(sim_proc, vaddrs)
        vma = sim_proc.vmas[vma_idx]
        first = (start - vma.start) >> PAGE_SHIFT
        return _batch_of(vma, slice(first, first + vaddrs.shape[0]), vaddrs)

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        return self._gather(self._get(proc), vaddrs)

    def _gather(self, sim_proc: SimProcess, vaddrs: U64Array) -> PageBatch:
        n = vaddrs.shape[0]
        out = PageBatch(
            vaddrs.astype(np.uint64, copy=True),
            np.zeros(n, dtype=np.uint64),
            np.full(n, NID_NONE, dtype=np.int32),
            np.zeros(n, dtype=np.uint32),
        )
        for vma_idx, where, at in _group_by_vma(sim_proc, vaddrs):
            part = _batch_of(sim_proc.vmas[vma_idx], at, vaddrs[where])
            out.pfn[where], out.nid[where], out.flags[where] = part.pfn, part.nid, part.flags
        return out

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        sim_proc = self._get(proc)
        now_s = self.clock.now_s
        young = np.zeros(len(pages), dtype=np.bool_)
        for vma_idx, where, at in _group_by_vma(sim_proc, pages.vaddr):
            vma = sim_proc.vmas[vma_idx]
            present = vma.nid[at] >= 0
            if not present.all():
                keep = np.flatnonzero(present)
                at, where = _index_array(at)[keep], _index_array(where)[keep]
            expected = _expected_accesses(vma, at, now_s)
            draw = self.rng.random(expected.shape[0], dtype=np.float32)
            young[where] = draw < wl.accessed_probability(expected)
            vma.last_clear_s[at] = now_s
        return young

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        sim_proc = self._get(proc)
        self.clock.charge_ns(self.params.move_cost_ns_per_call)
        self._inject_call_faults(proc)
        status = np.full(vaddrs.shape[0], -errno.EFAULT, dtype=np.int32)
        if nid not in self._node_specs:
            status[:] = -errno.ENODEV
            return status
        nr_before = self.move_history.nr_pages
        for vma_idx, where, at in _group_by_vma(sim_proc, vaddrs):
            status[where] = self._move_in_vma(proc, sim_proc.vmas[vma_idx], _index_array(at),
                                              nid)
        if self.record_moves:
            self.move_log.append((proc, vaddrs[status == nid].copy()))
            if self.move_history.nr_pages > nr_before:
                self.move_history.nr_calls += 1
        return status

    def _inject_call_faults(self, proc: ProcessId) -> None:
        """The whole call fails: ESRCH (process gone) or EPERM (not allowed)."""
        if self._call_faults.get("ESRCH", 0.0) > self.rng.random():
            self.nr_injected["ESRCH"] += 1
            raise ProcessGone(f"move_pages({proc.pid}): ESRCH (injected)")
        if self._call_faults.get("EPERM", 0.0) > self.rng.random():
            self.nr_injected["EPERM"] += 1
            raise AccessDenied(f"move_pages({proc.pid}): EPERM (injected)")

    def _move_in_vma(self, proc: ProcessId, vma: SimVma, page_idx: IdxArray,
                     nid: int) -> I32Array:
        """move_pages(2) semantics for pages of one VMA; returns their status."""
        if vma.vm_flags & (VmFlag.IO | VmFlag.PFNMAP):
            return np.full(page_idx.shape[0], -errno.EFAULT, dtype=np.int32)
        folio_pages = HPAGE_PMD_NR if vma.thp else 1
        heads = page_idx - page_idx % folio_pages
        heads, inverse = np.unique(heads, return_inverse=True)
        cur = vma.nid[heads].astype(np.int32)
        status = cur.copy()
        status[cur < 0] = -errno.ENOENT
        if vma.page_flags & PageFlag.SHARED:
            status[cur >= 0] = -errno.EACCES
        todo = (status >= 0) & (cur != nid)
        for code, rate in self._page_faults.items():
            hit = todo & (self.rng.random(heads.shape[0]) < rate)
            status[hit] = code
            todo &= ~hit
            self.nr_injected[errno.errorcode[-code]] += int(np.count_nonzero(hit))
        free = int(self.capacity_pages[nid] - self.used_pages[nid] - self.wmark_pages[nid])
        fits = np.cumsum(todo.astype(np.int64) * folio_pages) <= free
        status[todo & ~fits] = -errno.ENOMEM
        move = heads[todo & fits]
        if move.size:
            sub = (move[:, None] + np.arange(folio_pages)).ravel()
            old = vma.nid[sub].astype(np.intp)
            self.used_pages -= np.bincount(old, minlength=self.used_pages.size)
            self.used_pages[nid] += sub.size
            vma.nid[sub] = nid
            vma.note_moved(sub, old, nid, self.clock.now_s)
            self.tier_moves.record(proc, old, nid, self.toptier)
            if self.record_moves:
                self.move_history.record(MoveChunk(vma, sub, old.astype(np.int8), nid,
                                                   self.clock.now_s))
            status[todo & fits] = nid
            self.clock.charge_ns(sub.size * self.params.move_cost_ns_per_page)
        return status[inverse]

    # --- what the report needs ---------------------------------------------------------

    def alive(self) -> list[SimProcess]:
        return list(self.procs.values())

    def scale_of(self, proc: ProcessId) -> int | None:
        """The scenario's scale for a process (kscand's scale policy in the simulator)."""
        sim_proc = self.procs.get(proc.pid)
        return sim_proc.scale if sim_proc is not None and sim_proc.proc == proc else None


def _batch_of(vma: SimVma, at: wl.PageIndex, vaddrs: U64Array) -> PageBatch:
    """The PageBatch of pages at (an index array or a slice) of one VMA."""
    nid8 = vma.nid[at]
    n = nid8.shape[0]
    present = nid8 >= 0
    all_present = bool(present.all())
    nid = nid8.astype(np.int32)
    base = np.uint32(vma.page_flags | PageFlag.PRESENT)
    flags = np.full(n, base, dtype=np.uint32) if all_present else np.where(
        present, base, np.uint32(0)
    ).astype(np.uint32)
    if vma.thp:
        idx = np.arange(at.start, at.stop) if isinstance(at, slice) else at
        head = (idx % HPAGE_PMD_NR) == 0
        flags |= np.where(head, np.uint32(PageFlag.THP_HEAD), np.uint32(PageFlag.THP_TAIL))
        if not all_present:
            flags[~present] = 0
    page_id = ((vaddrs - np.uint64(vma.start)) >> np.uint64(PAGE_SHIFT)) + np.uint64(
        vma.page_id_base
    )
    pfn = ((nid + 1).astype(np.uint64) << np.uint64(PFN_NODE_SHIFT)) | page_id
    if not all_present:
        pfn[~present] = 0
    return PageBatch(vaddrs, pfn, nid, flags)


def _group_by_vma(
    sim_proc: SimProcess, vaddrs: U64Array
) -> list[tuple[int, wl.PageIndex, wl.PageIndex]]:
    """(vma index, positions in vaddrs, pages of the VMA) per VMA hit.

    Addresses are strictly ascending (the Machine contract). A run of
    consecutive pages inside one VMA, what the scanner passes, comes back as
    slices: no index arrays, no gathers.
    """
    n = vaddrs.shape[0]
    if not n:
        return []
    first, last = sim_proc.vma_index(int(vaddrs[0])), sim_proc.vma_index(int(vaddrs[-1]))
    if first >= 0 and first == last:
        vma = sim_proc.vmas[first]
        first_page = (int(vaddrs[0]) - vma.start) >> PAGE_SHIFT
        if int(vaddrs[-1]) - int(vaddrs[0]) == (n - 1) * PAGE_SIZE:
            return [(first, slice(0, n), slice(first_page, first_page + n))]
        page_idx = ((vaddrs - np.uint64(vma.start)) >> np.uint64(PAGE_SHIFT)).astype(np.intp)
        return [(first, slice(0, n), page_idx)]
    vma_idx = sim_proc.vma_of(vaddrs)
    groups: list[tuple[int, wl.PageIndex, wl.PageIndex]] = []
    for v in np.unique(vma_idx):
        if v < 0:
            continue
        where = np.flatnonzero(vma_idx == v)
        vma = sim_proc.vmas[int(v)]
        page_idx = ((vaddrs[where] - np.uint64(vma.start)) >> np.uint64(PAGE_SHIFT)).astype(
            np.intp
        )
        groups.append((int(v), where, page_idx))
    return groups


def _index_array(at: wl.PageIndex) -> IdxArray:
    return np.arange(at.start, at.stop, dtype=np.intp) if isinstance(at, slice) else at


def _expected_accesses(vma: SimVma, pages_at: wl.PageIndex, now_s: float) -> wl.F32Array:
    """Expected accesses of each folio since its Accessed bit was last cleared."""
    t0 = vma.last_clear_s[pages_at]
    if not vma.thp:
        return vma.workload.integral(pages_at, t0, now_s)
    page_idx = _index_array(pages_at)
    heads = page_idx - page_idx % HPAGE_PMD_NR
    sub = (heads[:, None] + np.arange(HPAGE_PMD_NR)).ravel()
    per_page = vma.workload.integral(sub, np.repeat(t0, HPAGE_PMD_NR), now_s)
    out: wl.F32Array = per_page.reshape(-1, HPAGE_PMD_NR).sum(axis=1)
    return out
