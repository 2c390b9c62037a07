"""The Prometheus endpoint: scraped on localhost while the daemon runs, and parsed."""

from __future__ import annotations

import errno
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from daemon_fakes import (
    DaemonThread,
    FakeMachine,
    fake_backend,
    fast_config,
    two_tier_scenario,
)
from prometheus_client.parser import text_string_to_metric_families

from kscand.cli import main as cli_main
from kscand.config import parse_metrics_address
from kscand.core.counters import (
    EngineCounter,
    EngineFamily,
    HotSkip,
    MigrateDrop,
    PageSkip,
    ScanSkip,
    Series,
    VmaSkip,
)
from kscand.core.migrator import move_fail_counter
from kscand.daemon.loop import Daemon
from kscand.daemon.metrics import MAX_PROCESS_SERIES, DurationHistogram, counter_metric
from kscand.errors import KscandError, Unsupported
from kscand.machine import I32Array, ProcessId, U64Array

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of the endpoint: (name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_counters_map_to_families_with_reason_labels() -> None:
    assert counter_metric(Series.MIGRATED).family == "nr_kscand_migrated"
    assert counter_metric(EngineCounter.PTES_SCANNED).label is None
    m = counter_metric(move_fail_counter(-errno.ENOMEM))
    assert (m.family, m.label) == ("kscand_move_failed_pages", ("reason", "enomem"))
    demote_fail = move_fail_counter(-errno.EBUSY, EngineFamily.DEMOTE_MOVE_FAILED)
    assert counter_metric(demote_fail).family == "kscand_demote_failed_pages"
    assert counter_metric(MigrateDrop.PROC_GONE).label == ("reason", "proc_gone")
    assert counter_metric(VmaSkip.HUGETLB).label == ("reason", "hugetlb")
    assert counter_metric(PageSkip.NOT_LRU.counter).family == "kscand_skipped_pages"
    assert counter_metric(ScanSkip.SCALE0).label == ("reason", "scale0")
    assert counter_metric(ScanSkip.PROC_GONE).label == ("reason", "proc_gone")
    node = counter_metric(EngineFamily.PROMOTED_PAGES_NODE.key(node=3))
    assert (node.family, node.label, node.factor) == ("kscand_promoted_bytes", ("node", "3"), 4096)
    assert counter_metric(HotSkip.YOUNG_SCANS).label == ("name", "skip_young_scans")
    with pytest.raises(TypeError):
        counter_metric("something_new")  # a plain name: the status's counters are typed


def test_duration_histogram_is_cumulative_with_le_semantics() -> None:
    h = DurationHistogram((0.001, 0.01))
    for ns in (500_000, 1_000_000, 1_000_001, 50_000_000):
        h.observe_ns(ns)
    buckets, count, sum_s = h.snapshot()
    assert buckets == [(0.001, 2), (0.01, 3), (float("inf"), 4)]
    assert count == 4
    assert sum_s == pytest.approx(0.052500001)


class FailingMoves(FakeMachine):
    """The first move of every fourth page fails with -ENOMEM (the target is full)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.failed_once: set[tuple[ProcessId, int]] = set()

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        keys = [(proc, int(v)) for v in vaddrs]
        fail = np.array([(int(v) >> 12) % 4 == 0 and k not in self.failed_once
                         for v, k in zip(vaddrs, keys, strict=True)], dtype=np.bool_)
        self.failed_once.update(k for k, f in zip(keys, fail, strict=True) if f)
        status = np.full(vaddrs.shape, -errno.ENOMEM, dtype=np.int32)
        if (~fail).any():
            status[~fail] = super().move_pages(proc, vaddrs[~fail], nid)
        else:
            self.move_calls += 1
        return status


def test_scrape_during_a_run_has_totals_per_process_reasons_nodes_and_durations(
    tmp_path: Path,
) -> None:
    machine = FailingMoves(nr_procs=2, nr_pages=64)
    config = fast_config(tmp_path / "s", "scan_sleep_ms = 10\nmigrate_batch_folios = 16")
    config = config.with_metrics(parse_metrics_address("0", "--metrics"))
    run = DaemonThread(config, machine)
    try:
        url = run.daemon.metrics_url
        assert url is not None and url.startswith("http://127.0.0.1:")
        run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 128)
        samples = scrape(url)
        status = run.daemon.status()
    finally:
        run.stop()
    assert samples[("nr_kscand_migrated_total", ())] == 128
    assert samples[("nr_kscand_mm_scans_total", ())] == status["totals"]["nr_kscand_mm_scans"]
    for pid in (100, 101):
        labels = (("comm", f"fake{pid}"), ("pid", str(pid)))
        assert samples[("kscand_process_migrated_total", labels)] == 64
    failed = samples[("kscand_move_failed_pages_total", (("reason", "enomem"),))]
    assert failed == status["totals"]["move_fail_enomem"] > 0
    assert samples[("kscand_promoted_bytes_total", (("node", "0"),))] == 128 * 4096
    assert samples[("kscand_scan_step_duration_seconds_count", ())] >= 2
    batches = samples[("kscand_move_batch_duration_seconds_count", ())]
    assert batches == machine.move_calls > 0
    assert samples[("kscand_move_batch_duration_seconds_bucket", (("le", "+Inf"),))] == batches
    assert samples[("kscand_processes", ())] == 2
    assert samples[("kscand_tunable", (("name", "migrate_batch_folios"),))] == 16
    assert samples[("kscand_daemon_steps_total", ())] >= 2
    assert samples[("kscand_info", (("access_source", "fake"), ("machine", "fake"),
                                    ("version", status["version"])))] == 1


def test_per_process_series_cover_only_live_processes(tmp_path: Path) -> None:
    machine = FakeMachine(nr_procs=3, nr_pages=8)
    config = fast_config(tmp_path / "s").with_metrics(parse_metrics_address("0", "m"))
    run = DaemonThread(config, machine)
    try:
        url = run.daemon.metrics_url
        assert url is not None
        run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 24)
        before = {dict(k[1]).get("pid") for k in scrape(url) if k[0] == "kscand_process_migrated_total"}
        gone = ProcessId(101, 1001)
        run.daemon.call_in_loop(lambda: machine.nid.pop(gone))
        run.wait_for(lambda: len(run.daemon.status()["processes"]) == 2)
        after = scrape(url)
    finally:
        run.stop()
    assert before == {"100", "101", "102"}
    assert {dict(k[1]).get("pid") for k in after if k[0] == "kscand_process_migrated_total"} == {
        "100", "102"}
    assert after[("nr_kscand_migrated_total", ())] == 24  # totals keep the exited process
    assert after[("kscand_process_series_omitted", ())] == 0
    assert MAX_PROCESS_SERIES >= 100


def test_endpoint_binds_loopback_only_unless_told(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "s").with_metrics(parse_metrics_address("0", "m"))
    run = DaemonThread(config, FakeMachine())
    try:
        server = run.daemon._metrics
        assert server is not None
        assert server._httpd.socket.getsockname()[0] == "127.0.0.1"
        assert server.address.port > 0
    finally:
        run.stop()
    assert run.daemon.metrics_url is None  # closed with the daemon


def test_busy_port_is_a_one_line_error(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "s").with_metrics(parse_metrics_address("0", "m"))
    first = DaemonThread(config, FakeMachine())
    try:
        server = first.daemon._metrics
        assert server is not None
        taken = config.with_metrics(server.address).with_state_dir(tmp_path / "t")
        second = Daemon(taken, first.daemon.backend)
        with pytest.raises(KscandError, match=r"^metrics endpoint 127.0.0.1:\d+: cannot listen: "
                                              r"Address already in use$"):
            second.start()
        second.close()
    finally:
        first.stop()


def test_missing_prometheus_client_is_one_line_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    scenario = Path(__file__).resolve().parents[1] / "scenarios" / "hotset.toml"
    rc = cli_main(["run", "--sim", str(scenario), "--metrics", "9477",
                   "--state-dir", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err == ("kscand run: the metrics endpoint needs the prometheus_client package: "
                   "pip install 'kscand[metrics]' (or run without --metrics / daemon.metrics)\n")
    assert not (tmp_path / "s").exists()
    config = fast_config(tmp_path / "s").with_metrics(parse_metrics_address("0", "m"))
    daemon = Daemon(config, fake_backend(FakeMachine()))
    with pytest.raises(Unsupported, match="needs the prometheus_client package"):
        daemon.start()
    daemon.close()
    assert not (tmp_path / "s").exists()  # refused before touching the state directory


def test_bad_metrics_option_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = cli_main(["run", "--metrics", "localhost:9477", "--state-dir", str(tmp_path / "s")])
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("kscand run: --metrics: expected PORT, IP:PORT") and err.count("\n") == 1


def test_numpy_status_values_do_not_break_the_exposition(tmp_path: Path) -> None:
    # Counters are plain ints in the snapshot; a numpy integer would also be exported.
    from kscand.daemon.prometheus import total_families

    families = list(total_families({Series.MIGRATED: int(np.int64(5))}))
    assert families[0].samples[0].value == 5


# -- end to end: `kscand run --sim --metrics` scraped, its trace file parsed ------------------

E2E_SCENARIO = two_tier_scenario(
    "metrics-e2e",
    """
[[processes]]
name = "app"
count = 2
placement = "slow"
workload = { kind = "hotset", hot_fraction = 0.10, hot_share = 0.95, rate_per_s = 2e6 }
vmas = [{ kind = "anon", size = "32MiB" }]
""",
)


@pytest.mark.parametrize("level", ["scan", "all"])
def test_run_sim_serves_metrics_and_writes_the_trace_level(tmp_path: Path, level: str) -> None:
    import json
    import signal
    import subprocess
    import time

    from daemon_fakes import FAST_TUNABLES, write_config

    from kscand.daemon.control import request
    from kscand.daemon.statedir import socket_path

    scenario = tmp_path / "e2e.toml"
    scenario.write_text(E2E_SCENARIO)
    trace = tmp_path / "trace.jsonl"
    config = write_config(
        tmp_path / "kscand.toml",
        f"[tunables]\n{FAST_TUNABLES}scan_sleep_ms = 20\n"
        f'[daemon]\ntrace = "{trace}"\ntrace_level = "{level}"\n'
        '[[process]]\ncomm = "app.1"\nscale = 0\n',
    )
    state_dir = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kscand", "run", "--sim", str(scenario), "--config", str(config),
         "--state-dir", str(state_dir), "--metrics", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while not socket_path(state_dir).exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = request(socket_path(state_dir), {"cmd": "status"})["status"]
        while status["state"] != "running":  # the first answer may come while it starts
            assert time.monotonic() < deadline
            time.sleep(0.05)
            status = request(socket_path(state_dir), {"cmd": "status"})["status"]
        url = status["metrics_url"]
        assert url.startswith("http://127.0.0.1:")
        while scrape(url).get(("nr_kscand_migrated_total", ()), 0) == 0:
            assert time.monotonic() < deadline, "nothing promoted"
            time.sleep(0.1)
        samples = scrape(url)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert f"metrics endpoint {url}" in stderr
    assert "Traceback" not in stderr
    by_comm = {dict(labels)["comm"]: value for (name, labels), value in samples.items()
               if name == "kscand_process_mm_scans_total"}
    assert by_comm["app.0"] > 0 and by_comm["app.1"] == 0  # the scale-0 rule
    assert samples[("kscand_skipped_scans_total", (("reason", "scale0"),))] > 0
    assert samples[("kscand_promoted_bytes_total", (("node", "0"),))] > 0
    assert samples[("kscand_scan_step_duration_seconds_count", ())] > 0

    events = [json.loads(line) for line in trace.read_text().splitlines()]
    names = {e["event"] for e in events}
    assert {"mm_enter", "scan_mm_start", "scan_mm_end"} <= names
    assert ("scan_mm_migrate" in names) is (level == "all")
    enters = [e for e in events if e["event"] == "mm_enter"]
    assert sorted(e["scale"] for e in enters) == [0, 1]
    ends = [e for e in events if e["event"] == "scan_mm_end"]
    assert ends and all(
        set(e) >= {"ts_ns", "mm", "start", "total", "scan_period", "scan_size", "target_node"}
        for e in ends)
    assert all(e["total"] >= 0 and e["scan_size"] > 0 for e in ends)
    migrates = [e for e in events if e["event"] == "scan_mm_migrate"]
    assert all(e["succeeded"] >= 0 and e["failed"] >= 0 and e["node"] == 0 for e in migrates)
    if level == "all":
        assert sum(e["succeeded"] for e in migrates) > 0
    ts = [e["ts_ns"] for e in events]
    assert ts == sorted(ts)


def test_access_source_counters_reach_the_status_and_the_exposition(tmp_path: Path) -> None:
    import dataclasses

    from kscand.daemon.prometheus import daemon_families

    counters = {"snapshots": 7, "pages_stale": 3, "kdamonds_tracking": 2}
    backend = dataclasses.replace(fake_backend(FakeMachine()), access_counters=lambda: counters)
    daemon = Daemon(fast_config(tmp_path / "s"), backend)
    status = daemon._build_snapshot("running")
    assert status["access_source_counters"] == counters
    families = {f.name: f for f in daemon_families(status)}
    assert families["kscand_access_source_snapshots"].type == "counter"
    assert families["kscand_access_source_kdamonds_tracking"].type == "gauge"
    assert families["kscand_access_source_pages_stale"].samples[0].value == 3
