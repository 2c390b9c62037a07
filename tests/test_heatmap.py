"""kscand.inspect.heatmap's binning (exact counts on a tiny trace) and `kscand report heatmap`
(terminal rendering in 80 columns, the PNG, one-line errors)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from rich.cells import cell_len

from kscand.cli import main
from kscand.cli.report import render_lines, shade_levels
from kscand.inspect.heatmap import heatmap_of, segments_of, trace_heatmaps, trace_pids
from kscand.sim.tracefile import parse_trace

ROOT = Path(__file__).resolve().parents[1]
TRACES = sorted((ROOT / "evaluation" / "traces").glob("*.csv"))

# pid 7: pages 0x10-0x13 and, 1 GiB away, 0x40000-0x40003; times 0, 1, 2, 3 s.
# pid 9: one page, twice.
TINY = """time_s,pid,address,count
0,7,0x10000,1
0,7,0x11000,2
1,7,0x12000,1
1,7,0x40000000,5
2,7,0x40001000,1
3,7,0x13000,4
3,7,0x40003000,1
0.5,9,0x5000,3
2.5,9,0x5000,1
"""


def test_segments_compress_the_gaps() -> None:
    segs = segments_of(np.array([0x40003, 0x10, 0x13, 0x40000, 0x10], dtype=np.int64),
                       gap_pages=512)
    assert segs.start.tolist() == [0x10, 0x40000] and segs.end.tolist() == [0x14, 0x40004]
    assert segs.offset.tolist() == [0, 4] and segs.nr_pages == 8
    pages = np.array([0x10, 0x13, 0x40000, 0x40003], dtype=np.int64)
    assert segs.positions(pages).tolist() == [0, 3, 4, 7]
    assert segs.page_at(np.array([0, 3, 4, 7], dtype=np.int64)).tolist() == pages.tolist()


def test_exact_bin_counts_on_a_tiny_trace() -> None:
    trace = parse_trace(TINY, "tiny")
    keep = trace.pid == 7
    heat = heatmap_of(trace.t_s[keep], trace.page[keep], trace.count[keep], 7,
                      address_bins=4, time_bins=4)
    # 8 pages on the axis, 2 per address bin; 4 distinct times over [0, 3]: 4 time bins
    assert heat.grid.tolist() == [
        [3, 0, 0, 0],  # pages 0x10-0x11: 1 + 2 at 0 s
        [0, 1, 0, 4],  # 0x12-0x13
        [0, 5, 1, 0],  # 0x40000-0x40001
        [0, 0, 0, 1],  # 0x40002-0x40003
    ]
    assert heat.total == 15 and heat.nr_records == 7
    assert heat.bin_addresses().tolist() == [0x10000, 0x12000, 0x40000000, 0x40002000]
    assert heat.bin_gaps().tolist() == [False, False, True, False]
    assert heat.time_edges_s().tolist() == [0, 0.75, 1.5, 2.25, 3]
    # fewer rows than asked: at most one per page; time bins: at most the distinct times
    coarse = heatmap_of(trace.t_s[keep], trace.page[keep], trace.count[keep], 7,
                        address_bins=100, time_bins=2)
    assert coarse.grid.shape == (8, 2) and coarse.grid.sum() == 15
    assert coarse.grid[:, 0].sum() == 3 + 1 + 5 and coarse.grid[:, 1].sum() == 1 + 4 + 1


def test_processes_by_accesses() -> None:
    trace = parse_trace(TINY, "tiny")
    pids, totals = trace_pids(trace)
    assert pids.tolist() == [7, 9] and totals.tolist() == [15, 4]
    maps = trace_heatmaps(trace, None, address_bins=4, time_bins=8)
    assert [m.pid for m in maps] == [7, 9]
    single = maps[1]
    assert single.grid.shape == (1, 2) and single.grid.tolist() == [[3, 1]]
    assert trace_heatmaps(trace, 9, address_bins=4, time_bins=8)[0].grid.tolist() == [[3, 1]]
    assert trace_heatmaps(trace, 5, address_bins=4, time_bins=8) == []


def test_shades_on_a_log_scale() -> None:
    grid = np.array([[0, 1, 10], [100, 1000, 999]], dtype=np.float64)
    assert shade_levels(grid).tolist() == [[0, 1, 2], [3, 4, 4]]
    assert shade_levels(np.full((1, 2), 5.0)).tolist() == [[4, 4]]


def test_rendering_marks_gaps_and_keeps_high_addresses_on_top() -> None:
    trace = parse_trace(TINY, "tiny")
    heat = trace_heatmaps(trace, 7, address_bins=4, time_bins=4)[0]
    lines = render_lines(heat)
    assert lines[:4] == [
        "0x40002000 │   ░",
        "0x40000000 ≈ █░ ",
        "   0x12000 │ ░ █",
        "   0x10000 │▓   ",
    ]
    assert lines[4] == "           └────"


@pytest.mark.parametrize("path", TRACES, ids=[p.name for p in TRACES])
def test_report_heatmap_fits_80_columns_on_the_evaluation_traces(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["report", "heatmap", str(path)]) == 0
    out = capsys.readouterr().out
    assert max(cell_len(line) for line in out.splitlines()) <= 80
    assert "█" in out and "└" in out and " s" in out


def test_the_widest_addresses_fit_80_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    rows = [f"{t},1,{a:#x},1" for t in range(100) for a in (0xFFFF_FFFF_FFFF_0000, t << 30)]
    (tmp_path / "wide.csv").write_text("\n".join(rows) + "\n")
    assert main(["report", "heatmap", str(tmp_path / "wide.csv"), "--address-bins", "101"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("0xffffffffffff0000 ") for line in lines)
    assert max(cell_len(line) for line in lines) == 80


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(str(exc.code))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.txt"], "the heatmap is a PNG file: name it FILE.png"),
        (["--address-bins", "0"], "--address-bins: must be 1..4096, got 0"),
        (["--time-bins", "100000"], "--time-bins: must be 1..4096, got 100000"),
        (["--pid", "5"], "no records for pid 5"),
    ],
)
def test_report_heatmap_bad_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str,
) -> None:
    trace = tmp_path / "tiny.csv"
    trace.write_text(TINY)
    rc, _, err = run(["report", "heatmap", str(trace), *extra], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_report_heatmap_file_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["report", "heatmap", str(tmp_path / "none.csv")], capsys)
    assert rc == 2 and "No such file or directory" in err
    (tmp_path / "bad.csv").write_text("0,1\n")
    rc, _, err = run(["report", "heatmap", str(tmp_path / "bad.csv")], capsys)
    assert rc == 2 and "expected time_s,pid,address[,count]" in err
    (tmp_path / "t.csv").write_text(TINY)
    rc, _, err = run(["report", "heatmap", str(tmp_path / "t.csv"), "--out", str(tmp_path)],
                     capsys)
    assert rc == 2 and "is a directory; name a FILE.png in it" in err
    rc, _, err = run(["report"], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1


def test_report_heatmap_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "t.csv").write_text(TINY)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    rc, _, err = run(["report", "heatmap", str(tmp_path / "t.csv"), "--out",
                      str(tmp_path / "h.png")], capsys)
    assert rc == 2
    assert err.strip() == "kscand report: --out needs matplotlib: pip install 'kscand[plot]'"


def test_report_heatmap_png(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("matplotlib") is None:
        pytest.skip("matplotlib (the plot extra) is not installed")
    (tmp_path / "t.csv").write_text(TINY)
    png = tmp_path / "h.png"
    rc, out, err = run(["report", "heatmap", str(tmp_path / "t.csv"), "--out", str(png)],
                       capsys)
    assert rc == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "heatmap written to" in out


def test_the_readme_shows_what_the_command_prints(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    readme = (ROOT / "README.md").read_text().splitlines()
    command = "    $ kscand report heatmap evaluation/traces/redis-zipf.csv --address-bins 8"
    start = readme.index(command) + 1
    end = next(i for i in range(start, len(readme)) if not readme[i].startswith("    "))
    shown = [line[4:].rstrip() for line in readme[start:end]]
    monkeypatch.chdir(ROOT)
    assert main(command.split()[2:]) == 0
    assert [line.rstrip() for line in capsys.readouterr().out.splitlines()] == shown
