"""Capacity-aware placement: per top-tier node, which heat bins deserve the node.

Every scanned page counts, by heat bin (kscand.core.hotness), in the histogram of
one top-tier node: a resident of that node under its own nid, a slow-tier
page under the node its process would promote to. A process contributes the
histograms of its last complete pass (during its first pass, what it has seen
so far); moves shift their pages from "wants" to "holds" and back.

From the histograms and the node's free memory, a NodePlan per top-tier
node: the threshold (the lowest bin such that the pages at or above it fit
what the node can hold for scanned processes) and whether the node is short
(not everything with evidence of access fits). While a node has room the
threshold is bin 1: first evidence promotes (on page-exact sources, the re-probe's:
promote_on_reprobe).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.core.hotness import NR_HEAT_BINS, threshold_bin
from kscand.core.room import room_pages
from kscand.core.tunables import Tunables
from kscand.machine import BoolArray, Topology

I64Array = npt.NDArray[np.int64]
# A histogram key: (top-tier nid, resident?) -- False: slow-tier pages that want the node.
HeatKey = tuple[int, bool]


def _zeros() -> I64Array:
    return np.zeros(NR_HEAT_BINS, dtype=np.int64)


def add_into(hists: dict[HeatKey, I64Array], key: HeatKey, counts: I64Array) -> None:
    """hists[key] += counts (created zeroed)."""
    cur = hists.get(key)
    if cur is None:
        hists[key] = counts.copy()
    else:
        cur += counts


class HeatLedger:
    """The engine's total heat histograms per (top-tier node, resident?)."""

    def __init__(self) -> None:
        self.hists: dict[HeatKey, I64Array] = {}

    def of(self, key: HeatKey) -> I64Array:
        return self.hists.get(key, _zeros())

    def add(self, key: HeatKey, counts: I64Array) -> None:
        add_into(self.hists, key, counts)

    def sub(self, key: HeatKey, counts: I64Array) -> None:
        cur = self.hists.get(key)
        if cur is None:
            return
        np.subtract(cur, counts, out=cur)
        np.maximum(cur, 0, out=cur)

    def replace(
        self, old: dict[HeatKey, I64Array], new: dict[HeatKey, I64Array]
    ) -> None:
        """A process's contribution changes from old to new."""
        for key, counts in old.items():
            self.sub(key, counts)
        for key, counts in new.items():
            self.add(key, counts)


def shift_histograms(
    hists: dict[HeatKey, I64Array], src: HeatKey, dst: HeatKey, counts: I64Array
) -> None:
    """Moved pages leave hists[src] for hists[dst] (never below 0)."""
    for key, sign in ((src, -1), (dst, 1)):
        cur = hists.get(key)
        if cur is None:
            hists[key] = np.maximum(counts * sign, 0)
        else:
            np.maximum(cur + counts * sign, 0, out=cur)


def moved_histogram(heat: npt.NDArray[np.uint8], nr_pages: I64Array) -> I64Array:
    """Pages per heat bin of moved folios. (n,) -> int64 (NR_HEAT_BINS,)."""
    return np.bincount(heat, weights=nr_pages, minlength=NR_HEAT_BINS).astype(np.int64)


@dataclass(frozen=True, slots=True)
class NodePlan:
    """What one top-tier node takes now."""

    nid: int
    threshold: int  # the pages at or above this heat bin fit; residents below may be exchanged
    short: bool  # more pages with evidence of access want the node than it can hold
    usable_pages: int  # what the node can hold for scanned processes
    promote_min: int = 1  # candidates from this bin on are queued: the threshold, or the
    # bin under it that fits only in part (who of it gets in, exchange and room decide)


def node_plan(
    nid: int, ledger: HeatLedger, free_pages: int, reserve_pages: int
) -> NodePlan:
    """The plan of one node: its residents count as room they could give back."""
    resident = ledger.of((nid, True))
    wanting = ledger.of((nid, False))
    usable = max(0, free_pages - reserve_pages) + int(resident.sum())
    hist = resident + wanting
    threshold = threshold_bin(hist, usable)
    below = np.flatnonzero(hist[1:threshold]) + 1
    promote_min = int(below[-1]) if below.size else threshold
    # Short: not everything with evidence fits, or what wants in does not fit the free
    # room (residents without evidence of access must make it).
    short = threshold > 1 or int(wanting[1:].sum()) > max(0, free_pages - reserve_pages)
    return NodePlan(nid, threshold, short, usable, min(promote_min, threshold))


def plan_nodes(topology: Topology, ledger: HeatLedger, tunables: Tunables) -> dict[int, NodePlan]:
    """A NodePlan per top-tier node."""
    plans = {}
    for node in topology.nodes:
        if not node.top_tier:
            continue
        reserve = node.free_pages - room_pages(node, tunables.target_free_min_pct)
        plans[node.nid] = node_plan(node.nid, ledger, node.free_pages, reserve)
    return plans


