"""Output that survives pipes and 80 columns (issue 15): every number whole in the tables
of status and tune at 80 columns, and `--json` on status, tune and scale."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from daemon_fakes import DaemonThread
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from kscand.cli import main as cli_main
from kscand.cli import status as status_cli
from kscand.cli import tune as tune_cli
from kscand.cli.tables import TEXT_MIN_WIDTH, pages_size, print_table, size
from kscand.daemon.control import request
from kscand.daemon.statedir import socket_path

BIG = 123_456_789_012  # a counter that needs 15 columns with its commas


def rendered(draw: Any, width: int = 80) -> str:
    """What draw(console) prints on a console of `width` columns that is not a terminal."""
    out = io.StringIO()
    draw(Console(file=out, width=width, color_system=None))
    return out.getvalue()


def widest_line(out: str) -> int:
    return max(cell_len(line.rstrip()) for line in out.splitlines())


def table_cells(out: str) -> list[str]:
    """Every table cell's text, one entry per cell line."""
    return [cell.strip() for line in out.splitlines() if line.startswith("│")
            for cell in line.split("│")[1:-1]]


def big_status(state_dir: Path) -> dict[str, Any]:
    """The fake daemon's status with counters too wide for 80 columns in one table."""
    status = dict(request(socket_path(state_dir), {"cmd": "status"})["status"])
    status["totals"] = {name: BIG + i for i, name in enumerate(status["totals"])}
    for proc in status["processes"]:
        names = {*proc["counters"], *(n for _h, n in status_cli._PROC_COUNTS),
                 *(n for _h, n in status_cli._PROC_SIZES)}
        proc["counters"] = {name: 7 ** (i + 12) for i, name in enumerate(sorted(names))}
        proc["queued_folios"] = 98_765
        proc["resume_vaddr"] = 0x7F00_0000_1000
        proc["comm"] = "[bold]x[/bold]"  # from outside: printed as it is, not as markup
    return status


# -- 80 columns ---------------------------------------------------------------------


def test_status_at_80_columns_keeps_every_number_whole(
    running: DaemonThread, tmp_path: Path
) -> None:
    status = big_status(tmp_path / "s")
    out = rendered(lambda c: status_cli.render(c, status, "socket", 0))
    assert widest_line(out) <= 80
    assert "…" not in out
    cells = table_cells(out)
    for name, value in status["totals"].items():
        assert f"{value:,}" in cells, name
    for proc in status["processes"]:
        counters = proc["counters"]
        assert f"{counters['nr_kscand_mm_scans']:,}" in cells
        for _header, name in status_cli._PROC_SIZES:
            assert pages_size(counters[name]) in cells, name
        assert f"{proc['resume_vaddr']:#x}" in cells
        assert "98,765" in cells
        assert "[bold]x[/bold]" in cells
    for name, value in status["tunables"].items():
        assert name in cells
        assert status_cli.tunable_value(name, value) in cells, name
    # The processes' columns were split over parts, each repeating pid and command.
    assert "Processes (2 of 2) (continued)" in out
    assert cells.count("[bold]x[/bold]") >= 4


def test_status_tunables_show_sizes(running: DaemonThread, tmp_path: Path) -> None:
    status = big_status(tmp_path / "s")
    status["tunables"]["scan_size_bytes"] = 256 << 20
    out = rendered(lambda c: status_cli.render(c, status, "socket", 0))
    assert "256 MiB" in table_cells(out)
    assert str(256 << 20) not in out


def test_tune_at_80_columns_keeps_numbers_and_meanings(
    running: DaemonThread, tmp_path: Path
) -> None:
    got = request(socket_path(tmp_path / "s"), {"cmd": "get"})
    values, fields = got["tunables"], got["fields"]
    out = rendered(lambda c: tune_cli.print_list(c, values, fields))
    assert widest_line(out) <= 80
    assert "…" not in out
    cells = table_cells(out)
    words = " ".join(out.split())
    for f in fields:
        unit, value = f["unit"], values[f["name"]]
        assert f["name"] in cells
        assert tune_cli.shown(unit, value) in cells, f["name"]
        if f["min"] is not None:
            span = f"{tune_cli.shown(unit, f['min'])} .. {tune_cli.shown(unit, f['max'])}"
            assert span in cells, f["name"]
        assert " ".join(f"{f['name']}: {f['doc']}".split()) in words  # no meaning vanishes
    assert "256 MiB" in cells or "1 GiB" in cells  # the scan sizes, not raw bytes
    # Wide enough, the meanings stay in the table.
    wide = rendered(lambda c: tune_cli.print_list(c, values, fields), width=250)
    assert "meaning" in wide and widest_line(wide) <= 250


