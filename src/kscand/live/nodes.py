"""NUMA nodes, memory tiers and the PFN -> node map, from /sys/devices/system.

Layout (Documentation/ABI/stable/sysfs-devices-node, sysfs-devices-memory,
sysfs-kernel-mm-memory-tiers): node/online and node/has_cpu node lists;
node/nodeN/{cpulist,meminfo,memoryM}; memory/block_size_bytes (hex);
virtual/memory_tiering/memory_tierK/nodelist, lower K faster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kscand.errors import ConfigError, Unsupported
from kscand.machine import (
    NID_NONE,
    PAGE_SIZE,
    I32Array,
    NodeInfo,
    Topology,
    U64Array,
    top_tier_from_tiers,
)

NODE_DIR = "devices/system/node"
MEMORY_DIR = "devices/system/memory"
TIERING_DIR = "devices/virtual/memory_tiering"

_NODE_NAME = re.compile(r"^node([0-9]+)$")
_MEMORY_NAME = re.compile(r"^memory([0-9]+)$")
_TIER_NAME = re.compile(r"^memory_tier([0-9]+)$")
_MEMINFO_LINE = re.compile(r"^Node\s+[0-9]+\s+(\w+):\s+([0-9]+)\s*kB\s*$")

TIER_UNKNOWN = -1  # a node the kernel placed in no memory tier (or no tier info at all)


def parse_id_list(text: str, what: str) -> tuple[int, ...]:
    """A kernel id list ("0-3,8,10-11", "" or "\\n" for none) as sorted ids."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError as err:
            raise Unsupported(f"{what}: cannot parse id list {text.strip()!r}") from err
        if last < first:
            raise Unsupported(f"{what}: bad range {part!r}")
        ids.update(range(first, last + 1))
    return tuple(sorted(ids))


def format_id_list(ids: Sequence[int]) -> str:
    """Ids in the kernel's list format: (0, 1, 2, 5) -> "0-2,5"."""
    parts: list[str] = []
    ordered = sorted(set(ids))
    start = prev = None
    for value in [*ordered, None]:
        if value is not None and prev is not None and value == prev + 1:
            prev = value
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = value
    return ",".join(parts)


def parse_node_meminfo(text: str, what: str) -> tuple[int, int]:
    """(MemTotal, MemFree) in kB from nodeN/meminfo text."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        match = _MEMINFO_LINE.match(line)
        if match:
            values[match.group(1)] = int(match.group(2))
    if "MemTotal" not in values or "MemFree" not in values:
        raise Unsupported(f"{what}: no numeric MemTotal/MemFree lines")
    return values["MemTotal"], values["MemFree"]


_ZONE_HEAD = re.compile(r"^Node\s+([0-9]+),\s+zone\s+\S+\s*$")
_PROTECTION = re.compile(r"^\s*protection:\s*\(([0-9,\s]*)\)\s*$")


def parse_zoneinfo_wmark(text: str) -> dict[int, int]:
    """Per node, the free pages user allocations may not take, from /proc/zoneinfo.

    For each zone with managed pages: its high watermark as printed (it includes
    watermark_boost, mm/vmstat.c zoneinfo_show_print) plus its largest lowmem
    protection, the reserve held against allocations that could use a higher zone
    (mm/page_alloc.c __zone_watermark_ok), at most the zone's managed pages (a small
    DMA zone protected by more than it holds is simply never a user target).
    Fields that do not parse count 0.
    """
    out: dict[int, int] = {}
    zones: list[tuple[int, dict[str, int]]] = []
    for line in text.splitlines():
        head = _ZONE_HEAD.match(line)
        if head:
            zones.append((int(head.group(1)), {}))
            continue
        if not zones:
            continue
        fields = zones[-1][1]
        prot = _PROTECTION.match(line)
        if prot:
            values = [int(v) for v in prot.group(1).replace(",", " ").split()]
            fields["protection"] = max(values, default=0)
            continue
        words = line.split()
        if len(words) == 2 and words[0] in ("high", "managed") and words[1].isdigit():
            fields.setdefault(words[0], int(words[1]))
    for nid, fields in zones:
        if fields.get("managed", 0) <= 0:
            continue
        reserve = min(fields["managed"], fields.get("high", 0) + fields.get("protection", 0))
        out[nid] = out.get(nid, 0) + reserve
    return out


def _read(path: str) -> str:
    """A sysfs/procfs text file; Unsupported with one line when it cannot be read."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError as err:
        raise Unsupported(f"{path}: cannot read: {err.strerror or err}") from err


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


