"""Exact placement metrics of a simulated machine: tier shares, latency, the two bounds.

The share of accesses served by the top tier is the rate-weighted share of
pages on top-tier nodes. The oracle places the hottest movable pages on the
top tier, up to its capacity, anew at every sample: an upper bound for any
promotion policy, and a clairvoyant one when rates change over time (it knows
the next window of a trace). The static best in hindsight (HindsightTracker)
is the realizable bound: the movable pages with the most accesses over the
whole run that fit the top tier, placed at t=0 and never moved.

Means over a run are access-weighted: sample i stands for the weight_s seconds
after it and for the rate_per_s x weight_s accesses served in them, so a burst
counts by its accesses, not by its duration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import ProcessId
from kscand.sim.machine import SimMachine
from kscand.sim.process import MOVABLE_KINDS, SimProcess, SimVma

F32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process's placement at one time."""

    top_share: float  # share of its accesses served by the top tier
    oracle_share: float  # the same under the oracle placement
    nr_hot: int  # pages its workload calls hot, in VMAs kscand may move
    nr_hot_top: int  # of those, pages on the top tier
    latency_ns: float  # mean access latency from the node latencies
    rate_per_s: float = 0.0  # its accesses per second


@dataclass(frozen=True, slots=True)
class Sample:
    """The whole machine's placement at one time (totals over live processes)."""

    t_s: float
    top_share: float
    oracle_share: float
    nr_hot: int
    nr_hot_top: int
    latency_ns: float
    per_proc: dict[ProcessId, ProcSample]
    rate_per_s: float = 0.0  # accesses/s of every live process (the access weight)
    fixed_top_rate_per_s: float = 0.0  # of those, served by immovable pages on the top tier
    fixed_top_pages: int = 0  # immovable pages on the top tier


def safe_ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


@dataclass(frozen=True, slots=True)
class _ProcRates:
    total: float
    top: float
    latency_sum: float
    nr_hot: int
    nr_hot_top: int
    fixed_top_rate: float  # rate of immovable pages already on the top tier
    fixed_top_pages: int


def _proc_rates(machine: SimMachine, sim_proc: SimProcess, t_s: float) -> _ProcRates:
    """Rate sums of one process from its VMAs' per-node sums (kept current as pages move)."""
    size = machine.view.capacity_pages.shape[0]
    top = machine.view.toptier[1 : size + 1]
    latency = machine.view.latency_ns[:size]
    total = top_rate = latency_sum = fixed_top_rate = 0.0
    nr_hot = nr_hot_top = fixed_top_pages = 0
    for vma in sim_proc.vmas:
        stats = vma.node_stats(t_s, size)
        vma_top = float(stats.rate[top].sum())
        total += float(stats.rate.sum())
        top_rate += vma_top
        latency_sum += float(stats.rate @ latency)
        if vma.kind_name in MOVABLE_KINDS:
            nr_hot += int(stats.hot.sum())
            nr_hot_top += int(stats.hot[top].sum())
        else:
            fixed_top_rate += vma_top
            fixed_top_pages += int(stats.pages[top].sum())
    return _ProcRates(total, top_rate, latency_sum, nr_hot, nr_hot_top, fixed_top_rate,
                      fixed_top_pages)


