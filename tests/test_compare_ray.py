"""`kscand compare --ray`: the runs on a local Ray instance give the local runs' results;
a missing extra, an unreachable head, a failing run and a dead worker are one line."""

from __future__ import annotations

import dataclasses
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kscand.cli import main
from kscand.errors import ClusterError, ConfigError
from kscand.evaluation.compare import Comparison, RunResult, RunTask, compare
from kscand.evaluation.costs import DEFAULT_COSTS
from kscand.evaluation.policies import RunSpec
from kscand.sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"wall_s", "peak_rss_mib"}  # measured, not computed: differ run to run
SMALL = """
name = "small-two"
description = "two processes, a hot set and a zipf"
seed = 5
duration_s = 3
sample_interval_s = 0.5

[tunables]
scan_delay_ms = 0
mm_scan_period_ms = 600

[[nodes]]
nid = 0
capacity = "64MiB"
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

[[processes]]
name = "kv"
placement = "slow"
workload = { kind = "zipf", skew = 0.9, hot_share = 0.8, rate_per_s = 1e6 }
vmas = [{ kind = "anon", size = "32MiB" }]
"""


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """A small local Ray (2 CPUs, 128 MiB object store, no dashboard), shut down after."""
    ray = pytest.importorskip("ray")
    # The workers import kscand as this process does (PYTHONPATH=src:. in a checkout).
    before = os.environ.get("PYTHONPATH")
    paths = [str(ROOT / "src"), str(ROOT), *(before or "").split(os.pathsep)]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    ray.init(num_cpus=2, object_store_memory=128 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    if before is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = before


def _without_timing(comparison: Comparison) -> dict[str, Any]:
    out = comparison.to_json()
    del out["wall_s"]
    out["runs"] = [{k: v for k, v in run.items() if k not in TIMING} for run in out["runs"]]
    return out


def test_ray_runs_equal_the_local_runs(ray_local: Any, small: Path) -> None:
    from kscand.evaluation.raypool import ray_pool

    sc = load_scenario(small)
    runs = [RunSpec("kscand"), RunSpec("damon"), RunSpec("none")]
    seen: list[tuple[int, float]] = []
    local = compare(sc, runs, [], seed=11, jobs=1)
    remote = compare(sc, runs, [], seed=11, pool=ray_pool(None),
                     progress=lambda i, f: seen.append((i, f)))
    assert _without_timing(remote) == _without_timing(local)
    assert sorted(seen) == [(0, 1.0), (1, 1.0), (2, 1.0)]
    other = compare(sc, runs, [], seed=12, pool=ray_pool(None))
    assert _without_timing(other) != _without_timing(local)  # the seed reaches the workers


def test_a_trace_scenario_runs_on_ray(ray_local: Any) -> None:
    from kscand.evaluation.raypool import ray_pool

    sc = load_scenario(ROOT / "evaluation" / "scenarios" / "trace-phases.toml")
    sc = dataclasses.replace(sc, duration_s=12.0)  # into its second phase
    runs = [RunSpec("kscand"), RunSpec("none")]
    local = compare(sc, runs, [], jobs=1)
    remote = compare(sc, runs, [], pool=ray_pool(None))
    assert _without_timing(remote) == _without_timing(local)
    assert remote.runs[0].time_varying  # the trace's phases replayed on the workers


def test_cli_ray_prints_the_comparison(
    ray_local: Any, small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    code = main(["compare", str(small), "--policies", "none,kscand", "--ray", "--quiet",
                 "--json", "-", "--duration", "2"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in report["runs"]][:2] == ["none", "kscand"]


def _tasks(small: Path) -> list[RunTask]:
    sc = load_scenario(small)
    return [RunTask(0, RunSpec("kscand"), sc, 1, DEFAULT_COSTS)]


def test_a_failing_run_is_one_line_naming_it(ray_local: Any, small: Path) -> None:
    from kscand.evaluation.raypool import run_on_ray

    # A lambda: pickled by value (the workers cannot import this test module).
    with pytest.raises(ClusterError, match=r"run 'kscand' failed: ValueError: invalid literal"):
        run_on_ray(ray_local, _tasks(small), None, runner=lambda t: RunResult.from_json({"label": int(f"x\n{t.index}")}))


def test_a_dead_worker_is_one_line_naming_the_run(ray_local: Any, small: Path) -> None:
    from kscand.evaluation.raypool import run_on_ray

    start = time.monotonic()
    with pytest.raises(ClusterError, match=r"run 'kscand' lost its worker"):
        run_on_ray(ray_local, _tasks(small), None, runner=lambda t: os._exit(3))
    assert time.monotonic() - start < 30


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: a connect is refused


def test_an_unreachable_head_is_one_line_in_bounded_time(
    small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("ray")
    start = time.monotonic()
    code = main(["compare", str(small), "--quiet", "--ray", f"127.0.0.1:{_closed_port()}"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot reach the Ray head" in err
    assert time.monotonic() - start < 15


def test_a_head_that_never_answers_times_out(small: Path) -> None:
    from kscand.evaluation.raypool import check_reachable

    with socket.socket() as quiet:  # listens (the kernel accepts) but nobody answers
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(1)
        check_reachable(f"127.0.0.1:{quiet.getsockname()[1]}", timeout_s=1.0)
    with pytest.raises(ConfigError, match="bad address"):
        check_reachable("head:http")


def test_without_the_extra_ray_is_one_line_before_any_run(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    start = time.monotonic()
    code = main(["compare", str(small), "--quiet", "--ray"])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.count("\n") == 1
    assert "pip install 'kscand[ray]'" in captured.err and captured.out == ""
    assert time.monotonic() - start < 5


def test_compare_help_imports_no_ray() -> None:
    import subprocess

    probe = ("import sys, kscand.cli\ntry:\n    kscand.cli.main(['compare', '--help'])\n"
             "except SystemExit:\n    pass\nsys.stderr.write(str('ray' in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stderr == "False" and "--ray" in done.stdout
