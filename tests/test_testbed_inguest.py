"""The guest-side pieces without a guest: the workload's hot-set layouts and its run on
this host (node 0 stands in for the slow node), the daemon config the scenarios write,
the placement arithmetic, and the numpy workaround in the guest script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from guest import workload

from kscand.config import config_from_text
from kscand.core.tunables import Tunables
from testbed import inguest
from testbed.guest import NUMPY_DISABLED_CPU_FEATURES, guest_script
from testbed.inguest import (
    FAST_TUNABLES,
    WorkloadSpec,
    first_time_at,
    hot_fraction_on,
    kscand_config,
    make_mechanism,
)


@pytest.mark.parametrize("layout", ["contiguous", "chunks:4", "chunks:3", "scattered"])
def test_hot_pages_are_ten_percent_unique_and_in_range(layout: str) -> None:
    hot = workload.hot_page_indices(65_536, 10.0, layout, seed=1)
    assert hot.size == 6554
    assert np.unique(hot).size == hot.size and (np.diff(hot) > 0).all()
    assert hot.min() >= 0 and hot.max() < 65_536


def test_layouts_have_the_runs_they_name() -> None:
    def runs(hot: np.ndarray) -> int:
        return int((np.diff(hot) > 1).sum()) + 1

    assert runs(workload.hot_page_indices(1000, 10.0, "contiguous", 1)) == 1
    chunks = workload.hot_page_indices(1000, 10.0, "chunks:4", 1)
    assert runs(chunks) == 4
    assert chunks.min() > 0 and chunks.max() < 999  # spread, not packed at one end
    assert runs(workload.hot_page_indices(65_536, 10.0, "scattered", 1)) > 1000
    with pytest.raises(ValueError, match="layout"):
        workload.hot_page_indices(1000, 10.0, "chunks:0", 1)


def test_count_nodes_splits_nodes_and_errors() -> None:
    status = np.array([0, 1, 1, -14, 0, -2], dtype=np.int32)
    assert workload.count_nodes(status) == {"other": 2, "node0": 2, "node1": 2}


def test_workload_runs_here_and_reports_where_its_pages_are(tmp_path: Path) -> None:
    """16 MiB on node 0 (every host has one) with a shared buffer, 1.5 s."""
    spec = WorkloadSpec(name="t", size_mib=16, node=0, shared_mib=1, duration_s=1.5, flush_tlb=True)
    argv = spec.argv(tmp_path, tmp_path / "t.stop")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    ready = json.loads((tmp_path / "t.ready").read_text())
    assert ready["nr_pages"] == 4096 and ready["nr_hot"] == 410 and ready["nr_shared"] == 256
    assert ready["numpy_sorts_right"]
    hot = np.load(tmp_path / "t.hot.npy")
    cold = np.load(tmp_path / "t.cold.npy")
    assert hot.size == 410 and cold.size == 4096 - 410
    assert not np.intersect1d(hot, cold).size
    lines = [json.loads(x) for x in (tmp_path / "t.placement.jsonl").read_text().splitlines()]
    assert len(lines) >= 2
    assert lines[-1]["hot"] == {"other": 0, "node0": 410}
    assert lines[-1]["shared"] == {"other": 0, "node0": 256}
    assert lines[-1]["passes"] > 0
    done_info = json.loads((tmp_path / "t.done").read_text())
    assert done_info["stopped"] == "duration" and done_info["sharer_pid"] > 0


def test_tlb_flusher_write_protects_and_restores_its_pages() -> None:
    flusher = workload.TlbFlusher()
    flusher.flush()

    def perms_at(addr: int) -> str:  # the VMA may have merged with a neighbour
        for line in Path("/proc/self/maps").read_text().splitlines():
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return line.split()[1]
        raise AssertionError(f"{addr:#x} is not mapped")

    for page in (0, 63):  # read-only for an instant, writable again, all 64 pages
        assert perms_at(flusher.addr + page * 4096) == "rw-p"


def test_workload_exit_after_leaves_no_done_file(tmp_path: Path) -> None:
    spec = WorkloadSpec(name="x", size_mib=4, node=0, exit_after_s=0.3)
    done = subprocess.run(spec.argv(tmp_path, tmp_path / "x.stop"), capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.ready").exists() and not (tmp_path / "x.done").exists()


def test_daemon_config_is_valid_and_selects_only_the_workload() -> None:
    for source, tunables in FAST_TUNABLES.items():
        config = config_from_text(kscand_config(source, tunables))
        assert config.scan.access_source == source
        assert config.scan.comm_patterns == ("kscand-wl*",)
        assert config.tunables.scan_delay_ms == 0
        assert config.tunables.default_scale == 1
    defaults = config_from_text(kscand_config("page_idle", {}))
    assert defaults.tunables == Tunables()  # vm-compare: the defaults


def test_damon_scan_period_is_not_shorter_than_its_snapshot_refresh() -> None:
    from kscand.live.damon_sysfs import DamonSettings

    assert FAST_TUNABLES["damon"]["scan_period_min_ms"] > DamonSettings().refresh_ms


def test_placement_shares_and_first_time() -> None:
    timeline = [
        {"t_s": 0.0, "hot": {"node1": 10, "other": 0}},
        {"t_s": 1.0, "hot": {"node0": 5, "node1": 5, "other": 0}},
        {"t_s": 2.0, "hot": {"node0": 9, "node1": 1, "other": 0}},
    ]
    assert hot_fraction_on(timeline[1], "hot", 0) == 0.5
    assert hot_fraction_on({}, "hot", 0) == 0.0
    assert first_time_at(timeline, "hot", 0, 0.5) == 1.0
    assert first_time_at(timeline, "hot", 0, 0.9) == 2.0
    assert first_time_at(timeline, "hot", 0, 0.95) is None


def test_mechanism_names() -> None:
    for name in inguest.MECHANISMS:
        assert make_mechanism(name).name == name
    with pytest.raises(ValueError, match="unknown mechanism"):
        make_mechanism("autonuma")


def test_guest_script_turns_off_numpy_avx2(tmp_path: Path) -> None:
    script = guest_script(["true"], tmp_path, tmp_path, None)
    assert f"export NPY_DISABLE_CPU_FEATURES='{NUMPY_DISABLED_CPU_FEATURES}'" in script
    assert "X86_V3" in NUMPY_DISABLED_CPU_FEATURES and "AVX2" in NUMPY_DISABLED_CPU_FEATURES


def test_inguest_does_not_import_numpy() -> None:
    """It only watches other processes; numpy's import costs 6-13 s under TCG."""
    code = "import sys, testbed.inguest; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False"