def movable_rates(sim_proc: SimProcess, t_s: float) -> F32Array:
    """Access rates of the process's present pages that kscand may move."""
    parts = [
        vma.workload.rates(t_s)[vma.nid >= 0]
        for vma in sim_proc.vmas
        if vma.kind_name in MOVABLE_KINDS
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def oracle_top_rates(
    movable: list[F32Array], fixed_top_rate: list[float], top_pages_free: int
) -> list[float]:
    """Per process: the access rate the top tier serves when the hottest movable pages
    (over all processes) fill top_pages_free pages, plus its immovable top pages."""
    cut = top_k_cut(movable, top_pages_free)
    out = []
    for m, f in zip(movable, fixed_top_rate, strict=True):
        out.append(cut.top_sum(m) + f)
    return out


@dataclass(frozen=True, slots=True)
class TopKCut:
    """The k largest of several arrays: everything above threshold, and tie_fraction of
    each value equal to it (ties split evenly: the expectation of a random pick)."""

    threshold: float
    tie_fraction: float

    def top_sum(self, values: F32Array) -> float:
        """The sum of the values' part in the top k (no per-value temporary but masks)."""
        if self.tie_fraction == 1.0 and self.threshold == float("-inf"):
            return float(values.sum(dtype=np.float64))
        above = float(values[values > self.threshold].sum(dtype=np.float64))
        ties = int(np.count_nonzero(values == self.threshold))
        return above + self.threshold * ties * self.tie_fraction if ties else above

    def weights(self, values: F32Array) -> npt.NDArray[np.float64]:
        """Each value's share in the top k: 1, tie_fraction or 0. float64 (n,)."""
        out = (values > self.threshold).astype(np.float64)
        out[values == self.threshold] = self.tie_fraction
        return out


def top_k_cut(arrays: list[F32Array], k: int) -> TopKCut:
    """The TopKCut of the k largest values over arrays (every value when k >= their count)."""
    everything = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.float32)
    n = everything.shape[0]
    k = max(0, min(k, n))
    if k == n:
        return TopKCut(float("-inf"), 1.0)
    if k == 0:
        return TopKCut(float("inf"), 0.0)
    # The k-th largest value, by value counts: np.partition degrades badly on
    # the many ties of hot-set workloads, np.unique does not.
    values, counts = np.unique(everything, return_counts=True)
    del everything
    from_top = np.cumsum(counts[::-1])
    pos = int(np.searchsorted(from_top, k))  # first value (from the top) reaching k pages
    nr_above = int(from_top[pos - 1]) if pos > 0 else 0
    nr_ties_total = int(counts[::-1][pos])
    return TopKCut(float(values[::-1][pos]), (k - nr_above) / nr_ties_total)


def _rates_key(sim_proc: SimProcess, t_s: float) -> tuple[int, ...]:
    """What _proc_rates depends on besides the machine's nodes: its VMAs' moves and epochs."""
    return tuple(x for vma in sim_proc.vmas for x in (vma.nr_moves, vma.workload.epoch(t_s)))


