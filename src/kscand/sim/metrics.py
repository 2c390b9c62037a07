"""Exact placement metrics of a simulated machine: tier shares, latency, the oracle.

The share of accesses served by the top tier is the rate-weighted share of
pages on top-tier nodes. The oracle places the hottest movable pages on the
top tier, up to its capacity: an upper bound for any promotion policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import ProcessId
from kscand.sim.machine import MOVABLE_KINDS, SimMachine, SimProcess

F32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ProcSample:
    """One process's placement at one time."""

    top_share: float  # share of its accesses served by the top tier
    oracle_share: float  # the same under the oracle placement
    nr_hot: int  # pages its workload calls hot, in VMAs kscand may move
    nr_hot_top: int  # of those, pages on the top tier
    latency_ns: float  # mean access latency from the node latencies


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
    size = machine.capacity_pages.shape[0]
    top = machine.toptier[1 : size + 1]
    latency = machine.latency_ns[:size]
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
    everything = np.concatenate(movable) if movable else np.zeros(0, dtype=np.float32)
    n = everything.shape[0]
    k = max(0, min(top_pages_free, n))
    if k == n:
        return [float(m.sum(dtype=np.float64)) + f for m, f in zip(movable, fixed_top_rate,
                                                                  strict=True)]
    if k == 0:
        return list(fixed_top_rate)
    # The k-th largest rate, by value counts: np.partition degrades badly on
    # the many ties of hot-set workloads, np.unique does not.
    values, counts = np.unique(everything, return_counts=True)
    from_top = np.cumsum(counts[::-1])
    pos = int(np.searchsorted(from_top, k))  # first value (from the top) reaching k pages
    threshold = values[::-1][pos]
    nr_above = int(from_top[pos - 1]) if pos > 0 else 0
    nr_ties_taken = k - nr_above
    nr_ties_total = int(counts[::-1][pos])
    out = []
    for m, f in zip(movable, fixed_top_rate, strict=True):
        above = float(m[m > threshold].sum(dtype=np.float64))
        ties = int(np.count_nonzero(m == threshold))
        tie_rate = float(threshold) * nr_ties_taken * safe_ratio(ties, nr_ties_total)
        out.append(above + tie_rate + f)
    return out


class Sampler:
    """Takes Samples of a SimMachine; caches the oracle while rates do not change."""

    def __init__(self, machine: SimMachine) -> None:
        self.machine = machine
        self._oracle_key: tuple[object, ...] | None = None
        self._oracle: dict[ProcessId, float] = {}

    def sample(self, t_s: float) -> Sample:
        machine = self.machine
        procs = machine.alive()
        per = {p.proc: _proc_rates(machine, p, t_s) for p in procs}
        oracle = self._oracle_rates(procs, per, t_s)
        per_proc = {
            proc: ProcSample(
                top_share=safe_ratio(r.top, r.total),
                oracle_share=safe_ratio(oracle[proc], r.total),
                nr_hot=r.nr_hot,
                nr_hot_top=r.nr_hot_top,
                latency_ns=safe_ratio(r.latency_sum, r.total),
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
        )

    def _oracle_rates(
        self, procs: list[SimProcess], per: dict[ProcessId, _ProcRates], t_s: float
    ) -> dict[ProcessId, float]:
        key = tuple((p.proc, tuple(v.workload.epoch(t_s) for v in p.vmas)) for p in procs)
        if key == self._oracle_key:
            return self._oracle
        machine = self.machine
        top_capacity = int(sum(machine.capacity_pages[nid] for nid in machine.top_nids))
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
