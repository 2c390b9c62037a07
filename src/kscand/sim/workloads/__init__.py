"""The simulated workloads: one registry of every kind, the families beside it.

- base: the Workload protocol (per-page access rates over virtual time), the
  types and the Accessed-bit probability every family shares;
- static: fixed rates (uniform, hotset, zipf, gups, power-law);
- moving: rates that change (moving-hotset, sequential);
- trace: replay of a recorded trace (trace).

A kind is added in one place: BUILDERS. The scenario's validation
(kscand.sim.scenario) and the simulated machine (kscand.sim.machine) both read it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from kscand.sim.tracefile import load_trace
from kscand.sim.workloads.base import (
    CERTAIN,
    FOREVER,
    F32Array,
    F64Array,
    IdxArray,
    PageIndex,
    Workload,
    accessed_probability,
)
from kscand.sim.workloads.moving import MovingHotset, Sequential, moving_hotset
from kscand.sim.workloads.static import (
    StaticRates,
    gups,
    hotset,
    power_law,
    top_share_pages,
    uniform,
    zipf,
)
from kscand.sim.workloads.trace import (
    WindowRates,
    check_trace_windows,
    trace_end_s,
    trace_rates,
    trace_span_pages,
)

if TYPE_CHECKING:
    from kscand.sim.scenario import WorkloadSpec

__all__ = [
    "BUILDERS", "CERTAIN", "FOREVER", "WORKLOAD_KINDS", "F32Array", "F64Array", "IdxArray",
    "MovingHotset", "PageIndex", "Sequential", "StaticRates", "WindowRates", "Workload",
    "accessed_probability", "check_trace_windows", "gups", "hotset", "load_trace",
    "make_workload", "moving_hotset", "power_law", "top_share_pages", "trace_end_s",
    "trace_rates", "trace_span_pages", "uniform", "workload_end_s", "zipf",
]

Builder = Callable[["WorkloadSpec", int, np.random.Generator], Workload]


def _uniform(spec: WorkloadSpec, nr_pages: int, _rng: np.random.Generator) -> Workload:
    return uniform(nr_pages, spec.rate_per_s)


def _hotset(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    return hotset(nr_pages, spec.rate_per_s, spec.hot_fraction, spec.hot_share, rng)


def _zipf(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    return zipf(nr_pages, spec.rate_per_s, spec.skew, spec.hot_share, rng)


def _moving_hotset(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    return moving_hotset(
        nr_pages, spec.rate_per_s, spec.hot_fraction, spec.hot_share, spec.period_s,
        spec.shift_fraction, rng,
    )


def _sequential(spec: WorkloadSpec, nr_pages: int, _rng: np.random.Generator) -> Workload:
    return Sequential(nr_pages, spec.pages_per_s)


def _idle(_spec: WorkloadSpec, nr_pages: int, _rng: np.random.Generator) -> Workload:
    return uniform(nr_pages, 0.0)


def _gups(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    return gups(nr_pages, spec.rate_per_s, spec.hot_fraction, spec.hot_share, rng)


def _power_law(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    return power_law(nr_pages, spec.rate_per_s, spec.skew, spec.vertices_per_page,
                     spec.hot_share, spec.sorted_ids, rng)


def _trace(spec: WorkloadSpec, nr_pages: int, _rng: np.random.Generator) -> Workload:
    """Trace errors raise ConfigError."""
    return trace_rates(load_trace(spec.path), nr_pages, spec.trace_pid, spec.window_s,
                       spec.hot_share, spec.loop, spec.path)


# Every workload kind and how its VMA's Workload is built from the spec, in the order the
# scenario's errors list them (gups, power-law and trace: added for the evaluation, issue 6).
BUILDERS: dict[str, Builder] = {
    "uniform": _uniform,
    "hotset": _hotset,
    "zipf": _zipf,
    "moving-hotset": _moving_hotset,
    "sequential": _sequential,
    "idle": _idle,
    "gups": _gups,
    "power-law": _power_law,
    "trace": _trace,
}
WORKLOAD_KINDS = tuple(BUILDERS)


def make_workload(spec: WorkloadSpec, nr_pages: int, rng: np.random.Generator) -> Workload:
    """The Workload of a VMA from its spec (a kind the scenario did not check: idle)."""
    return BUILDERS.get(spec.kind, _idle)(spec, nr_pages, rng)


def workload_end_s(spec: WorkloadSpec) -> float | None:
    """When a workload stops accessing anything for good: the end of a trace that does
    not loop; None for every other workload (they run for ever)."""
    if spec.kind != "trace" or spec.loop:
        return None
    return trace_end_s(load_trace(spec.path), spec.trace_pid, spec.window_s, spec.path)
