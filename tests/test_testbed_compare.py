"""testbed/compare.py without a guest: rows from result files, the table, the guest
commands, the report files and the plot."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from testbed import compare
from testbed.compare import Row, guest_commands, markdown_table, row_from_result, write_report


def result(mechanism: str, hot_node0: list[int], cold_node0: int = 0) -> dict[str, Any]:
    """A compare result.json: 100 hot and 900 cold pages, one placement line per second."""
    timeline = [
        {"t_s": float(t), "hot": {"node0": h, "node1": 100 - h, "other": 0},
         "cold": {"node0": cold_node0 if t == len(hot_node0) - 1 else 0,
                  "node1": 900 - (cold_node0 if t == len(hot_node0) - 1 else 0), "other": 0}}
        for t, h in enumerate(hot_node0)
    ]
    return {
        "mechanism": mechanism, "errors": [], "timeline": timeline,
        "cpu": {"mechanism_s": 1.234, "workload_user_s": 9.0, "workload_sys_s": 0.5},
        "vmstat_delta": {"pgmigrate_success": 118, "numa_hint_faults": 7},
    }  # fmt: skip


def test_row_times_residency_and_costs() -> None:
    row = row_from_result(result("kscand-page_idle", [0, 10, 60, 95, 100], cold_node0=18))
    assert row == Row(
        mechanism="kscand-page_idle", t50_s=2.0, t90_s=3.0, hot_on_top_end_pct=100.0,
        pages_migrated=118, cold_promoted=18, cold_promoted_pct=2.0, mechanism_cpu_s=1.23,
        workload_sys_s=0.5, hint_faults=7,
    )  # fmt: skip


def test_row_of_a_mechanism_that_never_gets_there() -> None:
    row = row_from_result(result("none", [0, 0, 0]))
    assert row.t50_s is None and row.t90_s is None and row.hot_on_top_end_pct == 0.0
    empty = row_from_result({"mechanism": "damos", "errors": ["RuntimeError: x"]})
    assert empty.t90_s is None and empty.errors == ("RuntimeError: x",)


def test_markdown_table_has_a_row_per_mechanism() -> None:
    rows = [row_from_result(result("none", [0, 0])),
            row_from_result(result("numab", [0, 50, 90]))]
    table = markdown_table(rows).splitlines()
    assert len(table) == 4
    assert table[0].count("|") == len(compare.COLUMNS) + 1
    assert "| none | never | never | 0 % |" in table[2]
    assert "| numab | 1 s | 2 s | 90 % |" in table[3]


def test_guest_commands_name_each_mechanism_and_its_output() -> None:
    commands = guest_commands(["none", "kscand-damon"], 60, "chunks:4", 256, fast=False)
    assert len(commands) == 2
    argv = shlex.split(commands[1])
    assert argv[:4] == ["python", "-m", "testbed.inguest", "compare"]
    assert argv[argv.index("--mechanism") + 1] == "kscand-damon"
    assert argv[-2:] == ["--out", "$KSCAND_RWDIR/kscand-damon"]
    assert "--fast" not in argv
    assert "--fast" in guest_commands(["none"], 60, "chunks:4", 256, fast=True)[0]
    assert "--flush-tlb" in guest_commands(["none"], 60, "chunks:4", 256, fast=False)[0]
    unflushed = guest_commands(["none"], 60, "chunks:4", 256, fast=False, flush_tlb=False)
    assert "--flush-tlb" not in unflushed[0]


def test_report_files(tmp_path: Path) -> None:
    rows = [row_from_result(result("none", [0, 0]))]
    meta = {"date": "2026-11-26", "kernel": "6.12.95-kscand-idle", "duration_s": 90.0,
            "layout": "chunks:4", "size_mib": 256, "fast": False, "command": "x"}
    text = write_report(tmp_path, rows, meta, "matplotlib is not installed")
    assert "the default tunables" in text and "No plot: matplotlib" in text
    assert (tmp_path / "report.md").read_text() == text
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rows"][0]["mechanism"] == "none"


def test_settle_time_is_the_last_change() -> None:
    assert compare.settle_time(result("numab", [0, 50, 90, 90, 90])["timeline"]) == 2.0
    assert compare.settle_time(result("none", [0, 0])["timeline"]) == 0.0
    assert compare.settle_time([]) == 0.0


def test_plot_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plot extra is optional")
    path = tmp_path / "residency.png"
    note = compare.plot_residency([result("numab", [0, 50, 90]), result("none", [0, 0, 0])],
                                  path, "t")
    assert note is None
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_are_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert compare.main(["--mechanisms", "autonuma"]) == 2
    assert compare.main(["--duration-s", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("vm-compare: ") for line in err)