@dataclass(frozen=True, slots=True)
class PfnNodeMap:
    """Sorted runs [start_pfn, end_pfn) of memory blocks with their node.

    lookup() is one np.searchsorted over the run starts; a PFN outside every
    run (device memory, a hole) gets NID_NONE.
    """

    start_pfn: U64Array  # uint64 (r,)
    end_pfn: U64Array  # uint64 (r,)
    nid: I32Array  # int32 (r,)

    @staticmethod
    def from_blocks(blocks_by_nid: Mapping[int, Sequence[int]], block_pages: int) -> PfnNodeMap:
        """Runs from memory block ids per node, adjacent blocks of one node merged."""
        pairs = sorted((block, nid) for nid, blocks in blocks_by_nid.items() for block in blocks)
        if not pairs:
            return PfnNodeMap.empty()
        block = np.array([b for b, _ in pairs], dtype=np.int64)
        nid = np.array([n for _, n in pairs], dtype=np.int32)
        new_run = np.ones(block.size, dtype=np.bool_)
        new_run[1:] = (np.diff(block) != 1) | (np.diff(nid) != 0)
        starts = np.flatnonzero(new_run)
        ends = np.concatenate((starts[1:], [block.size])) - 1
        return PfnNodeMap(
            (block[starts] * block_pages).astype(np.uint64),
            ((block[ends] + 1) * block_pages).astype(np.uint64),
            nid[starts].copy(),
        )

    @staticmethod
    def whole(nid: int) -> PfnNodeMap:
        """Every PFN on one node (single-node machines without memory block info)."""
        return PfnNodeMap(
            np.zeros(1, dtype=np.uint64),
            np.array([1 << 55], dtype=np.uint64),
            np.array([nid], dtype=np.int32),
        )

    @staticmethod
    def empty() -> PfnNodeMap:
        return PfnNodeMap(
            np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int32)
        )

    def lookup(self, pfn: U64Array) -> I32Array:
        """Node of each PFN, NID_NONE outside every block. uint64 (n,) -> int32 (n,)."""
        if self.start_pfn.size == 0:
            return np.full(pfn.shape, NID_NONE, dtype=np.int32)
        run = np.searchsorted(self.start_pfn, pfn, side="right")
        run -= 1
        np.maximum(run, 0, out=run)  # below the first run: caught by the start test
        inside = pfn < self.end_pfn[run]
        if self.start_pfn[0] > 0:
            inside &= pfn >= self.start_pfn[0]
        out: I32Array = np.where(inside, self.nid[run], np.int32(NID_NONE))
        return out


@dataclass(frozen=True, slots=True)
class NodeLayout:
    """What does not change while kscand runs: nodes, CPUs, tiers, top tier, PFN map."""

    nids: tuple[int, ...]
    cpus: dict[int, tuple[int, ...]]
    tier_of: dict[int, int]  # TIER_UNKNOWN where the kernel says nothing
    top_tier: frozenset[int]
    top_tier_how: str  # where the top-tier decision came from (for `kscand topology`)
    pfn_map: PfnNodeMap | None  # None: no memory block info on a multi-node machine

    @property
    def slow_nids(self) -> tuple[int, ...]:
        return tuple(nid for nid in self.nids if nid not in self.top_tier)


def decide_top_tier(
    nids: Sequence[int],
    tier_of: dict[int, int],
    has_cpu: dict[int, bool],
    top_tier_nodes: Sequence[int] | None,
    slow_nodes: Sequence[int] | None,
) -> tuple[frozenset[int], str]:
    """The top-tier node set and where it came from: config override, tiers, or default.

    Overrides must name online nodes and must not overlap; top_tier_nodes wins
    when both are given (nodes in neither list are slow).
    """
    online = set(nids)
    for name, given in (("top_tier_nodes", top_tier_nodes), ("slow_nodes", slow_nodes)):
        unknown = sorted(set(given or ()) - online)
        if unknown:
            raise ConfigError(
                f"{name}: node(s) {unknown} are not online (online nodes: {sorted(online)})"
            )
    if top_tier_nodes and slow_nodes and set(top_tier_nodes) & set(slow_nodes):
        both = sorted(set(top_tier_nodes) & set(slow_nodes))
        raise ConfigError(f"top_tier_nodes and slow_nodes both name node(s) {both}")
    if top_tier_nodes:
        return frozenset(top_tier_nodes), "config top_tier_nodes"
    if slow_nodes:
        return frozenset(online - set(slow_nodes)), "config slow_nodes"
    known = {nid: tier for nid, tier in tier_of.items() if tier != TIER_UNKNOWN}
    if not known:
        return frozenset(online), "no memory tier information: every node counts as top tier"
    top = top_tier_from_tiers(known, {nid: has_cpu.get(nid, False) for nid in known})
    # A node outside every tier is treated like the kernel's default DRAM tier: top.
    top |= online - set(known)
    return frozenset(top), "memory_tiering (the kernel's node_is_toptier)"


