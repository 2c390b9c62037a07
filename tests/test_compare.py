"""`kscand compare`: run planning, sweeps, the parallel runner, the report and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kscand.cli import main
from kscand.core.tunables import Tunables
from kscand.errors import ConfigError
from kscand.evaluation.compare import compare
from kscand.evaluation.policies import RunSpec, apply_overrides, parse_sweep, plan_runs
from kscand.sim.scenario import load_scenario

SMALL = """
name = "small"
description = "a small hot set"
seed = 5
duration_s = 3
sample_interval_s = 0.5

[tunables]
scan_delay_ms = 0
mm_scan_period_ms = 600

[[nodes]]
nid = 0
capacity = "256MiB"
cpus = true
tier = 4
latency_ns = 80

[[nodes]]
nid = 1
capacity = "1GiB"
tier = 67
latency_ns = 300

[[processes]]
name = "app"
placement = "slow"
workload = { kind = "hotset", hot_fraction = 0.1, hot_share = 0.95, rate_per_s = 2e6 }
vmas = [{ kind = "anon", size = "64MiB" }]
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def test_plan_runs_expands_sweeps_per_policy() -> None:
    sweeps = [parse_sweep("scan_size=64MiB,1GiB"), parse_sweep("numab.hot_threshold_ms=100,2000")]
    runs = plan_runs(["none", "kscand", "numab", "oracle"], sweeps)
    assert [r.label for r in runs] == [
        "none", "kscand scan_size=64MiB", "kscand scan_size=1GiB",
        "numab hot_threshold_ms=100", "numab hot_threshold_ms=2000", "oracle",
    ]


def test_fixed_scan_size_and_period_set_their_clamps() -> None:
    t = apply_overrides("kscand", (("scan_size", "64MiB"), ("scan_period", "900")), Tunables())
    assert t.scan_size_bytes == t.scan_size_min_bytes == t.scan_size_max_bytes == 64 << 20
    assert t.mm_scan_period_ms == t.scan_period_min_ms == t.scan_period_max_ms == 900
    assert apply_overrides("kscand", (("scan_sleep_ms", "40"),), Tunables()).scan_sleep_ms == 40
    assert apply_overrides("kscand", (("scan_size", "default"),), Tunables()) == Tunables()
    numab = apply_overrides("numab", (("numab.scan_size_mb", "512"),), Tunables())
    assert numab.scan_size_mb == 512
    assert apply_overrides("damon", (("damon.young_filter", "false"),), Tunables()).young_filter \
        is False


