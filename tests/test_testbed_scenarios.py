"""The guest scenarios' host-side pieces without a guest: the daemon-state readers the
scenarios judge by (complete scans, counters that may be absent), the DAMOS schemes
vm-compare writes, the tunable parser, and the filler column of the comparison."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from testbed import mechanisms
from testbed.actors import Daemon
from testbed.compare import filler_on_slow
from testbed.inguest import parse_tunable
from testbed.mechanisms import DamosScheme, damos_tier_schemes, kdamond_writes
from testbed.scenarios import EXCHANGE_TUNABLES, FILLER_COMM, filler_spec

STATE = {
    "totals": {"nr_kscand_migrated": 7},
    "processes": [{"pid": 10, "full_scans": 3}, {"pid": 11, "full_scans": 0}],
}


def bare_daemon() -> Daemon:
    """A Daemon object without a process (only its state readers are used)."""
    return Daemon.__new__(Daemon)


def test_counters_the_daemon_never_counted_read_zero() -> None:
    daemon = bare_daemon()
    assert daemon.total("nr_kscand_migrated", STATE) == 7
    assert daemon.total("nr_kscand_mm_exit", STATE) == 0
    assert daemon.total("nr_kscand_mm_exit", {"totals": None}) == 0


def test_full_scans_of_a_process() -> None:
    daemon = bare_daemon()
    assert daemon.full_scans(10, STATE) == 3
    assert daemon.full_scans(11, STATE) == 0
    assert daemon.full_scans(99, STATE) == 0  # not (or no longer) in the daemon's list
    assert daemon.full_scans(10, {}) == 0


def test_the_exchange_filler_is_scanned_and_cold() -> None:
    spec = filler_spec(40, 2.0)
    assert spec.comm == FILLER_COMM and FILLER_COMM.startswith("kscand-wl")
    assert spec.node == 0 and spec.keep_bind and spec.hold and spec.fill_leave_mib == 40
    assert set(EXCHANGE_TUNABLES) <= {"demote_watermark_pct"}  # the one switch (see scenarios)


def test_damos_tier_is_mem_tier_sh_without_the_quota_goals() -> None:
    cold, hot = damos_tier_schemes()
    assert (cold.action, cold.source_nid, cold.target_nid) == ("migrate_cold", 0, 1)
    assert (cold.min_nr_accesses, cold.max_nr_accesses) == (0, 0)
    assert cold.young_filter is True  # young pages are not demoted
    assert (hot.action, hot.source_nid, hot.target_nid) == ("migrate_hot", 1, 0)
    assert hot.min_nr_accesses == 1 and hot.young_filter is False  # only young ones promoted
    for scheme in (cold, hot):
        assert scheme.quota_bytes == 200 << 20 and scheme.quota_reset_ms == 1000
        assert scheme.apply_interval_us == 1_000_000


def test_kdamond_writes_cover_the_node_and_the_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mechanisms, "node_phys_range", lambda nid: (nid << 30, (nid + 1) << 30))
    kdamond = Path("/k/0")
    writes = dict(kdamond_writes(kdamond, damos_tier_schemes()[0]))
    region = kdamond / "contexts/0/targets/0/regions/0"
    scheme = kdamond / "contexts/0/schemes/0"
    assert writes[region / "start"] == 0 and writes[region / "end"] == 1 << 30
    assert writes[scheme / "action"] == "migrate_cold" and writes[scheme / "target_nid"] == 1
    assert writes[scheme / "filters/0/type"] == "young"
    assert writes[scheme / "filters/0/matching"] == "Y"
    assert writes[scheme / "quotas/bytes"] == 200 << 20
    plain = dict(kdamond_writes(kdamond, DamosScheme("migrate_hot", 1, 0, 1)))
    assert scheme / "filters/nr_filters" not in plain and scheme / "quotas/bytes" not in plain
    assert plain[region / "start"] == 1 << 30


def test_parse_tunable() -> None:
    assert parse_tunable("demote_watermark_pct=10") == ("demote_watermark_pct", 10)
    assert parse_tunable("demote_watermark_pct=2.5") == ("demote_watermark_pct", 2.5)
    for bad in ("x", "=1", "x=y"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_tunable(bad)


def test_filler_column() -> None:
    assert filler_on_slow({}) is None
    timeline = [{"cold": {"node0": 9}}, {"cold": {"node0": 4, "node1": 5}}]
    assert filler_on_slow({"filler_timeline": timeline}) == 5


def test_daemon_lists_a_process() -> None:
    daemon = bare_daemon()
    assert daemon.lists(10, STATE) and not daemon.lists(99, STATE) and not daemon.lists(10, {})


def test_exit_file_makes_the_workload_exit_at_once(tmp_path: Path) -> None:
    from testbed.actors import Workload, WorkloadSpec

    workload = Workload(WorkloadSpec(name="e", size_mib=4, node=0, exit_file=True), tmp_path)
    try:
        workload.wait_ready(timeout_s=60)
        workload.exit_abruptly()
        assert workload.proc.wait(timeout=30) == 0
        assert not (tmp_path / "e.done").exists()  # abrupt: no final report
    finally:
        if workload.proc.poll() is None:
            workload.proc.kill()
            workload.proc.wait()