def test_a_table_too_wide_for_its_numbers_is_split_not_cut() -> None:
    table = Table(title="wide")
    table.add_column("name", no_wrap=True)
    for i in range(9):
        table.add_column(f"col {i}", justify="right")
    table.add_row("row", *(f"{BIG + i:,}" for i in range(9)))
    out = rendered(lambda c: print_table(c, table))
    assert widest_line(out) <= 80
    cells = table_cells(out)
    assert all(f"{BIG + i:,}" in cells for i in range(9))
    assert cells.count("row") >= 2 and "wide (continued)" in out


def test_a_text_column_folds_without_ellipsis() -> None:
    table = Table()
    table.add_column("n", justify="right")
    table.add_column("text")
    table.add_row(f"{BIG:,}", "word " * 40)
    out = rendered(lambda c: print_table(c, table), width=40)
    assert widest_line(out) <= 40 and "…" not in out and f"{BIG:,}" in table_cells(out)
    assert TEXT_MIN_WIDTH <= 40


def test_status_and_tune_through_a_pipe_at_80_columns(running: DaemonThread,
                                                       tmp_path: Path) -> None:
    """rich renders at $COLUMNS, else 80, when stdout is not a terminal."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    for columns, argv in ((None, "status"), ("80", "status"), (None, "tune"), ("80", "tune")):
        done = subprocess.run(
            [sys.executable, "-m", "kscand", argv, "--state-dir", str(tmp_path / "s")],
            capture_output=True, text=True, timeout=60, check=True,
            env=env if columns is None else {**env, "COLUMNS": columns},
        )
        assert widest_line(done.stdout) <= 80, (columns, argv)
        assert "…" not in done.stdout
        assert ("Processes (2 of 2)" if argv == "status" else "scan_sleep_ms") in done.stdout


# -- --json -------------------------------------------------------------------------


def test_tune_json_lists_and_sets(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "s")]
    assert cli_main(["tune", *state, "--json", "-"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["set"] == {}
    assert shown["tunables"]["scan_size_bytes"] == 4 << 30  # bytes as an integer
    assert {"name", "unit", "min", "max", "doc"} <= set(shown["fields"][0])
    assert {f["name"] for f in shown["fields"]} == set(shown["tunables"])
    assert cli_main(["tune", *state, "--json", "-", "scan_sleep_ms=12",
                     "scan_size_bytes=256MiB"]) == 0
    changed = json.loads(capsys.readouterr().out)
    assert changed["set"] == {
        "scan_sleep_ms": {"value": 12, "was": 10, "changed": True},
        "scan_size_bytes": {"value": 256 << 20, "was": 4 << 30, "changed": True},
    }
    assert changed["tunables"]["scan_sleep_ms"] == 12
    out_file = tmp_path / "tune.json"
    assert cli_main(["tune", *state, "--json", str(out_file), "scan_sleep_ms=12"]) == 0
    assert capsys.readouterr().out == "scan_sleep_ms = 12\n"  # the lines still print
    assert json.loads(out_file.read_text())["set"]["scan_sleep_ms"]["changed"] is False


def test_tune_json_errors_stay_one_line(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "s")]
    assert cli_main(["tune", *state, "--json", "-", "nope=1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("kscand tune: nope: unknown tunable")
    assert err.count("\n") == 1
    assert cli_main(["tune", "--state-dir", str(tmp_path), "--json", "-"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("kscand tune: no kscand daemon is running")
    assert cli_main(["tune", *state, "--json", str(tmp_path / "no" / "dir.json")]) == 2
    assert capsys.readouterr().err.startswith("kscand tune: --json: cannot write")


def test_scale_json(running: DaemonThread, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    state = ["--state-dir", str(tmp_path / "s")]
    assert cli_main(["scale", *state, "--json", "-", "101", "0"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "processes": [{"pid": 101, "start_time": 1001, "scale": 0}]
    }
    assert cli_main(["scale", *state, "--json", "-", "7", "1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == "kscand scale: pid 7 is not a process kscand scans\n"


def test_status_json_to_stdout_and_to_a_file(
    running: DaemonThread, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = ["--state-dir", str(tmp_path / "s")]
    assert cli_main(["status", *state, "--json", "-"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["totals"]["nr_kscand_migrated"] == 64
    proc = status["processes"][0]
    for _header, name in status_cli._PROC_COUNTS + status_cli._PROC_SIZES:
        assert isinstance(proc["counters"].get(name, 0), int)
    out_file = tmp_path / "status.json"
    assert cli_main(["status", *state, "--json", str(out_file)]) == 0
    assert "Processes (2 of 2)" in capsys.readouterr().out  # the tables too
    assert json.loads(out_file.read_text())["totals"]["nr_kscand_migrated"] == 64


def test_sizes_use_the_units_formatter() -> None:
    assert size(256 << 20) == "256 MiB" and size(3 << 29) == "1.5 GiB"
    assert pages_size(262144) == "1 GiB"
    assert re.fullmatch(r"\d+ B", size(512))