class Sampler:
    """Takes Samples of a SimMachine; caches the oracle while rates do not change, and each
    process's rate sums while none of its pages moved and its rates did not change (a
    sample recomputes only the processes the policy touched: the cost of a sample is a
    key per process, not the sums)."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        self._oracle_key: tuple[object, ...] | None = None
        self._oracle: dict[ProcessId, float] = {}
        self._rates: dict[SimProcess, tuple[tuple[int, ...], _ProcRates]] = {}

    def _proc_rates(self, procs: list[SimProcess], t_s: float) -> dict[ProcessId, _ProcRates]:
        """_proc_rates of each process, recomputed where its key changed (by start order)."""
        cached, fresh = self._rates, {}
        per: dict[ProcessId, _ProcRates] = {}
        for sim_proc in procs:
            key = _rates_key(sim_proc, t_s)
            hit = cached.get(sim_proc)
            rates = hit[1] if hit is not None and hit[0] == key else _proc_rates(
                self.machine, sim_proc, t_s)
            fresh[sim_proc] = (key, rates)
            per[sim_proc.proc] = rates
        self._rates = fresh  # the processes gone are dropped
        return per

    def sample(self, t_s: float) -> Sample:
        machine = self.machine
        procs = machine.view.alive()
        per = self._proc_rates(procs, t_s)
        oracle = self._oracle_rates(procs, per, t_s)
        per_proc = {
            proc: ProcSample(
                top_share=safe_ratio(r.top, r.total),
                oracle_share=safe_ratio(oracle[proc], r.total),
                nr_hot=r.nr_hot,
                nr_hot_top=r.nr_hot_top,
                latency_ns=safe_ratio(r.latency_sum, r.total),
                rate_per_s=r.total,
            )
            for proc, r in per.items()
        }
        total = sum(r.total for r in per.values())
        return Sample(
            t_s=t_s,
            top_share=safe_ratio(sum(r.top for r in per.values()), total),
            oracle_share=safe_ratio(sum(oracle.values()), total),
            nr_hot=sum(r.nr_hot for r in per.values()),
            nr_hot_top=sum(r.nr_hot_top for r in per.values()),
            latency_ns=safe_ratio(sum(r.latency_sum for r in per.values()), total),
            per_proc=per_proc,
            rate_per_s=total,
            fixed_top_rate_per_s=sum(r.fixed_top_rate for r in per.values()),
            fixed_top_pages=sum(r.fixed_top_pages for r in per.values()),
        )

    def _oracle_rates(
        self, procs: list[SimProcess], per: dict[ProcessId, _ProcRates], t_s: float
    ) -> dict[ProcessId, float]:
        key = tuple((p.proc, tuple(v.workload.epoch(t_s) for v in p.vmas)) for p in procs)
        if key == self._oracle_key:
            return self._oracle
        machine = self.machine
        top_capacity = machine.view.top_capacity_pages()
        fixed_pages = sum(r.fixed_top_pages for r in per.values())
        keys = list(per)
        by_proc = {p.proc: p for p in procs}
        rates = oracle_top_rates(
            [movable_rates(by_proc[k], t_s) for k in keys],
            [per[k].fixed_top_rate for k in keys],
            top_capacity - fixed_pages,
        )
        self._oracle_key = key
        self._oracle = dict(zip(keys, rates, strict=True))
        return self._oracle


# --- over a whole run: access-weighted means, the static best in hindsight ---------------


def access_weighted(values: list[float], rates_per_s: list[float],
                    weights_s: list[float]) -> float:
    """Mean of per-sample values weighted by the accesses each sample stands for
    (rate x seconds). 0 when no access was served."""
    acc = np.asarray(rates_per_s, dtype=np.float64) * np.asarray(weights_s, dtype=np.float64)
    return safe_ratio(float(acc @ np.asarray(values, dtype=np.float64)), float(acc.sum()))


def sample_weights_s(times_s: list[float], interval_s: float, end_s: float) -> list[float]:
    """The seconds of the run each sample stands for: the interval after it, cut at the end."""
    return [max(0.0, min(interval_s, end_s - t)) for t in times_s]


@dataclass(slots=True)
class _EpochUse:
    """One workload epoch of one VMA as the samples saw it."""

    t_s: float  # a time inside the epoch (its first sample's)
    weight_s: float  # seconds of the run its samples stand for
    samples: list[int]  # indices of those samples


@dataclass(frozen=True, slots=True)
class MinTraffic:
    """The fewest base-page moves that turn the initial placement into the static best.

    promote_pages: pages of the static best's top set that were not on the top tier
    when their process started; demote_pages: the pages that must leave the top tier
    to make room for them, max(0, initially on top + promote_pages - top capacity).
    """

    promote_pages: int
    demote_pages: int

    @property
    def total_pages(self) -> int:
        return self.promote_pages + self.demote_pages


class StaticBest:
    """The best static placement in hindsight and what it serves at every sample."""

    def __init__(self, cut: TopKCut, totals: dict[SimVma, F32Array],
                 top_rate_per_s: list[float], capacity_pages: int,
                 procs: list[SimProcess]) -> None:
        self.cut = cut
        self._totals = totals  # per movable VMA: accesses of each page over the run
        self.top_rate_per_s = top_rate_per_s  # per sample: accesses/s its top set serves
        self.capacity_pages = capacity_pages  # top-tier pages free for movable pages
        self.procs = procs  # every process a sample saw

    def selection(self, vma: SimVma) -> npt.NDArray[np.float64]:
        """Each page's share in the static top set (1, a tie fraction, or 0). float64 (n,)."""
        total = self._totals.get(vma)
        if total is None:
            return np.zeros(vma.nr_pages, dtype=np.float64)
        return self.cut.weights(total)

    def masks(self, vma: SimVma) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """(pages wholly in the static top set, pages at its cut, each in by tie_fraction):
        two bool (n,) masks, no float array per page."""
        total = self._totals[vma]
        return total > self.cut.threshold, total == self.cut.threshold

    def minimum_traffic(self, machine: SimMachine) -> MinTraffic:
        """MinTraffic from the placement every page had when its process started
        (the machine's move history says where moved pages were first)."""
        first_nid = initial_nids(machine)
        top = machine.view.toptier
        promote = 0.0
        initially_top = 0
        for sim_proc in self.procs:
            for vma in sim_proc.vmas:
                nid = first_nid.get(vma, vma.nid)
                on_top = top[nid.astype(np.intp) + 1] & (nid >= 0)
                initially_top += int(np.count_nonzero(on_top))
                if vma in self._totals:
                    above, ties = self.masks(vma)
                    promote += float(np.count_nonzero(above & ~on_top))
                    if self.cut.tie_fraction:
                        promote += self.cut.tie_fraction * np.count_nonzero(ties & ~on_top)
        top_capacity = machine.view.top_capacity_pages()
        promote_pages = round(promote)
        return MinTraffic(promote_pages, max(0, initially_top + promote_pages - top_capacity))