@pytest.mark.parametrize(
    ("sweep", "message"),
    [
        ("scan_size", "expected NAME=V1,V2"),
        ("nosuch=1", "not a kscand tunable"),
        ("numab.nosuch=1", "unknown parameter"),
        ("foo.bar=1", "unknown policy"),
        ("numab.hot_threshold_ms=soon", "expected a int"),
        ("numab.scan_size_mb=0", "scan_size_mb: must be positive"),
        ("damon-hot.aggr_us=10", "aggr_us: must be at least sample_us"),
        ("damon.min_sample_us=20000000", "min_sample_us: must not exceed max_sample_us"),
        ("scan_size=1KiB", "scan_size"),
    ],
)
def test_bad_sweeps_are_one_line(sweep: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_sweep(sweep)


def test_sweep_for_a_policy_not_run_and_unknown_policies() -> None:
    with pytest.raises(ConfigError, match="policy numab is not in --policies"):
        plan_runs(["kscand"], [parse_sweep("numab.hot_threshold_ms=1")])
    with pytest.raises(ConfigError, match="unknown policy 'autonuma'"):
        plan_runs(["kscand", "autonuma"], [])


def test_compare_runs_every_policy_on_the_same_machine(small: Path) -> None:
    sc = load_scenario(small)
    seen: dict[int, float] = {}
    result = compare(sc, plan_runs(["none", "kscand", "numab", "oracle"], []), [], jobs=1,
                     progress=lambda i, f: seen.__setitem__(i, f))
    labels = [r.label for r in result.runs]
    # Both bounds always close the table: the realizable one, then the oracle (static
    # rates here, so not clairvoyant, and the two agree).
    assert labels == ["none", "kscand", "numab", "static best (hindsight)", "oracle"]
    none, kscand, numab, best, oracle = result.runs
    assert best.aw_top_share == pytest.approx(oracle.aw_top_share)
    assert kscand.of_static_best == pytest.approx(kscand.aw_top_share / best.aw_top_share)
    assert none.min_traffic is not None and none.min_traffic["promote_pages"] > 0
    assert kscand.accesses_per_promotion is not None and kscand.accesses_per_promotion > 0
    assert seen == {0: 1.0, 1: 1.0, 2: 1.0}
    # Same scenario and seed: the same oracle for every policy, which none reaches.
    assert none.final_oracle_share == kscand.final_oracle_share == oracle.final_top_share
    assert none.final_top_share == 0.0 and none.ledger is not None
    assert none.ledger["promoted_pages"] == 0
    assert kscand.final_top_share > 0.5 and kscand.t90_s is not None
    assert kscand.ledger is not None and kscand.ledger["promoted_pages"] > 0
    assert numab.cpu is not None and numab.cpu["app_ns"] > 0 and numab.payer == "app"
    assert oracle.t50_s == 0.0 and oracle.cpu is None
    assert len(kscand.timeline) == 7 and kscand.timeline[-1]["cpu_ns"] > 0


def test_parallel_runs_match_the_serial_ones(small: Path) -> None:
    sc = load_scenario(small)
    runs = [RunSpec("kscand"), RunSpec("damon")]
    serial = compare(sc, runs, [], jobs=1)
    parallel = compare(sc, runs, [], jobs=2)
    for a, b in zip(serial.runs, parallel.runs, strict=True):
        assert a.label == b.label
        assert a.timeline == b.timeline and a.ledger == b.ledger and a.counters == b.counters


def test_cli_prints_a_table_and_writes_the_report(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rep"
    raw = tmp_path / "c.json"
    code = main(["compare", str(small), "--policies", "none,kscand,oracle", "--jobs", "1",
                 "--sweep", "scan_sleep_ms=20,100", "--quiet", "--report", str(out),
                 "--json", str(raw), "--duration", "2"])
    assert code == 0
    text = capsys.readouterr().out
    assert "kscand scan_sleep_ms=100" in text and "oracle" in text
    report = json.loads((out / "report.json").read_text())
    assert [r["label"] for r in report["runs"]] == [
        "none", "kscand scan_sleep_ms=20", "kscand scan_sleep_ms=100", "static best (hindsight)",
        "oracle"]
    assert "static best (hindsight)" in text and "% of static" in text
    assert report["duration_s"] == 2 and report["cost_model_ns"]["hint_fault_ns"] > 0
    assert json.loads(raw.read_text())["seed"] == 5
    html = (out / "report.html").read_text()
    assert "<caption>What the columns hold</caption>" in html and "traffic / min" in html
    for png in ("share.png", "traffic.png", "cpu.png", "sweep.png"):
        assert (out / png).stat().st_size > 1000 and png in html


def test_cli_json_to_stdout_is_the_comparison_alone(
    small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", str(small), "--policies", "none,kscand", "--jobs", "1",
                 "--quiet", "--json", "-", "--duration", "2"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)  # no table around it
    assert report["seed"] == 5 and [r["label"] for r in report["runs"]][:2] == ["none", "kscand"]


def test_cli_report_without_plots(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    assert main(["compare", str(small), "--policies", "none", "--quiet", "--report", str(out),
                 "--no-plots", "--duration", "1"]) == 0
    assert (out / "report.html").exists() and not list(out.glob("*.png"))
    # The oracle bounds the table's "% of oracle" column: its row is there unasked.
    runs = json.loads((out / "report.json").read_text())["runs"]
    assert [r["label"] for r in runs] == ["none", "static best (hindsight)", "oracle"]


def test_missing_matplotlib_is_one_line(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code = main(["compare", str(small), "--policies", "none", "--quiet", "--report",
                 str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "pip install 'kscand[plot]'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policies", "kscand,autonuma"], "unknown policy 'autonuma'"),
        (["--sweep", "numab.nosuch=1"], "unknown parameter"),
        (["--jobs", "0"], "--jobs: must be at least 1"),
        (["--seed", "-1"], "--seed: must not be negative"),
        (["--duration", "0"], "--duration"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    small: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(small), "--quiet", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_missing_scenario_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path / "nope.toml"), "--quiet"]) == 2
    assert "nope.toml" in capsys.readouterr().err