def test_window_deltas() -> None:
    start: dict[str, Any] = {"mechanism_s": 1.0, "workload_sys_s": 0.25,
                             "vmstat": {"pgmigrate_success": 5}}
    end: dict[str, Any] = {"mechanism_s": 3.5, "workload_sys_s": 0.5,
                           "vmstat": {"pgmigrate_success": 9}}
    assert inguest.cpu_delta(start, end) == {"mechanism_s": 2.5, "workload_sys_s": 0.25}
    assert inguest.vmstat_delta(start["vmstat"], end["vmstat"]) == {"pgmigrate_success": 4}
    assert inguest.vmstat_delta({}, {"numa_hint_faults": 3, "other": 1}) == {"numa_hint_faults": 3}


def test_compare_run_without_a_mechanism_here(tmp_path: Path) -> None:
    """The whole compare scenario on this host with no mechanism and a tiny workload."""
    spec = WorkloadSpec(size_mib=4, node=0, report_interval_s=0)
    inguest.run_compare("none", tmp_path, 1.5, spec)
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["errors"] == []
    assert result["mechanism"] == "none" and result["main"]["nr_hot"] == 102
    assert set(result["cpu"]) == {"mechanism_s", "workload_user_s", "workload_sys_s"}
    assert result["cpu"]["mechanism_s"] == 0.0
    assert len(result["timeline"]) >= 2  # sampled from outside: the workload reports no more
    assert result["timeline"][-1]["hot"] == {"other": 0, "node0": 102}
    assert result["timeline"][-1]["cold"] == {"other": 0, "node0": 1024 - 102}
    own = (tmp_path / "wl.placement.jsonl").read_text().splitlines()
    assert len(own) == 2  # only at ready and at the end
    assert result["workload_exit_status"] == 0


def test_npy_reader_matches_numpy(tmp_path: Path) -> None:
    values = np.array([0, 1, 2**63 + 5, 0x7F0000001000], dtype=np.uint64)
    np.save(tmp_path / "a.npy", values)
    assert inguest.load_u64_npy(tmp_path / "a.npy").tolist() == values.tolist()
    np.save(tmp_path / "b.npy", values.astype(np.int32))
    with pytest.raises(ValueError, match="uint64"):
        inguest.load_u64_npy(tmp_path / "b.npy")


def test_workload_ignores_an_earlier_runs_files(tmp_path: Path) -> None:
    """vm-compare reuses its output directory: a stale ready file must not be taken."""
    stale = {"pid": 1, "ready_wall": 0.0, "buffer": [0, 0]}
    (tmp_path / "w.ready").write_text(json.dumps(stale))
    (tmp_path / "w.placement.jsonl").write_text('{"t_s": 0, "hot": {"node1": 9}}\n')
    workload = inguest.Workload(WorkloadSpec(name="w", size_mib=4, node=0, duration_s=1.0), tmp_path)
    try:
        info = workload.wait_ready(timeout_s=60)
        assert info["pid"] == workload.pid != 1
        assert all(line["t_s"] != 0 or "node1" not in line["hot"] for line in workload.timeline())
    finally:
        workload.stop()
