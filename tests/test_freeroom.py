"""FreeRoom: the free pages kept across a migration from the moves' results match a
re-read of the topology after the moves (promotions, exchange demotions, THPs)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import numpy.typing as npt
import pytest
from simkit import COLD, machine_and_engine, run_steps, scenario

from kscand.core import engine as engine_module
from kscand.core.room import FreeRoom, headroom_pages, room_pages
from kscand.machine import PAGE_SIZE, I64Array, Machine, NodeInfo, Topology

MiB = 1 << 20
PAGES_PER_MIB = MiB // PAGE_SIZE


def test_moves_take_from_the_target_and_give_back_to_each_source() -> None:
    topology = Topology((
        NodeInfo(0, 1000, 400, True, 4, True, wmark_pages=30),
        NodeInfo(1, 5000, 100, False, 67, False),
        NodeInfo(2, 5000, 200, False, 67, False),
    ))
    room = FreeRoom(topology)
    assert room.topology() is topology  # nothing moved: the topology as read
    room.moved(np.array([1, 2, 1], dtype=np.int32), np.array([512, 1, 1], dtype=np.int64), 0)
    room.moved(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int64), 0)
    after = room.topology()
    assert [n.free_pages for n in after.nodes] == [400 - 514, 100 + 513, 200 + 1]
    assert [room.free_pages(nid) for nid in (0, 1, 2)] == [400 - 514, 613, 201]
    # The reserve logic applies unchanged: capacity and the kernel's reserve are kept.
    fresh = NodeInfo(0, 1000, 400 - 514, True, 4, True, wmark_pages=30)
    assert after.node(0) == fresh
    assert headroom_pages(after.node(0), 2.0) == headroom_pages(fresh, 2.0) == -114 - 30
    assert room_pages(after.node(0), 2.0) == 0


class CheckedRoom(FreeRoom):
    """A FreeRoom that compares itself with a re-read of the machine after every move."""

    checks: ClassVar[list[tuple[int, int]]] = []  # (target, pages moved), per moved()

    def __init__(self, machine: Machine, topology: Topology) -> None:
        super().__init__(topology)
        self.machine = machine

    def moved(self, src_nids: npt.NDArray[np.integer], nr_pages: I64Array, target: int) -> None:
        super().moved(src_nids, nr_pages, target)
        reread = {n.nid: n.free_pages for n in self.machine.topology().nodes}
        tracked = {n.nid: n.free_pages for n in self.topology().nodes}
        assert tracked == reread
        CheckedRoom.checks.append((target, int(nr_pages.sum())))


def test_tracked_free_pages_match_a_reread_after_promotions_and_exchanges(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A cold filler takes the top node; a hot base-page process and a hot THP one wait on
    the slow node: promotions fill what is free, exchange demotes the filler for the rest."""
    sc = scenario(
        [{"name": "filler", "placement": "fast", "workload": COLD,
          "vmas": [{"kind": "anon", "size": "24MiB"}]},
         {"name": "hot", "placement": "slow",
          "workload": {"kind": "uniform", "rate_per_s": 40.0 * 8 * PAGES_PER_MIB},
          "vmas": [{"kind": "anon", "size": "8MiB"}]},
         {"name": "hot-thp", "placement": "slow",
          "workload": {"kind": "uniform", "rate_per_s": 40.0 * 8 * PAGES_PER_MIB},
          "vmas": [{"kind": "anon-thp", "size": "8MiB"}]}],
        nodes=[{"nid": 0, "capacity": "32MiB", "cpus": True, "tier": 4},
               {"nid": 1, "capacity": "1GiB", "cpus": False, "tier": 67}],
        tunables={"scan_delay_ms": 0, "mm_scan_period_ms": 500, "scan_period_min_ms": 500,
                  "scan_period_max_ms": 500, "default_scale": 1, "target_free_min_pct": 0},
    )
    machine, engine = machine_and_engine(sc)
    CheckedRoom.checks = []
    monkeypatch.setattr(engine_module, "FreeRoom", lambda topo: CheckedRoom(machine, topo))
    end_ns = machine.clock.now_ns() + 15 * 10**9
    while machine.clock.now_ns() < end_ns:
        run_steps(machine, engine, 1)
    promoted = sum(pages for target, pages in CheckedRoom.checks if target == 0)
    demoted = sum(pages for target, pages in CheckedRoom.checks if target == 1)
    assert promoted == engine.stats.total["nr_kscand_migrated"] >= 16 * PAGES_PER_MIB - 512
    assert demoted == engine.stats.total["nr_kscand_demoted"] > 0
    thp = next(p for p in machine.alive() if p.name == "hot-thp")
    assert int((thp.vmas[0].nid == 0).sum()) > 0  # whole THPs moved and were counted