def initial_nids(machine: SimMachine) -> dict[SimVma, npt.NDArray[np.int8]]:
    """Per VMA that had pages moved: the node each page was on before its first move."""
    out: dict[SimVma, npt.NDArray[np.int8]] = {}
    for chunk in reversed(machine.view.move_history.chunks()):  # the earliest move writes last
        nid = out.get(chunk.vma)
        if nid is None:
            nid = out[chunk.vma] = chunk.vma.nid.copy()
        nid[chunk.pages] = chunk.old_nids
    return out


class HindsightTracker:
    """Records, per sample, which epoch each movable VMA's workload was in and for how long,
    so the static best in hindsight can be computed at the end of the run."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        self._epochs: dict[SimVma, dict[int, _EpochUse]] = {}
        self._procs: dict[ProcessId, SimProcess] = {}
        self.rate_per_s: list[float] = []
        self.weight_s: list[float] = []
        self.fixed_top_rate_per_s: list[float] = []
        self.max_fixed_top_pages = 0

    def add(self, sample: Sample, weight_s: float) -> None:
        """Account one sample that stands for the weight_s seconds after it."""
        index = len(self.rate_per_s)
        self.rate_per_s.append(sample.rate_per_s)
        self.weight_s.append(weight_s)
        self.fixed_top_rate_per_s.append(sample.fixed_top_rate_per_s)
        self.max_fixed_top_pages = max(self.max_fixed_top_pages, sample.fixed_top_pages)
        for sim_proc in self.machine.view.alive():
            self._procs.setdefault(sim_proc.proc, sim_proc)
            for vma in sim_proc.vmas:
                if vma.kind_name not in MOVABLE_KINDS:
                    continue
                epochs = self._epochs.setdefault(vma, {})
                epoch = vma.workload.epoch(sample.t_s)
                use = epochs.get(epoch)
                if use is None:
                    use = epochs[epoch] = _EpochUse(sample.t_s, 0.0, [])
                use.weight_s += weight_s
                use.samples.append(index)

    @property
    def time_varying(self) -> bool:
        """Whether any workload's rates changed during the run (the oracle then moves)."""
        return any(len(e) > 1 for e in self._epochs.values())

    def static_best(self) -> StaticBest:
        """The movable pages with the most accesses over the run that fit the top tier
        (beside the immovable pages it ever held); pages never accessed are never chosen."""
        machine = self.machine
        totals = {vma: self._accesses(vma, epochs) for vma, epochs in self._epochs.items()}
        top_capacity = machine.view.top_capacity_pages()
        capacity = max(0, top_capacity - self.max_fixed_top_pages)
        nr_accessed = sum(int(np.count_nonzero(t > 0)) for t in totals.values())
        cut = (TopKCut(0.0, 0.0) if capacity >= nr_accessed
               else top_k_cut(list(totals.values()), capacity))
        best = StaticBest(cut, totals, [], capacity, list(self._procs.values()))
        top_rate = np.array(self.fixed_top_rate_per_s, dtype=np.float64)
        for vma, epochs in self._epochs.items():
            above, ties = best.masks(vma)
            for use in epochs.values():
                rates = vma.workload.rates(use.t_s)
                served = float(rates[above].sum(dtype=np.float64))
                if cut.tie_fraction:
                    served += cut.tie_fraction * float(rates[ties].sum(dtype=np.float64))
                top_rate[use.samples] += served
        best.top_rate_per_s = top_rate.tolist()
        return best

    @staticmethod
    def _accesses(vma: SimVma, epochs: dict[int, _EpochUse]) -> F32Array:
        """Accesses of each page of vma over the run (as the samples saw it). float32 (n,)."""
        total = np.zeros(vma.nr_pages, dtype=np.float32)
        for use in epochs.values():
            total += vma.workload.rates(use.t_s) * np.float32(use.weight_s)
        total[vma.nid < 0] = 0.0
        return total
