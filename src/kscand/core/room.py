"""Room on a node and the order of target nodes, for promotion and demotion alike.

What must stay free on a node is the larger of the target_free_min_pct tunable
and the kernel's own reserve (NodeInfo.wmark_pages); the target order is the
series' (the preferred node, then the other top-tier nodes, most free first).
"""

from __future__ import annotations

import numpy as np

from kscand.core.tunables import Tunables
from kscand.machine import BoolArray, I64Array, NodeInfo, Topology


def headroom_pages(node: NodeInfo, free_min_pct: float) -> int:
    """Free base pages of node above what must stay free, negative when under it.

    What must stay free is the larger of free_min_pct of its capacity and the
    kernel's own reserve (NodeInfo.wmark_pages): on a small node the high watermark
    is several percent, and moves into it fail with ENOMEM.
    """
    reserve = max(int(np.ceil(node.capacity_pages * free_min_pct / 100.0)), node.wmark_pages)
    return node.free_pages - reserve


def room_pages(node: NodeInfo, free_min_pct: float) -> int:
    """Base pages that may still be moved to node without passing its watermark."""
    return max(0, headroom_pages(node, free_min_pct))


def fit_in_room(nr_pages: I64Array, room: int) -> BoolArray:
    """Which folios, taken in order, fit into room base pages. int64 (n,) -> bool (n,)."""
    return np.cumsum(nr_pages) <= room


def default_target(topology: Topology, tunables: Tunables) -> int | None:
    """The target node without a preference: the target_node tunable, else the first
    top-tier node. None when the tunable names a node that is absent or not top
    tier, or there is no top tier: promotion would be wrong, so nothing moves.
    """
    order = target_order(None, topology, tunables)
    return order[0] if order else None


def target_order(preferred: int | None, topology: Topology, tunables: Tunables) -> list[int]:
    """Top-tier nodes to try, in order: the preferred node (the target heuristic's
    choice), then the other top-tier nodes, most free first (the series' fallback).
    A target_node tunable >= 0 forces that node alone.
    """
    top = sorted(topology.top_tier_nids)
    if tunables.target_node >= 0:
        return [tunables.target_node] if tunables.target_node in top else []
    if not top:
        return []
    first = preferred if preferred in top else top[0]
    others = sorted(
        (nid for nid in top if nid != first),
        key=lambda nid: (-topology.node(nid).free_pages, nid),
    )
    return [first, *others]
