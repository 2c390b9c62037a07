"""The read-only view of the simulated machine (kscand.sim.view) and the workloads' epoch
bounds and next access (the Workload protocol), which the baselines read."""

from __future__ import annotations

import math
from types import MappingProxyType

import numpy as np
import pytest
from simkit import COLD, scenario

from kscand.machine import PAGE_SIZE
from kscand.sim import workloads as wl
from kscand.sim.machine import SimMachine
from kscand.sim.workloads.base import epoch_bounds_every

MiB = 1 << 20


def two_procs() -> SimMachine:
    machine = SimMachine(scenario([
        {"name": "a", "placement": "slow", "workload": COLD,
         "vmas": [{"kind": "anon", "size": "4MiB"}]},
        {"name": "b", "placement": "fast", "workload": COLD,
         "vmas": [{"kind": "anon", "size": "2MiB"}]},
    ]))
    machine.record_moves = True
    return machine


def test_the_view_shows_nodes_and_processes_and_follows_moves() -> None:
    machine = two_procs()
    view = machine.view
    assert view.nids.tolist() == [0, 1]
    assert view.top_nids == (0,) and view.slow_nids == (1,)
    assert view.toptier.tolist() == [False, True, False]  # by nid + 1
    assert view.top_capacity_pages() == 1 << 30 >> 12
    assert view.used_pages.tolist() == [2 * MiB // PAGE_SIZE, 4 * MiB // PAGE_SIZE]
    assert view.free_pages(0) == (1 << 30) // PAGE_SIZE - 2 * MiB // PAGE_SIZE
    assert [p.name for p in view.alive()] == ["a", "b"]
    assert isinstance(view.procs, MappingProxyType) and len(view.procs) == 2
    a = machine.processes()[0]
    base = machine.vmas(a)[0].start
    vaddrs = np.arange(base, base + 8 * PAGE_SIZE, PAGE_SIZE, dtype=np.uint64)
    assert (machine.move_pages(a, vaddrs, 0) == 0).all()
    assert view.used_pages.tolist() == [2 * MiB // PAGE_SIZE + 8, 4 * MiB // PAGE_SIZE - 8]
    assert view.free_pages(0) == (1 << 30) // PAGE_SIZE - 2 * MiB // PAGE_SIZE - 8
    assert view.move_history.nr_pages == 8 and view.move_history.nr_calls == 1


def test_the_view_cannot_write_the_machine() -> None:
    view = two_procs().view
    for array in (view.nids, view.capacity_pages, view.used_pages, view.latency_ns,
                  view.toptier):
        with pytest.raises(ValueError, match="read-only"):
            array[0] = 0
    with pytest.raises(TypeError):
        view.procs[1] = view.alive()[0]  # type: ignore[index]


def test_epoch_bounds_of_each_family() -> None:
    rng = np.random.default_rng(0)
    moving = wl.moving_hotset(100, 1e3, 0.1, 0.9, 2.5, 0.1, rng)
    assert moving.epoch_bounds(1.0) == (0.0, 2.5)
    assert moving.epoch_bounds(2.5) == (2.5, 5.0)
    assert wl.uniform(10, 1.0).epoch_bounds(7.0) == wl.FOREVER == (-math.inf, math.inf)
    assert wl.Sequential(10, 5.0).epoch_bounds(7.0) == wl.FOREVER


def test_next_access_of_a_thp_unit_sums_its_pages_rates() -> None:
    # Every page at the same rate: a 512-page unit waits 1/512 of a page's wait (same draws).
    uniform = wl.uniform(1024, 1024.0)
    units = np.arange(2, dtype=np.intp)
    pages = uniform.next_access_s(units, 1, 3.0, np.random.default_rng(1)) - 3.0
    thps = uniform.next_access_s(units, 512, 3.0, np.random.default_rng(1)) - 3.0
    assert thps.tolist() == pytest.approx((pages / 512).tolist())
    # a stream's unit starts at page units[k] * unit_pages: unit 1 of 512 pages at page 512
    stream = wl.Sequential(1024, 1024.0)
    got = stream.next_access_s(units, 512, 0.25, np.random.default_rng(1))
    assert got.tolist() == pytest.approx([1.0, 0.5])
    assert wl.Sequential(1024, 0.0).next_access_s(units, 1, 0.0, np.random.default_rng(1)
                                                  ).tolist() == [math.inf, math.inf]


@pytest.mark.parametrize("epoch_s", [0.1, 0.01, 0.003, 1 / 3, 0.05, 0.7, 2.5])
def test_epoch_bounds_are_where_the_epoch_changes(epoch_s: float) -> None:
    """(k + 1) * epoch_s may still divide down to k (0.3 // 0.1 == 2.0): a baseline
    stepping to that end read the old window's rates there (NUMA balancing on the
    igraph trace went from 34.6 % to 41.4 % when its bisection was replaced)."""
    rng = np.random.default_rng(7)
    for t_s in rng.uniform(0.0, 1000.0, size=2000).tolist():
        start_s, end_s = epoch_bounds_every(t_s, epoch_s)
        k = t_s // epoch_s
        assert start_s <= t_s < end_s
        assert start_s // epoch_s == k and end_s // epoch_s == k + 1
        assert math.nextafter(end_s, -math.inf) // epoch_s == k
        assert start_s == 0.0 or math.nextafter(start_s, -math.inf) // epoch_s == k - 1
