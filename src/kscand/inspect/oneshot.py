"""A read-only scan of one process with the engine's own Scanner (for `kscand scan`).

The real Scanner runs N passes over the process through an observing wrapper
of the machine that records what each pass read and found accessed, and
whose move_pages refuses: nothing is ever moved. The scanner is handed a view
of the topology in which every node is slow, so every hot folio reaches the
migrator's add(), where it is recorded (the queue is never drained); the
candidates are the recorded hot folios that really sit on a slow-tier node,
exactly what the daemon's scanner would queue.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.core.filters import NR_PAGE_SKIP, folio_sizes, page_skip_codes
from kscand.core.migrator import Migrator
from kscand.core.mmlist import MmSlot
from kscand.core.placement import series_context
from kscand.core.room import default_target
from kscand.core.scanner import Scanner
from kscand.core.scanplan import ScanEnd, plan_scan
from kscand.core.stats import PageSkip, Stats
from kscand.core.tunables import Tunables
from kscand.errors import ProcessGone, Unsupported
from kscand.live.linux import LinuxMachine
from kscand.machine import (
    BoolArray,
    I32Array,
    I64Array,
    MachineProxy,
    PageBatch,
    PageFlag,
    ProcessId,
    Topology,
    U64Array,
)

WHOLE_PROCESS_BYTES = 1 << 40  # the largest scan_size_bytes: one pass covers everything


def _add_by_nid(counts: Counter[int], nid: I32Array, weights: I64Array | None = None) -> None:
    """counts[nid] += weight for each entry (vectorized; NID_NONE entries ignored)."""
    keep = nid >= 0
    if not keep.any():
        return
    per_nid = np.bincount(nid[keep], weights=None if weights is None else weights[keep])
    for node in np.flatnonzero(per_nid).tolist():
        counts[node] += int(per_nid[node])


@dataclass
class PassRecord:
    """What one pass saw, base pages per node and the addresses for a heatmap."""

    resident_by_nid: Counter[int] = field(default_factory=Counter)
    eligible_by_nid: Counter[int] = field(default_factory=Counter)
    accessed_by_nid: Counter[int] = field(default_factory=Counter)
    hot_by_nid: Counter[int] = field(default_factory=Counter)
    eligible_vaddr: list[U64Array] = field(default_factory=list)
    accessed_vaddr: list[U64Array] = field(default_factory=list)
    hot: list[PageBatch] = field(default_factory=list)
    hot_nr_pages: list[I64Array] = field(default_factory=list)
    page_skips: Counter[str] = field(default_factory=Counter)  # PageSkip counter -> pages
    elapsed_s: float = 0.0


class ObservingMachine(MachineProxy):
    """Delegates to a LinuxMachine, records each pass, and never moves a page."""

    def __init__(self, inner: LinuxMachine) -> None:
        super().__init__(inner)
        self.passes: list[PassRecord] = []

    @property
    def current(self) -> PassRecord:
        return self.passes[-1]

    def begin_pass(self) -> PassRecord:
        self.passes.append(PassRecord())
        return self.current

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        batch = self.inner.read_range(proc, start, end)
        record = self.current
        present = (batch.flags & PageFlag.PRESENT) != 0
        _add_by_nid(record.resident_by_nid, batch.nid[present])
        codes = page_skip_codes(batch.flags)
        per_code = np.bincount(codes, minlength=NR_PAGE_SKIP)
        for code in np.flatnonzero(per_code[PageSkip.NOT_PRESENT :]).tolist():
            skip = PageSkip(code + PageSkip.NOT_PRESENT)
            record.page_skips[skip.counter] += int(per_code[skip])
        eligible = codes <= PageSkip.ELIGIBLE_THP
        _add_by_nid(record.eligible_by_nid, batch.nid[eligible], folio_sizes(batch.flags)[eligible])
        record.eligible_vaddr.append(batch.vaddr[eligible])
        return batch

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        young = self.inner.test_and_clear_young(proc, pages)
        self.current.accessed_vaddr.append(pages.vaddr[young])
        return young

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        raise Unsupported("kscand scan never moves pages")


class RecordingMigrator(Migrator):
    """A Migrator whose additions are recorded per pass; scan never drains it."""

    def __init__(self, machine: ObservingMachine, stats: Stats) -> None:
        super().__init__(machine, stats, queue_max=1 << 24, rate_mbps=1 << 30)
        self.observer = machine

    def add(
        self,
        proc: ProcessId,
        folios: PageBatch,
        nr_pages: I64Array,
        heat: npt.NDArray[np.uint8] | None = None,
        now_ns: int = 0,
    ) -> int:
        record = self.observer.current
        record.hot.append(folios)
        record.hot_nr_pages.append(nr_pages)
        _add_by_nid(record.hot_by_nid, folios.nid, nr_pages)
        return super().add(proc, folios, nr_pages, heat, now_ns)


@dataclass(frozen=True)
class Candidates:
    """Hot folios on slow-tier nodes in the last pass: what would be promoted (arrays (n,))."""

    vaddr: U64Array
    pfn: U64Array
    nid: I32Array
    nr_pages: I64Array

    @property
    def nr_base_pages(self) -> int:
        return int(self.nr_pages.sum())


@dataclass(frozen=True)
class ScanReport:
    """The result of scan_process."""

    proc: ProcessId
    topology: Topology
    access_source: str
    access_reason: str
    access_available: bool
    passes: tuple[PassRecord, ...]
    candidates: Candidates
    target_nid: int | None
    skips: dict[str, int]  # the last pass's VMA and page skips by counter name

    @property
    def last(self) -> PassRecord:
        return self.passes[-1]


def _candidates(record: PassRecord, topology: Topology) -> Candidates:
    if not record.hot:
        empty_u = np.zeros(0, dtype=np.uint64)
        return Candidates(empty_u, empty_u, np.zeros(0, np.int32), np.zeros(0, np.int64))
    vaddr = np.concatenate([b.vaddr for b in record.hot])
    pfn = np.concatenate([b.pfn for b in record.hot])
    nid = np.concatenate([b.nid for b in record.hot])
    nr_pages = np.concatenate(record.hot_nr_pages)
    slow = ~topology.toptier_table()[nid + 1]
    order = np.argsort(vaddr[slow], kind="stable")
    return Candidates(vaddr[slow][order], pfn[slow][order], nid[slow][order],
                      nr_pages[slow][order])


def _all_slow(topology: Topology) -> Topology:
    return Topology(tuple(dataclasses.replace(n, top_tier=False) for n in topology.nodes))


def scan_process(
    machine: LinuxMachine,
    proc: ProcessId,
    *,
    passes: int,
    interval_ns: int,
    tunables: Tunables | None = None,
) -> ScanReport:
    """Scan proc passes times, interval_ns apart, with the engine's Scanner; move nothing.

    Without an access source, one pass reads residency only. Raises
    ProcessGone if the process exits meanwhile.
    """
    base = tunables or Tunables()
    # The series' rule (hot = accessed in the last hot_history_depth passes): a
    # one-shot report has no re-probes to rank by and moves nothing.
    tunables = base.replace(scan_size_bytes=WHOLE_PROCESS_BYTES, rank_hotness=False)
    observer = ObservingMachine(machine)
    stats = Stats()
    topology = machine.topology()
    access = machine.access_source_name != "none"
    vma_skips: Counter[str] = Counter()
    if access:
        scanner = Scanner(observer, RecordingMigrator(observer, stats), stats)
        slot = MmSlot(proc)
        for index in range(passes):
            if index:
                machine.clock.sleep_ns(interval_ns)
            before = Counter(stats.of(proc))
            record = observer.begin_pass()
            started = time.monotonic()
            ctx = series_context(_all_slow(topology), tunables, machine.clock.now_ns())
            if scanner.scan_mm(slot, ctx) is ScanEnd.GONE:
                raise ProcessGone(f"process {proc} exited during the scan")
            record.accessed_by_nid.update(
                {nid: int(n) for nid, n in enumerate(slot.accessed_by_nid.tolist()) if n}
            )
            record.elapsed_s = time.monotonic() - started
            after = stats.of(proc)
            vma_skips = Counter({k: after[k] - before[k] for k in after if k.startswith("vma_")})
    else:
        record = observer.begin_pass()
        started = time.monotonic()
        plan = plan_scan(observer.vmas(proc), 0, WHOLE_PROCESS_BYTES)
        for start, end in plan.ranges:
            observer.read_range(proc, start, end)
        vma_skips = Counter(reason.value for reason in plan.skipped)
        record.elapsed_s = time.monotonic() - started
    skips = vma_skips + observer.current.page_skips
    return ScanReport(
        proc=proc,
        topology=topology,
        access_source=machine.access_source_name,
        access_reason=machine.access_source_reason,
        access_available=access,
        passes=tuple(observer.passes),
        candidates=_candidates(observer.passes[-1], topology),
        target_nid=default_target(topology, base),
        skips=dict(sorted(skips.items())),
    )