@dataclass(frozen=True, slots=True)
class ScanContext:
    """What every layer of one step's scans reads: fixed for the step."""

    now_ns: int
    topology: Topology
    toptier: BoolArray  # by nid + 1 (Topology.toptier_table)
    plans: dict[int, NodePlan]
    default_target: int | None  # the target of a process with no preference
    tunables: Tunables
    demote_wanted: bool  # the watermark demoter wants cold top-tier folios
    reprobe_s: float = 0.0  # this step's re-probe delay (0: no re-probe)
    young_scans: int = 1  # promote_young_scans resolved for the access source
    short_evidence: bool = False  # promote_on_reprobe in force: a re-probe must have seen it

    @property
    def now_s(self) -> float:
        return self.now_ns / 1e9

    def threshold_for(self, target_nid: int | None) -> int:
        """The lowest heat bin queued for the node a process promotes to."""
        plan = self.plans.get(target_nid if target_nid is not None else -1)
        if plan is None and self.default_target is not None:
            plan = self.plans.get(self.default_target)
        # No plan (no valid target): evidence is enough to queue, and the migrator
        # counts the drop (drop_no_target) instead of losing it without a word.
        return plan.promote_min if plan is not None else 1


# Re-probed top-tier pages judged at one delay before it may change again: at least
# this many, and at least as many as the short nodes hold (about one look at each of
# their pages: a sample of one range of one process would not stand for the node). A
# fresh sample: the control reads what the new delay does, not what the old one did.
REPROBE_SAMPLE_PAGES = 512
# The band of r x t (the typical re-probed page's rate times the delay, read from the
# share found accessed again, f = 1 - exp(-r t)) the delay is kept in: within a factor
# of two of the most informative interval, 1 / r.
REPROBE_RT_BAND = (0.5, 2.0)


def next_reprobe_delay_s(delay_s: float, young_share: float, lo_s: float, hi_s: float) -> float:
    """The delay after a sample in which young_share of the re-probed pages were found
    accessed again: halved when r t is over the band, doubled when under it, kept in
    [lo_s, hi_s].

    Read from the raw share, never from heat: heat reinterprets every stored bit at
    the current delay, so a delay chosen from a heat threshold shortens itself (a
    shorter delay reads the same bits as hotter, which raises the threshold, which
    asks for a shorter delay).
    """
    rt = -np.log1p(-min(young_share, 1.0 - 1e-9))
    if rt > REPROBE_RT_BAND[1]:
        delay_s /= 2
    elif rt < REPROBE_RT_BAND[0]:
        delay_s *= 2
    return float(min(hi_s, max(lo_s, delay_s)))


class ReprobeDelay:
    """The re-probe delay: reprobe_delay_ms while every top-tier node has room; while
    one is short, adapted so that the re-probes rank the pages the top tier holds
    (about 1 - 1/e of its re-probed pages found accessed again, so that its coldest
    residents and the hottest candidates, which decide an exchange, are told apart
    rather than all found accessed), between one step and half the shortest scan
    period (at most a second)."""

    def __init__(self) -> None:
        self.delay_s: float | None = None  # None: not adapting (no node short)
        self.nr_probed = 0  # pages re-probed at the current delay
        self.nr_young = 0
        self.sample_pages = REPROBE_SAMPLE_PAGES

    def current_s(self, plans: dict[int, NodePlan], tunables: Tunables) -> float:
        if tunables.reprobe_delay_ms <= 0:
            return 0.0
        short = [p.usable_pages for p in plans.values() if p.short]
        self.sample_pages = max(REPROBE_SAMPLE_PAGES, sum(short))
        if not short:
            self.delay_s = None
            self.nr_probed = self.nr_young = 0
            return tunables.reprobe_delay_ms / 1e3
        lo_s, hi_s = self.bounds_s(tunables)
        if self.delay_s is None:
            self.delay_s = min(hi_s, max(lo_s, tunables.reprobe_delay_ms / 1e3))
        return self.delay_s

    @staticmethod
    def bounds_s(tunables: Tunables) -> tuple[float, float]:
        lo_s = max(tunables.scan_sleep_ms, 1) / 1e3
        return lo_s, max(lo_s, min(1.0, tunables.scan_period_min_ms / 2e3))

    def observe(self, delay_s: float, nr_probed: int, nr_young: int, tunables: Tunables) -> None:
        """Top-tier pages re-probed delay_s after their scan, and those found accessed
        again: a sample of the current delay (only), adapted on when complete."""
        if self.delay_s is None or delay_s != self.delay_s or nr_probed <= 0:
            return
        self.nr_probed += nr_probed
        self.nr_young += nr_young
        if self.nr_probed < self.sample_pages:
            return
        lo_s, hi_s = self.bounds_s(tunables)
        self.delay_s = next_reprobe_delay_s(
            self.delay_s, self.nr_young / self.nr_probed, lo_s, hi_s
        )
        self.nr_probed = self.nr_young = 0


def series_context(topology: Topology, tunables: Tunables, now_ns: int) -> ScanContext:
    """A context with no placement plan (the series' rule, or a scan that moves nothing)."""
    return ScanContext(now_ns, topology, topology.toptier_table(), {}, None, tunables, False)
