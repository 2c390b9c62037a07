"""`kscand sim` on the command line: output, JSON, and one-line errors for bad scenarios."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kscand.cli import main

SMALL = """
name = "small"
description = "a small hot set"
seed = 5
duration_s = 8
sample_interval_s = 0.5

[[nodes]]
nid = 0
capacity = "256MiB"
cpus = true
tier = 4

[[nodes]]
nid = 1
capacity = "1GiB"
cpus = false
tier = 67

[[processes]]
name = "app"
placement = "slow"
workload = { kind = "hotset", hot_fraction = 0.1, hot_share = 0.95, rate_per_s = 1e6 }
vmas = [{ kind = "anon", size = "128MiB" }]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(text)
    return path


def test_sim_prints_summary_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    assert main(["sim", str(write(tmp_path, SMALL)), "--json", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "time to 90% of the oracle" in text and "nr_kscand_migrated" in text
    report = json.loads(out.read_text())
    assert report["seed"] == 5 and report["timeline"] and report["processes"][0]["label"] == "app"
    assert report["counters"]["nr_kscand_migrated"] > 0


def test_sim_json_to_stdout_is_the_file_and_nothing_else(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    path = str(write(tmp_path, SMALL))
    assert main(["sim", path, "--json", str(out), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["sim", path, "--json", "-", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)  # no table around it
    in_file = json.loads(out.read_text())
    for report in (printed, in_file):
        report.pop("wall_s", None)
        report.pop("peak_rss_mib", None)
    assert printed == in_file


def test_seed_option_overrides(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    path = str(write(tmp_path, SMALL))
    assert main(["sim", path, "--seed", "9", "--json", str(a), "--quiet"]) == 0
    assert main(["sim", path, "--seed", "9", "--json", str(b), "--quiet"]) == 0
    ja, jb = json.loads(a.read_text()), json.loads(b.read_text())
    for j in (ja, jb):
        j.pop("wall_s"), j.pop("peak_rss_mib")
    assert ja == jb and ja["seed"] == 9


BAD = [
    (SMALL.replace('seed = 5', 'seed = 5\ncolour = "red"'), "scenario.colour: unknown key"),
    (SMALL.replace('capacity = "256MiB"', 'capacity = "lots"'), "nodes[0].capacity: cannot parse"),
    (SMALL.replace('size = "128MiB"', 'size = 12'), "processes[0].vmas[0].size: must be a positive"),
    (SMALL.replace('size = "128MiB"', 'size = "8GiB"'), "do not fit"),
    (SMALL.replace('kind = "anon"', 'kind = "anon-huge"'), "processes[0].vmas[0].kind:"),
    (SMALL.replace('hot_fraction = 0.1', 'hot_fraction = "x"'),
     "processes[0].workload.hot_fraction: expected a number"),
    (SMALL.replace('duration_s = 8', 'duration_s = -1'), "scenario.duration_s:"),
    (SMALL + '\n[tunables]\nscan_sleep_ms = "soon"\n', "tunables.scan_sleep_ms: expected"),
    (SMALL + '\n[tunables]\nscan_speed = 3\n', "tunables.scan_speed: unknown key"),
    (SMALL.replace('[[nodes]]\nnid = 0', '[[nodes]]\nnid = 1', 1), "nodes: duplicate nid"),
    ("this is = not toml [", "not valid TOML"),
    (SMALL.replace('placement = "slow"', 'placement = "node:7"'), "processes[0].placement"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m for _, m in BAD])
def test_bad_scenario_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    assert main(["sim", str(write(tmp_path, text)), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1
    assert "Traceback" not in err


def test_missing_file_and_bad_args(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", str(tmp_path / "nope.toml")]) == 2
    assert "No such file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["sim", "--seed", "x", "a.toml"])
    assert exc.value.code == 2
    assert main(["sim", str(write(tmp_path, SMALL)), "--seed", "-3"]) == 2


def test_python_dash_m_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "kscand", "sim", str(write(tmp_path, SMALL)), "--quiet"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Processes" in proc.stdout


ONE_NODE = SMALL.split("[[nodes]]\nnid = 1")[0].replace('"slow"', '"fast"') + """
[[processes]]
name = "other"
placement = "fast"
workload = { kind = "uniform", rate_per_s = 1e5 }
vmas = [{ kind = "anon", size = "16MiB" }]
"""


def test_sim_says_when_there_is_nothing_to_promote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = write(tmp_path, ONE_NODE)
    assert "nid = 1" not in one.read_text()
    assert main(["sim", str(one), "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == ("note: one NUMA node (node 0): nothing to promote (every share below "
                        "is 100 % by construction, not kscand's doing)")
    assert any("time to 90% of the oracle: n/a (nothing to promote)" in line for line in lines)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nothing_to_promote"] == "one NUMA node (node 0): nothing to promote"
    assert report["final"]["top_share"] == 1.0
    two_top = write(tmp_path, SMALL.replace("tier = 67", "tier = 4"))
    assert main(["sim", str(two_top), "--quiet"]) == 0
    assert ("note: no slow-tier node: every node (0,1) is top tier, nothing to promote"
            in capsys.readouterr().out)
    assert main(["sim", str(write(tmp_path, SMALL)), "--quiet"]) == 0
    assert "nothing to promote" not in capsys.readouterr().out


MANY = SMALL.replace("duration_s = 8", "duration_s = 2").replace(
    'name = "app"', 'name = "svc"\ncount = 5').replace('size = "128MiB"', 'size = "8MiB"') + """
[[processes]]
name = "big"
placement = "slow"
workload = { kind = "uniform", rate_per_s = 1e7 }
vmas = [{ kind = "anon", size = "16MiB" }]
"""


def _table_rows(out: str) -> list[str]:
    """The process labels of the per-process table's rows, in printed order."""
    return re.findall(r"((?:svc\.\d|big)\[\d+\])", out)


def test_top_limits_the_process_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(write(tmp_path, MANY))
    out_json = tmp_path / "r.json"
    assert main(["sim", path, "--quiet", "--top", "2", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert len(rows) == 2 and rows[0].startswith("big[")  # the most accesses/s first
    assert "4 of 6 processes not shown (the 2 with the most accesses/s are; --top 0 for all)" in out
    report = json.loads(out_json.read_text())
    assert len(report["processes"]) == 6  # the JSON keeps every process
    rates = {p["label"]: p["rate_per_s"] for p in report["processes"]}
    assert rates["big"] == pytest.approx(1e7) and rates["svc.0"] == pytest.approx(1e6)

    assert main(["sim", path, "--quiet", "--top", "0"]) == 0
    out = capsys.readouterr().out
    assert len(_table_rows(out)) == 6 and "not shown" not in out
    assert main(["sim", path, "--quiet"]) == 0  # default 20 > 6: all, no line
    out = capsys.readouterr().out
    assert len(_table_rows(out)) == 6 and "not shown" not in out


def test_top_must_not_be_negative(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", str(write(tmp_path, MANY)), "--quiet", "--top", "-1"]) == 2
    assert "--top: must not be negative, got -1" in capsys.readouterr().err
