"""Room on a node and the order of target nodes, for promotion and demotion alike.

What must stay free on a node is the larger of the target_free_min_pct tunable
and the kernel's own reserve (NodeInfo.wmark_pages); the target order is the
series' (the preferred node, then the other top-tier nodes, most free first).
FreeRoom keeps each node's free pages across one migration pass from the moves'
results, instead of re-reading the topology (every node's meminfo) per process.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

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


class FreeRoom:
    """Free base pages per node, read once and then kept by the moves' results.

    A move of folios to target takes their pages from the target's free pages and
    gives them back to the nodes they left. topology() is the topology read at the
    start with these free pages: headroom_pages and room_pages apply to it as to a
    fresh read (capacity and reserve are the same). What other tasks allocate or
    free meanwhile is seen at the next read (the next step).
    """

    def __init__(self, topology: Topology) -> None:
        self._topology = topology
        self._free = {node.nid: node.free_pages for node in topology.nodes}
        self._changed = False

    def topology(self) -> Topology:
        """The topology as read, with the free pages the moves since left."""
        if self._changed:
            self._topology = Topology(tuple(
                dataclasses.replace(node, free_pages=self._free[node.nid])
                for node in self._topology.nodes
            ))
            self._changed = False
        return self._topology

    def free_pages(self, nid: int) -> int:
        return self._free[nid]

    def moved(self, src_nids: npt.NDArray[np.integer], nr_pages: I64Array, target: int) -> None:
        """Folios of nr_pages base pages each moved from src_nids (n,) to target."""
        if not nr_pages.size:
            return
        per_src = np.bincount(src_nids.astype(np.intp), weights=nr_pages).astype(np.int64)
        for nid in np.flatnonzero(per_src).tolist():
            if nid in self._free:
                self._free[nid] += int(per_src[nid])
        if target in self._free:
            self._free[target] -= int(nr_pages.sum())
        self._changed = True
