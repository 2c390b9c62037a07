"""Migrator pure functions: room, fit, target choice, errno names."""

from __future__ import annotations

import errno

import numpy as np

from kscand.core.migrator import move_fail_counter
from kscand.core.room import default_target, fit_in_room, headroom_pages, room_pages
from kscand.core.tunables import Tunables
from kscand.machine import NodeInfo, Topology


def node(nid: int, top: bool, free: int = 50, cap: int = 100) -> NodeInfo:
    return NodeInfo(nid, cap, free, has_cpu=top, tier=4 if top else 67, top_tier=top)


def test_room_keeps_the_watermark() -> None:
    assert room_pages(node(0, True, free=50, cap=100), 2.0) == 48
    assert room_pages(node(0, True, free=1, cap=100), 2.0) == 0


def test_room_keeps_the_kernel_reserve_when_it_is_larger() -> None:
    # A 512 MiB guest node: high watermark + protection 8,745 pages, 6.7 % of it.
    small = NodeInfo(0, 131_072, 10_000, True, 4, True, wmark_pages=8_745)
    assert room_pages(small, 2.0) == 10_000 - 8_745
    assert headroom_pages(small, 2.0) == 10_000 - 8_745
    under = NodeInfo(0, 131_072, 5_917, True, 4, True, wmark_pages=8_745)
    assert room_pages(under, 2.0) == 0
    assert headroom_pages(under, 2.0) == 5_917 - 8_745  # the deficit exchange makes up
    big = NodeInfo(0, 131_072, 10_000, True, 4, True, wmark_pages=100)
    assert room_pages(big, 2.0) == 10_000 - 2_622  # the 2 % floor


def test_fit_in_room_takes_whole_folios_in_order() -> None:
    sizes = np.array([1, 512, 1, 1], dtype=np.int64)
    assert fit_in_room(sizes, 514).tolist() == [True, True, True, False]
    assert fit_in_room(sizes, 100).tolist() == [True, False, False, False]


def test_default_target() -> None:
    topo = Topology((node(0, True), node(1, False), node(2, True)))
    assert default_target(topo, Tunables()) == 0
    assert default_target(topo, Tunables(target_node=2)) == 2
    assert default_target(topo, Tunables(target_node=1)) is None  # slow tier: refused
    assert default_target(topo, Tunables(target_node=7)) is None  # absent
    assert default_target(Topology((node(1, False),)), Tunables()) is None


def test_move_fail_counter_names() -> None:
    assert move_fail_counter(-errno.ENOMEM) == "move_fail_enomem"
    assert move_fail_counter(-errno.EBUSY) == "move_fail_ebusy"
    assert move_fail_counter(-9999) == "move_fail_unknown"
