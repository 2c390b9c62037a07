"""The evaluation's workload kinds: GUPS with a hot set, graph-like power law, trace replay."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from simkit import scenario

from kscand.errors import ConfigError
from kscand.sim import tracefile
from kscand.sim import workloads as wl
from kscand.sim.machine import SimMachine
from kscand.sim.scenario import load_scenario


def test_gups_hot_set_is_one_contiguous_run_with_its_share() -> None:
    w = wl.gups(10_000, 1e6, 0.05, 0.9, np.random.default_rng(3))
    hot = np.flatnonzero(w.hot(0.0))
    assert hot.size == 500
    assert np.all(np.diff(hot) == 1)  # adjacent pages
    assert float(w.rates(0.0)[hot].sum()) == pytest.approx(0.9e6, rel=1e-4)
    assert float(w.rates(0.0).sum()) == pytest.approx(1e6, rel=1e-4)


def test_power_law_sorted_ids_concentrate_the_accesses() -> None:
    rng = np.random.default_rng(5)
    mixed = wl.power_law(20_000, 1e6, 1.1, 16, 0.8, False, rng)
    ordered = wl.power_law(20_000, 1e6, 1.1, 16, 0.8, True, rng)
    for w in (mixed, ordered):
        assert float(w.rates(0.0).sum()) == pytest.approx(1e6, rel=1e-3)
    rates = ordered.rates(0.0)
    assert np.all(np.diff(rates) <= 1e-3)  # degree-sorted ids: page popularity decreases
    # Random ids mix hot and cold vertices on every page: it takes many more pages to
    # hold 80 % of the accesses than with degree-sorted ids.
    assert np.count_nonzero(mixed.hot(0.0)) > 2 * np.count_nonzero(ordered.hot(0.0))


TRACE = """time_s,pid,address,count
# window 0: page 0 hot, page 3 warm
0.1,7,0x10000000,90
0.2,7,0x10003000,10
# window 1: page 5 hot
1.5,7,0x10005000,100
0.5,8,0x99000000,1
"""


def test_trace_rates_per_window_integral_and_loop() -> None:
    trace = tracefile.parse_trace(TRACE, "t")
    w = wl.trace_rates(trace, 8, 7, 1.0, 0.85, True, "t")
    assert w.rates(0.5).tolist() == pytest.approx([90, 0, 0, 10, 0, 0, 0, 0])
    assert w.rates(1.5)[5] == pytest.approx(100)
    assert w.hot(0.5).tolist() == [True] + [False] * 7  # 90 of 100 accesses >= 85 %
    assert w.rates(2.5)[0] == pytest.approx(90)  # looped back to window 0
    idx = np.array([0, 5])
    got = w.integral(idx, np.array([0.5, 0.5], dtype=np.float32), 1.5)
    assert got.tolist() == pytest.approx([45, 50])
    assert w.rates_of(idx, 1.2).tolist() == pytest.approx([0, 100])
    assert w.hot_of(idx, 1.2).tolist() == [False, True]
    once = wl.trace_rates(trace, 8, 7, 1.0, 0.85, False, "t")
    assert float(once.rates(5.0).sum()) == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.1,7\n", "expected time_s,pid,address"),
        ("0.1,7,zz\n", "cannot parse"),
        ("-1,7,0x1000\n", "negative"),
        ("# nothing\n", "no records"),
    ],
)
def test_bad_trace_is_one_line_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        tracefile.parse_trace(text, "f.csv")


def _trace_scenario(tmp_path: Path, size: str, pid: int = 7) -> Path:
    (tmp_path / "t.csv").write_text(TRACE)
    path = tmp_path / "s.toml"
    path.write_text(f"""
duration_s = 2
[[nodes]]
nid = 0
capacity = "64MiB"
cpus = true
tier = 4
[[nodes]]
nid = 1
capacity = "64MiB"
tier = 67
[[processes]]
name = "replay"
vmas = [{{ kind = "anon", size = "{size}", workload = {{ kind = "trace", path = "t.csv", trace_pid = {pid} }} }}]
""")
    return path


def test_trace_scenario_resolves_its_path_and_runs(tmp_path: Path) -> None:
    sc = load_scenario(_trace_scenario(tmp_path, "1MiB"))
    machine = SimMachine(sc)
    vma = machine.alive()[0].vmas[0]
    assert isinstance(vma.workload, wl.WindowRates)
    assert float(vma.workload.rates(0.5)[0]) == pytest.approx(90)


def test_trace_scenario_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"vmas\[0\]\.workload\.path: the trace spans 6 pages"):
        load_scenario(_trace_scenario(tmp_path, "16KiB"))
    with pytest.raises(ConfigError, match="no records for pid 9"):
        load_scenario(_trace_scenario(tmp_path, "1MiB", pid=9))


def test_added_kinds_build_through_the_scenario() -> None:
    sc = scenario([
        {"name": "g", "workload": {"kind": "gups", "hot_fraction": 0.1, "rate_per_s": 1e5},
         "vmas": [{"kind": "anon", "size": "8MiB"}]},
        {"name": "p", "workload": {"kind": "power-law", "skew": 1.5, "vertices_per_page": 4,
                                   "sorted_ids": True},
         "vmas": [{"kind": "anon", "size": "8MiB"}]},
    ])
    machine = SimMachine(sc)
    kinds = [type(p.vmas[0].workload).__name__ for p in machine.alive()]
    assert kinds == ["StaticRates", "StaticRates"]
    assert all(float(p.vmas[0].workload.rates(0.0).sum()) > 0 for p in machine.alive())
