"""The daemon's machine factories: the live backend on a fake /proc and /sys, and --sim."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from daemon_fakes import FAST_TUNABLES, DaemonThread
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, smaps_entry

from kscand.backends import open_live_backend, open_sim_backend
from kscand.config import config_from_text
from kscand.core.tunables import Tunables
from kscand.errors import ConfigError, Unsupported
from kscand.live import probe
from kscand.machine import PAGE_SIZE, U64Array

PID = 4242
VMA = 0x7F00_0000_0000
NR_PAGES = 32
NODE1_PFN = 8 * ((128 << 20) // PAGE_SIZE)  # first PFN of node 1 in FakeLinux.two_tier()


class RecordingMover:
    """Stands in for move_pages(2) on the fake tree's pids."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[int], int]] = []

    def move(self, pid: int, vaddrs: U64Array, nid: int) -> np.ndarray:
        self.calls.append((pid, vaddrs.tolist(), nid))
        return np.full(vaddrs.shape, nid, dtype=np.int32)

    def query(self, pid: int, vaddrs: U64Array) -> np.ndarray:
        return np.full(vaddrs.shape, 1, dtype=np.int32)


@pytest.fixture
def fake(tmp_path: Path) -> FakeLinux:
    require(os.geteuid() == 0, "the live backend's probe needs root")
    fake = FakeLinux(tmp_path / "root")
    fake.two_tier()
    fake.enable_page_idle(max_pfn=NODE1_PFN + 1024)
    smaps = smaps_entry(VMA, VMA + NR_PAGES * PAGE_SIZE)
    fake.add_process(PID, "app", start_time=5000, smaps=smaps)
    pfns = [NODE1_PFN + i for i in range(NR_PAGES)]
    fake.set_pagemap(
        PID, {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | p for i, p in enumerate(pfns)}
    )
    fake.set_kpages(pfns, ANON_LRU)
    return fake


def test_live_backend_passes_the_config_to_the_machine(fake: FakeLinux) -> None:
    config = config_from_text(
        f'[scan]\npids = [{PID}]\ncomm_patterns = ["ap*"]\naccess_source = "page_idle"\n'
    )
    backend = open_live_backend(config, fake.procfs, fake.sysfs)
    try:
        assert backend.kind == "live"
        assert backend.access_source == "page_idle"
        assert backend.access_source_reason
        machine = backend.machine
        assert machine.selection.pids == (PID,)  # type: ignore[attr-defined]
        assert machine.selection.comm_patterns == ("ap*",)  # type: ignore[attr-defined]
        assert [p.pid for p in machine.processes()] == [PID]
        assert machine.topology().top_tier_nids == (0,)
    finally:
        backend.close()


def test_live_backend_topology_override_reaches_the_machine(fake: FakeLinux) -> None:
    config = config_from_text("[topology]\ntop_tier_nodes = [0, 1]\n")
    reason = probe(fake.procfs, fake.sysfs, top_tier_nodes=(0, 1)).blocking_reason()
    if reason is not None:  # every node top tier: nothing to promote, refused
        with pytest.raises(Unsupported) as info:
            open_live_backend(config, fake.procfs, fake.sysfs)
        assert str(info.value) == reason
        return
    backend = open_live_backend(config, fake.procfs, fake.sysfs)
    try:
        assert backend.machine.topology().top_tier_nids == (0, 1)
    finally:
        backend.close()


def test_live_backend_refuses_with_the_probe_reason(fake: FakeLinux) -> None:
    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    reason = probe(fake.procfs, fake.sysfs).blocking_reason()
    assert reason is not None
    with pytest.raises(Unsupported) as info:
        open_live_backend(config_from_text(""), fake.procfs, fake.sysfs)
    assert str(info.value) == reason
    assert "\n" not in reason


def test_live_backend_names_every_blocker_in_one_line(fake: FakeLinux) -> None:
    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    config = config_from_text("[topology]\ntop_tier_nodes = [0, 1]\n")
    with pytest.raises(Unsupported) as info:
        open_live_backend(config, fake.procfs, fake.sysfs)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"2 things block promotion here: (1) this kernel has no {fake.sysfs}/kernel/mm/"
        "page_idle/bitmap (CONFIG_IDLE_PAGE_TRACKING); no DAMON either: ")
    assert "; (2) no slow-tier node: every online node ((0, 1)) is top tier" in message


def test_kscand_run_reads_the_given_procfs_and_sysfs_and_names_every_blocker(
    fake: FakeLinux, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from kscand.cli import main

    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    config = tmp_path / "kscand.toml"
    config.write_text("[topology]\ntop_tier_nodes = [0, 1]\n")
    rc = main(["run", "--config", str(config), "--state-dir", str(tmp_path / "s"),
               "--procfs", fake.procfs, "--sysfs", fake.sysfs])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert err.startswith("kscand run: 2 things block promotion here: (1) this kernel has no "
                          f"{fake.sysfs}/kernel/mm/page_idle/bitmap")
    assert "; (2) no slow-tier node" in err
    assert not (tmp_path / "s").exists()


def test_daemon_promotes_on_the_fake_live_tree(fake: FakeLinux, tmp_path: Path) -> None:
    config = config_from_text(
        f"[tunables]\nscan_sleep_ms = 10\n{FAST_TUNABLES}[scan]\npids = [{PID}]\n"
    ).with_state_dir(tmp_path / "s")
    backend = open_live_backend(config, fake.procfs, fake.sysfs)
    mover = RecordingMover()
    backend.machine.mover = mover  # type: ignore[attr-defined]
    bitmap = Path(fake.sysfs) / "kernel/mm/page_idle/bitmap"
    zeros = bitmap.read_bytes()
    touching = threading.Event()

    def touch_pages() -> None:
        # The application keeps using its pages: the kernel would clear their idle bits.
        while not touching.wait(0.002):
            with open(bitmap, "r+b") as fh:
                fh.write(zeros)

    toucher = threading.Thread(target=touch_pages)
    toucher.start()
    run = DaemonThread(config, backend)
    try:
        run.wait_for(lambda: any(nid == 0 for _pid, _v, nid in mover.calls))
        status = run.daemon.status()
        assert status["machine"] == "live"
        assert status["access_source"] == "page_idle"
        assert [p["pid"] for p in status["processes"]] == [PID]
    finally:
        run.stop()
        touching.set()
        toucher.join()
    moved = sorted(v for pid, vaddrs, nid in mover.calls if nid == 0 for v in vaddrs)
    assert moved[: NR_PAGES] == [VMA + i * PAGE_SIZE for i in range(NR_PAGES)]


def test_sim_backend_runs_a_scenario_and_reports_bad_ones(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    backend = open_sim_backend(repo / "scenarios" / "hotset.toml")
    assert backend.kind == "sim:hotset.toml"
    assert backend.after_sleep is not None
    before = backend.machine.clock.now_ns()
    backend.after_sleep(20_000_000)
    assert backend.machine.clock.now_ns() == before + 20_000_000
    with pytest.raises(ConfigError):
        open_sim_backend(tmp_path / "absent.toml")


def test_sim_backend_carries_the_scenario_tunables() -> None:
    repo = Path(__file__).resolve().parents[1]
    backend = open_sim_backend(repo / "scenarios" / "zipf-kv.toml")
    from kscand.sim.scenario import load_scenario

    assert backend.tunables == load_scenario(repo / "scenarios" / "zipf-kv.toml").tunables
    assert backend.tunables != Tunables()  # the scenario sets some, so this can fail
