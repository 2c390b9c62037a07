"""Physical page frames of the simulated nodes, for DAMON's physical-address monitoring.

The simulator places pages on nodes but has no frame layout; DAMON's paddr
operations (mm/damon/paddr.c) monitor a node's physical address range, so its
regions are runs of frames, not of virtual pages. This keeps one: each node has
capacity_pages frames, each free or holding one base page (a key: vma id <<
KEY_SHIFT | page index). Pages placed at a process start take frames in page
order (a fresh allocation of a free node). A migrated folio frees its frames on
the source node and takes frames on the destination: base pages the most
recently freed first (the buddy allocator's per-CPU lists are LIFO), a THP a
free 2 MiB-aligned block of 512 frames, or, when none is left, any 512 free
frames (as if compaction had made a block: not modelled).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kscand.evaluation.folios import KEY_SHIFT, I64Array, VmaEntry
from kscand.machine import HPAGE_PMD_NR

NO_FRAME = -1


class NodeFrames:
    """The frames of one node: owner page keys and a LIFO free list."""

    def __init__(self, nid: int, capacity_pages: int) -> None:
        self.nid = nid
        self.owner = np.full(capacity_pages, NO_FRAME, dtype=np.int64)
        self._stack = np.arange(capacity_pages - 1, -1, -1, dtype=np.int64)  # top at the end
        self._top = capacity_pages
        self._in_stack = np.ones(capacity_pages, dtype=np.bool_)  # each frame at most once

    @property
    def capacity_pages(self) -> int:
        return int(self.owner.shape[0])

    def _push(self, frames: I64Array) -> None:
        frames = frames[~self._in_stack[frames]]
        self._in_stack[frames] = True
        n = frames.shape[0]
        if self._top + n > self._stack.shape[0]:
            grown = np.zeros(max(2 * self._stack.shape[0], self._top + n), dtype=np.int64)
            grown[: self._top] = self._stack[: self._top]
            self._stack = grown
        self._stack[self._top : self._top + n] = frames[::-1]
        self._top += n

    def alloc(self, n: int) -> I64Array:
        """n free frames, the most recently freed first (fewer if the node is full)."""
        out: list[I64Array] = []
        got = 0
        while got < n and self._top > 0:
            lo = max(0, self._top - (n - got))
            chunk = self._stack[lo : self._top][::-1]
            self._top = lo
            self._in_stack[chunk] = False
            chunk = chunk[self.owner[chunk] == NO_FRAME]  # a THP block may have taken some
            self.owner[chunk] = 0  # taken; the caller sets the owner
            out.append(chunk)
            got += chunk.shape[0]
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def alloc_thp(self, nr_folios: int) -> I64Array:
        """Frames for nr_folios THPs, (nr_folios * 512,) in folio order."""
        usable = self.capacity_pages // HPAGE_PMD_NR * HPAGE_PMD_NR
        blocks = np.flatnonzero(
            (self.owner[:usable] == NO_FRAME).reshape(-1, HPAGE_PMD_NR).all(axis=1))[:nr_folios]
        frames = (blocks[:, None] * HPAGE_PMD_NR + np.arange(HPAGE_PMD_NR)).ravel()
        self.owner[frames] = 0
        rest = (nr_folios - blocks.shape[0]) * HPAGE_PMD_NR
        if rest:
            frames = np.concatenate([frames, self.alloc(rest)])
        return frames.astype(np.int64)

    def free(self, frames: I64Array) -> None:
        frames = frames[frames >= 0]
        self.owner[frames] = NO_FRAME
        self._push(frames)


class FrameMap:
    """Every node's frames and, per VMA, the frame of each page."""

    def __init__(self, capacity_pages: dict[int, int]) -> None:
        self.nodes = {nid: NodeFrames(nid, cap) for nid, cap in capacity_pages.items()}
        self.frame_of: dict[int, I64Array] = {}  # vma id -> (nr_pages,) frame, -1 none

    def track(self, entry: VmaEntry) -> None:
        """A new VMA: its present pages take frames on their nodes."""
        self.frame_of[entry.vid] = np.full(entry.vma.nr_pages, NO_FRAME, dtype=np.int64)
        nid = entry.vma.nid.astype(np.int64)
        for node in np.unique(nid[nid >= 0]).tolist():
            pages = np.flatnonzero(nid == node)
            if entry.per_unit > 1:
                pages = pages[pages % entry.per_unit == 0]  # heads; tails follow them
            self._place(entry, pages // entry.per_unit, int(node))

    def forget(self, entry: VmaEntry) -> None:
        frames = self.frame_of.pop(entry.vid, None)
        if frames is None:
            return
        nid = entry.vma.nid.astype(np.int64)
        for node, nf in self.nodes.items():
            nf.free(frames[(nid == node) & (frames >= 0)])

    def _place(self, entry: VmaEntry, units: I64Array, nid: int) -> None:
        node = self.nodes.get(nid)
        if node is None or not units.size:
            return
        per = entry.per_unit
        pages = (units[:, None] * per + np.arange(per)).ravel()
        frames = node.alloc_thp(units.shape[0]) if per > 1 else node.alloc(pages.shape[0])
        pages = pages[: frames.shape[0]]
        node.owner[frames] = (np.int64(entry.vid) << np.int64(KEY_SHIFT)) | pages
        self.frame_of[entry.vid][pages] = frames

    def moved(self, entry: VmaEntry, units: I64Array, src: npt.NDArray[np.intp],
              dst: int) -> None:
        """Folios (units) of entry moved from nodes src to dst: new frames."""
        per = entry.per_unit
        pages = (units[:, None] * per + np.arange(per)).ravel()
        old = self.frame_of[entry.vid][pages]
        src_pages = np.repeat(src, per)
        for node, nf in self.nodes.items():
            nf.free(old[src_pages == node])
        self.frame_of[entry.vid][pages] = NO_FRAME
        self._place(entry, units, dst)
