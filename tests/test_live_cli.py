"""`kscand topology` and `kscand scan`, on a fake tree and (marked live) on this host."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, kpf, smaps_entry
from rich.cells import cell_len

import kscand.live.features as live_features
from kscand.cli import main
from kscand.cli.scan import candidate_ranges
from kscand.inspect.oneshot import Candidates
from kscand.live.page_idle import PageIdleBitmap
from kscand.machine import PAGE_SIZE
from kscand.units import format_bytes

NODE1_PFN = 8 * ((128 << 20) >> 12)
VMA = 0x10000000
PID = 4242


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the os live.features reads


@pytest.fixture
def fake(tmp_path: Path) -> FakeLinux:
    fake = FakeLinux(tmp_path)
    fake.two_tier()
    fake.enable_page_idle(NODE1_PFN + 4096)
    fake.add_process(PID, "redis-server", start_time=5000,
                     smaps=smaps_entry(VMA, VMA + (1 << 20)))
    # Pages 0-3 on node 0, 4-9 on node 1, page 10 shared, 11-15 never touched.
    entries = {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (200 + i) for i in range(4)}
    entries |= {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (NODE1_PFN + i)
                for i in range(4, 10)}
    entries[VMA + 10 * PAGE_SIZE] = PM_PRESENT | (NODE1_PFN + 10)
    fake.set_pagemap(PID, entries)
    fake.set_kpages(range(200, 204), ANON_LRU)
    fake.set_kpages(range(NODE1_PFN + 4, NODE1_PFN + 11), ANON_LRU)
    return fake


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_topology_on_a_two_tier_tree(fake: FakeLinux, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["topology", "--procfs", fake.procfs, "--sysfs", fake.sysfs], capsys)
    assert rc == 0
    assert "top tier" in out and "slow tier" in out
    assert "access source: page_idle" in out
    assert "kscand can promote here." in out


def test_topology_exits_3_naming_every_blocker(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str]
) -> None:
    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    rc, out, _ = run(["topology", "--procfs", fake.procfs, "--sysfs", fake.sysfs,
                      "--top-tier-nodes", "0,1"], capsys)
    assert rc == 3
    assert "access source: cannot promote: none (this kernel has no" in out
    assert "cannot promote: no slow-tier node" in out
    assert out.splitlines()[-1] == "kscand cannot promote here (2 blockers above; exit status 3)"
    assert "kscand can promote here." not in out


def test_topology_bad_sysfs_value_is_one_line(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.write_sys("devices/system/node/node1/meminfo", "Node 1 MemTotal: lots\n")
    rc, _, err = run(["topology", "--procfs", fake.procfs, "--sysfs", fake.sysfs], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and "MemTotal" in err


def test_scan_reports_hot_slow_pages_as_candidates(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Every page stays accessed: the bitmap never records the idle marks.
    monkeypatch.setattr(PageIdleBitmap, "write_words", lambda self, words, masks: None)
    argv = ["scan", "--pid", str(PID), "--passes", "2", "--interval-ms", "0",
            "--procfs", fake.procfs, "--sysfs", fake.sysfs]
    heatmap = tmp_path / "heat.png"
    if importlib.util.find_spec("matplotlib") is not None:
        argv += ["--heatmap", str(heatmap)]
    rc, out, err = run(argv, capsys)
    assert rc == 0, err
    assert "access source page_idle" in out
    assert "6 (24 KiB) would be promoted to node 0" in out
    assert f"{VMA + 4 * PAGE_SIZE:#x}" in out and f"{VMA + 10 * PAGE_SIZE:#x}" in out
    assert "page_shared=1" in out and "page_not_present=245" in out
    rows = {line.split()[1]: line.split("│")[1:-1] for line in out.splitlines()
            if line.startswith("│")}
    # node, tier, present, eligible, accessed, hot, cold, idle (4 KiB base pages, as sizes)
    assert [c.strip() for c in rows["0"]] == ["0", "top", "16 KiB", "16 KiB", "16 KiB",
                                               "16 KiB", "0 B", "0 B"]
    assert [c.strip() for c in rows["1"]] == ["1", "slow", "28 KiB", "24 KiB", "24 KiB",
                                               "24 KiB", "0 B", "0 B"]
    if importlib.util.find_spec("matplotlib") is not None:
        assert heatmap.stat().st_size > 0


def test_scan_never_moves(fake: FakeLinux, capsys: pytest.CaptureFixture[str],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from kscand.live.move import PageMover

    def refuse(*args: object) -> None:
        raise AssertionError("scan called move_pages")

    monkeypatch.setattr(PageMover, "move", refuse)
    monkeypatch.setattr(PageIdleBitmap, "write_words", lambda self, words, masks: None)
    rc, _, err = run(["scan", "--pid", str(PID), "--passes", "3", "--interval-ms", "0",
                      "--procfs", fake.procfs, "--sysfs", fake.sysfs], capsys)
    assert rc == 0, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pid", "999"], "no process with pid 999"),
        (["--pid", "2"], "kernel thread"),
        (["--pid", str(PID), "--passes", "0"], "--passes"),
        (["--pid", str(PID), "--interval-ms", "-5"], "--interval-ms"),
    ],
)
def test_scan_bad_input_is_one_line_exit_2(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    fake.add_process(2, "kthreadd", flags=0x00200000)
    rc, _, err = run(["scan", *argv, "--procfs", fake.procfs, "--sysfs", fake.sysfs], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_scan_without_matplotlib_is_one_line(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    rc, _, err = run(["scan", "--pid", str(PID), "--heatmap", "x.png", "--procfs", fake.procfs,
                      "--sysfs", fake.sysfs], capsys)
    assert rc == 2 and err.strip() == "kscand scan: --heatmap needs matplotlib: pip install " \
        "'kscand[plot]'"


def test_candidate_ranges_merge_contiguous_folios() -> None:
    vaddr = np.array([0x1000, 0x2000, 0x200000, 0x400000, 0x401000], dtype=np.uint64)
    cands = Candidates(vaddr, vaddr >> np.uint64(12), np.array([1, 1, 1, 1, 2], np.int32),
                       np.array([1, 1, 512, 1, 1], np.int64))
    assert candidate_ranges(cands) == [
        (0x1000, 0x3000, 1, 2), (0x200000, 0x401000, 1, 513), (0x401000, 0x402000, 2, 1),
    ]


def test_thp_candidate_counts_its_pages(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    thp = VMA + (2 << 20)
    smaps = smaps_entry(VMA, VMA + (4 << 20))
    fake.write_proc(f"{PID}/smaps", smaps)
    fake.write_proc(f"{PID}/maps", smaps.splitlines()[0] + "\n")
    head = NODE1_PFN + 1024
    fake.set_pagemap(PID, {thp + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (head + i)
                           for i in range(512)})
    fake.set_kpage(head, ANON_LRU | kpf("THP", "COMPOUND_HEAD"))
    fake.set_kpages(range(head + 1, head + 512), kpf("THP", "COMPOUND_TAIL", "ANON"))
    monkeypatch.setattr(PageIdleBitmap, "write_words", lambda self, words, masks: None)
    rc, out, err = run(["scan", "--pid", str(PID), "--passes", "2", "--interval-ms", "0",
                        "--procfs", fake.procfs, "--sysfs", fake.sysfs], capsys)
    assert rc == 0, err
    assert "518 (2.0 MiB) would be promoted to node 0" in out  # 6 base pages + one 2 MiB THP


# --- this host -------------------------------------------------------------------------------


@pytest.mark.live
def test_host_topology_and_scan(capsys: pytest.CaptureFixture[str]) -> None:
    require(os.geteuid() == 0 and os.path.exists("/proc/kpageflags"), "needs root and kpageflags")
    rc, out, _ = run(["topology"], capsys)
    assert "access source:" in out
    assert (rc, "kscand can promote here." in out) in ((0, True), (3, False)), (rc, out)
    child = subprocess.Popen(["sleep", "30"])
    try:
        rc, out, err = run(["scan", "--pid", str(child.pid), "--passes", "2",
                            "--interval-ms", "10"], capsys)
    finally:
        child.kill()
        child.wait()
    assert rc == 0, err
    text = " ".join(out.split())  # rich wraps long sentences and titles
    assert "per node in the scanned VMAs" in text
    if not live_features.probe().has_page_idle:
        assert "showing residency only" in text or "access source damon" in text


# --- --json and 80 columns -------------------------------------------------------------------


def test_topology_json_has_what_the_table_shows(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    argv = ["topology", "--procfs", fake.procfs, "--sysfs", fake.sysfs]
    rc, out, _ = run([*argv, "--json", "-"], capsys)
    data = json.loads(out)
    assert rc == 0 and data["can_promote"] is True
    assert [n["nid"] for n in data["nodes"]] == [0, 1]
    assert [n["top_tier"] for n in data["nodes"]] == [True, False]
    for node in data["nodes"]:
        assert {"tier", "cpus", "capacity_bytes", "free_bytes", "free_pct",
                "memory_blocks_bytes"} <= set(node)
        assert isinstance(node["capacity_bytes"], int) and node["capacity_bytes"] > 0
    assert data["access_source"]["name"] == "page_idle"
    assert data["top_tier_nids"] == [0] and data["slow_tier_nids"] == [1]
    monkeypatch.setenv("COLUMNS", "80")
    rc, table, _ = run(argv, capsys)
    assert rc == 0 and max(cell_len(line) for line in table.splitlines()) <= 80
    for node in data["nodes"]:
        assert format_bytes(node["capacity_bytes"]) in table
        assert format_bytes(node["free_bytes"]) in table
    # Blockers: exit status 3 with --json too, every blocker in it.
    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    rc, out, _ = run([*argv, "--top-tier-nodes", "0,1", "--json", "-"], capsys)
    data = json.loads(out)
    assert rc == 3 and data["can_promote"] is False
    assert len([f for f in data["findings"] if f["blocking"]]) >= 2


def test_scan_json_and_80_columns(
    fake: FakeLinux, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(PageIdleBitmap, "write_words", lambda self, words, masks: None)
    argv = ["scan", "--pid", str(PID), "--passes", "2", "--interval-ms", "0",
            "--procfs", fake.procfs, "--sysfs", fake.sysfs]
    rc, out, err = run([*argv, "--json", "-"], capsys)
    assert rc == 0, err
    data = json.loads(out)
    nodes = {n["nid"]: n for n in data["nodes"]}
    assert nodes[1] == {"nid": 1, "top_tier": False, "present_pages": 7, "eligible_pages": 6,
                        "accessed_pages": 6, "hot_pages": 6, "cold_pages": 0, "idle_pages": 0}
    assert nodes[0]["present_pages"] == 4
    assert data["candidate_pages"] == 6 and data["target_nid"] == 0
    assert data["candidate_ranges"] == [
        {"start": VMA + 4 * PAGE_SIZE, "end": VMA + 10 * PAGE_SIZE, "nid": 1, "pages": 6}
    ]
    assert data["skips"]["page_shared"] == 1 and data["pid"] == PID
    monkeypatch.setenv("COLUMNS", "80")
    rc, out, _ = run(argv, capsys)
    assert rc == 0 and max(cell_len(line) for line in out.splitlines()) <= 80
    assert "…" not in out
    for r in data["candidate_ranges"]:
        assert f"{r['start']:#x}" in out and f"{r['end']:#x}" in out
