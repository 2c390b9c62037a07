"""kscand.live.nodes: node lists, meminfo, memory tiers, top tier, PFN -> node map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fake_linux import FakeLinux

from kscand.errors import ConfigError, Unsupported
from kscand.live.nodes import (
    TIER_UNKNOWN,
    PfnNodeMap,
    SysfsNodes,
    decide_top_tier,
    parse_id_list,
    parse_node_meminfo,
    parse_zoneinfo_wmark,
)
from kscand.machine import NID_NONE

BLOCK_PAGES = (128 << 20) >> 12


@pytest.fixture
def fake(tmp_path: Path) -> FakeLinux:
    return FakeLinux(tmp_path)


@pytest.mark.parametrize(
    ("text", "ids"),
    [("0-3,8,10-11\n", (0, 1, 2, 3, 8, 10, 11)), ("\n", ()), ("5", (5,)), (" 1 , 0 ", (0, 1))],
)
def test_parse_id_list(text: str, ids: tuple[int, ...]) -> None:
    assert parse_id_list(text, "x") == ids


@pytest.mark.parametrize("text", ["a-b", "3-1", "0-", "one"])
def test_parse_id_list_garbage(text: str) -> None:
    with pytest.raises(Unsupported, match="x"):
        parse_id_list(text, "x")


def test_parse_meminfo() -> None:
    text = "Node 1 MemTotal:  1024 kB\nNode 1 MemFree:   512 kB\nNode 1 Active: 3 kB\n"
    assert parse_node_meminfo(text, "m") == (1024, 512)
    with pytest.raises(Unsupported, match="MemTotal"):
        parse_node_meminfo("Node 1 MemTotal: lots kB\nNode 1 MemFree: 2 kB\n", "m")


# /proc/zoneinfo of the testbed guest (6.12, 512 MiB node 0, 1 GiB CPU-less node 1),
# per-node and per-cpu stats cut; the per-cpu "high:" lines are not the watermark.
GUEST_ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 3141
  pages free     616
        boost    0
        min      169
        low      211
        high     253
        promo    295
        spanned  4095
        present  3998
        managed  3840
        cma      0
        protection: (0, 473, 473, 473)
  pagesets
    cpu: 0
              count: 31
              high:  0
Node 0, zone    DMA32
  pages free     5301
        boost    0
        min      5347
        low      6683
        high     8019
        spanned  126976
        present  126976
        managed  121696
        protection: (0, 0, 0, 0)
Node 0, zone   Normal
  pages free     0
        boost    0
        min      0
        low      0
        high     0
        spanned  0
        present  0
        managed  0
        protection: (0, 0, 0, 0)
Node 1, zone    DMA32
  pages free     181451
        boost    0
        min      11378
        low      14222
        high     17066
        managed  258002
        protection: (0, 0, 0, 0)
"""


def test_parse_zoneinfo_wmark_sums_high_and_protection_per_node() -> None:
    assert parse_zoneinfo_wmark(GUEST_ZONEINFO) == {0: 253 + 473 + 8019, 1: 17066}
    # A zone protected by more than it manages reserves what it manages, no more.
    tiny = "Node 0, zone DMA\n  high 20\n  managed 100\n  protection: (0, 3018, 17226)\n"
    assert parse_zoneinfo_wmark(tiny) == {0: 100}
    assert parse_zoneinfo_wmark("") == {}
    assert parse_zoneinfo_wmark("Node 0, zone DMA\n  high lots\n  managed 9\n") == {0: 0}


def test_topology_carries_the_kernel_reserve(fake: FakeLinux) -> None:
    fake.two_tier()
    nodes = SysfsNodes(fake.sysfs, fake.procfs)
    assert [n.wmark_pages for n in nodes.topology().nodes] == [0, 0]  # no zoneinfo: unknown
    (Path(fake.procfs) / "zoneinfo").write_text(GUEST_ZONEINFO)
    assert [n.wmark_pages for n in nodes.topology().nodes] == [8745, 17066]


def test_two_tier_topology(fake: FakeLinux) -> None:
    fake.two_tier()
    nodes = SysfsNodes(fake.sysfs, fake.procfs)
    topo = nodes.topology()
    assert topo.top_tier_nids == (0,)
    assert topo.slow_tier_nids == (1,)
    n0, n1 = topo.nodes
    assert (n0.has_cpu, n0.tier, n1.has_cpu, n1.tier) == (True, 4, False, 67)
    assert n0.capacity_pages == (4 << 20) * 1024 // 4096
    assert n1.free_pages == (2 << 20) * 1024 // 4096
    assert "node_is_toptier" in nodes.layout.top_tier_how


def test_free_memory_is_reread(fake: FakeLinux) -> None:
    fake.two_tier()
    nodes = SysfsNodes(fake.sysfs, fake.procfs)
    fake.add_node(1, total_kb=4 << 20, free_kb=4096)
    assert nodes.topology().node(1).free_pages == 1024