class SysfsNodes:
    """Reads the node layout once and free memory on each topology() call."""

    def __init__(
        self,
        sysfs: str = "/sys",
        procfs: str = "/proc",
        *,
        top_tier_nodes: Sequence[int] | None = None,
        slow_nodes: Sequence[int] | None = None,
    ) -> None:
        self.sysfs = sysfs
        self.procfs = procfs
        self._top_override = tuple(top_tier_nodes) if top_tier_nodes else None
        self._slow_override = tuple(slow_nodes) if slow_nodes else None
        self.layout = self.read_layout()

    def _path(self, *parts: str) -> str:
        return os.path.join(self.sysfs, *parts)

    @property
    def numa(self) -> bool:
        """Whether the kernel exports NUMA nodes at all (CONFIG_NUMA)."""
        return os.path.isdir(self._path(NODE_DIR))

    def online_nids(self) -> tuple[int, ...]:
        if not self.numa:
            return (0,)
        online = self._path(NODE_DIR, "online")
        if os.path.exists(online):
            return parse_id_list(_read(online), online)
        names = (_NODE_NAME.match(n) for n in _listdir(self._path(NODE_DIR)))
        return tuple(sorted(int(m.group(1)) for m in names if m))

    def cpus_of(self, nid: int) -> tuple[int, ...]:
        path = self._path(NODE_DIR, f"node{nid}", "cpulist")
        if not os.path.exists(path):
            return tuple(range(os.cpu_count() or 1)) if not self.numa else ()
        return parse_id_list(_read(path), path)

    def tiers(self) -> dict[int, int]:
        """nid -> memory tier id from memory_tiering (empty without tier info)."""
        tier_of: dict[int, int] = {}
        root = self._path(TIERING_DIR)
        for name in _listdir(root):
            match = _TIER_NAME.match(name)
            path = os.path.join(root, name, "nodelist")
            if not match or not os.path.exists(path):
                continue
            for nid in parse_id_list(_read(path), path):
                tier_of[nid] = int(match.group(1))
        return tier_of

    def block_pages(self) -> int | None:
        """Base pages per memory block, None without memory block info."""
        path = self._path(MEMORY_DIR, "block_size_bytes")
        if not os.path.exists(path):
            return None
        text = _read(path).strip()
        try:
            size_bytes = int(text, 16)
        except ValueError as err:
            raise Unsupported(f"{path}: not a hex size: {text!r}") from err
        if size_bytes < PAGE_SIZE or size_bytes % PAGE_SIZE:
            raise Unsupported(f"{path}: implausible block size {size_bytes}")
        return size_bytes // PAGE_SIZE

    def pfn_map(self, nids: Sequence[int]) -> PfnNodeMap | None:
        """The PFN -> node map from nodeN/memoryM links (None without block info)."""
        block_pages = self.block_pages()
        if block_pages is None:
            return PfnNodeMap.whole(nids[0]) if len(nids) == 1 else None
        blocks: dict[int, list[int]] = {}
        for nid in nids:
            names = (_MEMORY_NAME.match(n) for n in _listdir(self._path(NODE_DIR, f"node{nid}")))
            blocks[nid] = [int(m.group(1)) for m in names if m]
        if not any(blocks.values()) and len(nids) == 1:
            return PfnNodeMap.whole(nids[0])
        return PfnNodeMap.from_blocks(blocks, block_pages)

    def read_layout(self) -> NodeLayout:
        nids = self.online_nids()
        if not nids:
            raise Unsupported(f"{self._path(NODE_DIR, 'online')}: no online node")
        cpus = {nid: self.cpus_of(nid) for nid in nids}
        tiers = self.tiers()
        tier_of = {nid: tiers.get(nid, TIER_UNKNOWN) for nid in nids}
        top, how = decide_top_tier(
            nids, tier_of, {nid: bool(c) for nid, c in cpus.items()},
            self._top_override, self._slow_override,
        )
        return NodeLayout(nids, cpus, tier_of, top, how, self.pfn_map(nids))

    def refresh_pfn_map(self) -> None:
        """Re-read memory blocks (after memory hotplug)."""
        layout = self.layout
        self.layout = NodeLayout(
            layout.nids, layout.cpus, layout.tier_of, layout.top_tier, layout.top_tier_how,
            self.pfn_map(layout.nids),
        )

    def meminfo_kb(self, nid: int) -> tuple[int, int]:
        """(MemTotal, MemFree) in kB of a node (of the machine without NUMA sysfs)."""
        if not self.numa:
            path = os.path.join(self.procfs, "meminfo")
            text = "\n".join(f"Node 0 {line}" for line in _read(path).splitlines())
            return parse_node_meminfo(text, path)
        path = self._path(NODE_DIR, f"node{nid}", "meminfo")
        return parse_node_meminfo(_read(path), path)

    def zoneinfo_wmark(self) -> dict[int, int]:
        """parse_zoneinfo_wmark of this machine; empty when /proc/zoneinfo is unreadable."""
        try:
            return parse_zoneinfo_wmark(_read(os.path.join(self.procfs, "zoneinfo")))
        except Unsupported:
            return {}

    def topology(self) -> Topology:
        """The node topology now: the static layout, each node's free memory and reserve."""
        layout = self.layout
        wmark = self.zoneinfo_wmark()
        infos = []
        for nid in layout.nids:
            total_kb, free_kb = self.meminfo_kb(nid)
            infos.append(
                NodeInfo(
                    nid=nid,
                    capacity_pages=total_kb * 1024 // PAGE_SIZE,
                    free_pages=free_kb * 1024 // PAGE_SIZE,
                    has_cpu=bool(layout.cpus[nid]),
                    tier=layout.tier_of[nid],
                    top_tier=nid in layout.top_tier,
                    wmark_pages=wmark.get(nid, 0),
                )
            )
        return Topology(tuple(infos))