def test_faster_cpuless_tier_is_top_tier() -> None:
    # Node 2 is CPU-less but in a faster tier than the CPU node: node_is_toptier says top.
    top = decide_top_tier((0, 1, 2), {0: 4, 1: 67, 2: 3}, {0: True, 1: False, 2: False},
                          None, None)[0]
    assert top == {0, 2}


def test_no_tier_info_means_everything_top(fake: FakeLinux) -> None:
    fake.set_online("0-1", "0")
    fake.add_node(0, cpus="0")
    fake.add_node(1)
    nodes = SysfsNodes(fake.sysfs, fake.procfs)
    assert nodes.layout.top_tier == {0, 1}
    assert nodes.layout.tier_of == {0: TIER_UNKNOWN, 1: TIER_UNKNOWN}
    assert "no memory tier information" in nodes.layout.top_tier_how


def test_config_overrides(fake: FakeLinux) -> None:
    fake.set_online("0-2", "0")
    for nid in range(3):
        fake.add_node(nid, cpus="0" if nid == 0 else "")
    assert SysfsNodes(fake.sysfs, fake.procfs, slow_nodes=[2]).layout.top_tier == {0, 1}
    assert SysfsNodes(fake.sysfs, fake.procfs, top_tier_nodes=[0]).layout.slow_nids == (1, 2)
    with pytest.raises(ConfigError, match="slow_nodes: node"):
        SysfsNodes(fake.sysfs, fake.procfs, slow_nodes=[7])
    with pytest.raises(ConfigError, match="both name node"):
        SysfsNodes(fake.sysfs, fake.procfs, top_tier_nodes=[0, 1], slow_nodes=[1])


def test_non_numeric_sysfs_values_are_clean_errors(fake: FakeLinux) -> None:
    fake.two_tier()
    fake.write_sys("devices/system/node/node1/cpulist", "zero-one\n")
    with pytest.raises(Unsupported, match="cpulist"):
        SysfsNodes(fake.sysfs, fake.procfs)
    fake.write_sys("devices/system/node/node1/cpulist", "\n")
    fake.write_sys("devices/system/memory/block_size_bytes", "big\n")
    with pytest.raises(Unsupported, match="block_size_bytes"):
        SysfsNodes(fake.sysfs, fake.procfs)


def test_pfn_map_lookup(fake: FakeLinux) -> None:
    fake.two_tier()
    pfn_map = SysfsNodes(fake.sysfs, fake.procfs).layout.pfn_map
    assert pfn_map is not None
    assert pfn_map.start_pfn.tolist() == [0, 8 * BLOCK_PAGES]  # adjacent blocks merged
    pfns = np.array([0, BLOCK_PAGES * 8 - 1, BLOCK_PAGES * 8, BLOCK_PAGES * 16 - 1,
                     BLOCK_PAGES * 16, 1 << 40], dtype=np.uint64)
    assert pfn_map.lookup(pfns).tolist() == [0, 0, 1, 1, NID_NONE, NID_NONE]


def test_pfn_map_with_holes_and_interleaving() -> None:
    pfn_map = PfnNodeMap.from_blocks({0: [0, 1, 5], 1: [2, 3, 7]}, block_pages=10)
    pfns = np.arange(0, 85, 5, dtype=np.uint64)
    expect = [0, 0, 0, 0, 1, 1, 1, 1, NID_NONE, NID_NONE, 0, 0, NID_NONE, NID_NONE, 1, 1,
              NID_NONE]
    assert pfn_map.lookup(pfns).tolist() == expect


def test_single_node_without_memory_blocks(fake: FakeLinux) -> None:
    fake.set_online("0", "0")
    fake.add_node(0, cpus="0-1")
    pfn_map = SysfsNodes(fake.sysfs, fake.procfs).layout.pfn_map
    assert pfn_map is not None
    assert pfn_map.lookup(np.array([0, 123456789], dtype=np.uint64)).tolist() == [0, 0]


def test_multi_node_without_memory_blocks_has_no_map(fake: FakeLinux) -> None:
    fake.set_online("0-1", "0")
    fake.add_node(0, cpus="0")
    fake.add_node(1)
    assert SysfsNodes(fake.sysfs, fake.procfs).layout.pfn_map is None


def test_no_numa_sysfs_uses_proc_meminfo(fake: FakeLinux) -> None:
    fake.write_proc("meminfo", "MemTotal:  8192 kB\nMemFree:  4096 kB\nBuffers: 1 kB\n")
    topo = SysfsNodes(fake.sysfs, fake.procfs).topology()
    assert [(n.nid, n.capacity_pages, n.free_pages, n.top_tier) for n in topo.nodes] == [
        (0, 2048, 1024, True)
    ]
