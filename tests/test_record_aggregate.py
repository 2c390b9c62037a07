"""evaluation/record: a small synthetic lackey log -> lackey_agg bins -> the exact trace CSV."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from kscand.sim.tracefile import parse_trace

RECORD = Path(__file__).resolve().parents[1] / "evaluation" / "record"

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")


def _load_tfb() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trace_from_bins", RECORD / "trace_from_bins.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["trace_from_bins"] = mod
    spec.loader.exec_module(mod)
    return mod


tfb = _load_tfb()


@pytest.fixture(scope="module")
def agg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    exe = tmp_path_factory.mktemp("agg") / "lackey_agg"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(RECORD / "lackey_agg.c")],
        check=True,
    )
    return exe


STACK = 0x1FFF000000  # the client stack valgrind sets up (first data access below)
HEAP = 0x4A1B000  # an anonymous mapping
LIBC = 0x4846000  # a file-backed mapping

MAPS = (
    "04846000-0486c000 r--p 00000000 fe:00 339380    /usr/lib/x86_64-linux-gnu/libc.so.6\n"
    "04a1b000-06a2c000 rw-p 00000000 00:00 0 \n"
    "1ffeffe000-1fff001000 rw-p 00000000 00:00 0 \n"
    "7ffdd6463000-7ffdd6484000 rw-p 00000000 00:00 0                          [stack]\n"
)


def synthetic_log() -> str:
    lines = [
        "==1== Lackey, an example Valgrind tool",
        f" S {STACK + 0x778:x},8",  # first data access: the stack
        "I  0401ab70,3",
        f" L {HEAP:x},8",  # window 0 (clock 0..2): the stack, heap page 0 twice
        f" M {HEAP + 8:x},4",
        f" L {LIBC + 0x10:x},8",  # window 1 (clock 3..5): libc
        f" L {HEAP + 0x1FFC:x},8",  # straddles heap pages 1 and 2
        "garbage line",
        f" S {HEAP + 0x5000:x},8",  # heap page 5
        f" L {HEAP:x},1",  # window 2 (clock 6..7): heap page 0
        f" S {STACK:x},8",  # the stack
        "==1== done",
    ]
    return "\n".join(lines) + "\n"


def run_agg(agg: Path, tmp: Path, log: str, *extra: str) -> dict[str, int]:
    (tmp / "log").write_text(log)
    subprocess.run(
        [str(agg), "--in", str(tmp / "log"), "--out", str(tmp / "bins"), "--stats",
         str(tmp / "stats"), "--window-accesses", "3", *extra],
        check=True,
    )
    return dict(tfb.read_stats(tmp / "stats"))


def test_bins_and_stats_are_exact(agg: Path, tmp_path: Path) -> None:
    stats = run_agg(agg, tmp_path, synthetic_log())
    assert stats["lines"] == 12
    assert stats["instr"] == 1
    assert (stats["loads"], stats["stores"], stats["modifies"]) == (4, 3, 1)
    assert stats["valgrind_lines"] == 2
    assert stats["malformed"] == 1
    assert stats["recorded"] == 8
    assert stats["page_straddles"] == 1
    assert stats["first_data_addr"] == STACK + 0x778
    bins = tfb.read_bins(tmp_path / "bins")
    got = list(zip(bins.window.tolist(), bins.page.tolist(), bins.count.tolist(), strict=True))
    h, s, lib = HEAP >> 12, STACK >> 12, LIBC >> 12
    assert got == [
        (0, h, 2), (0, s, 1),
        (1, lib, 1), (1, h + 1, 1), (1, h + 2, 1), (1, h + 5, 1),
        (2, h, 1), (2, s, 1),
    ]


def test_csv_is_exact(agg: Path, tmp_path: Path) -> None:
    stats = run_agg(agg, tmp_path, synthetic_log())
    snaps = tfb.parse_maps("# snapshot accesses=0\n" + MAPS)
    kept, summary = tfb.build_trace(tfb.read_bins(tmp_path / "bins"), stats, snaps, 100.0)
    csv = tfb.format_csv(kept, 77, summary["window_s"])
    h = HEAP
    assert csv == (
        "time_s,pid,address,count\n"
        f"0.015000,77,{h:#x},2\n"
        f"0.045000,77,{h + 0x1000:#x},1\n"
        f"0.045000,77,{h + 0x2000:#x},1\n"
        f"0.045000,77,{h + 0x5000:#x},1\n"
        f"0.075000,77,{h:#x},1\n"
    )
    assert summary["by_kind"]["stack"] == {"accesses": 2, "pages": 1}
    assert summary["by_kind"]["file"] == {"accesses": 1, "pages": 1}
    assert summary["by_kind"]["anon"] == {"accesses": 6, "pages": 4}
    assert (summary["pages"], summary["rows"], summary["accesses"]) == (4, 5, 6)
    assert summary["top25_share"] == pytest.approx(3 / 6)  # heap page 0: 3 of 6 accesses
    trace = parse_trace(csv, "synthetic")  # the simulator's loader takes it
    assert (trace.t_s // summary["window_s"]).tolist() == [0, 1, 1, 1, 2]
    assert trace.count.sum() == 6


def test_start_and_stop_marks(agg: Path, tmp_path: Path) -> None:
    """SIGUSR1 starts then stops the recording; the clock restarts at the mark."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [str(agg), "--in", str(fifo), "--out", str(tmp_path / "bins"), "--stats",
         str(tmp_path / "stats"), "--window-accesses", "2", "--start-at-mark"],
    )
    try:
        with open(fifo, "w") as w:
            w.write(" L 1000,8\n L 2000,8\n L 3000,8\n")
            w.flush()
            time.sleep(0.3)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            w.write(" L 4000,8\n L 4008,8\n L 5000,8\n")
            w.flush()
            time.sleep(0.3)
            proc.send_signal(signal.SIGUSR1)
            time.sleep(0.3)
            w.write(" L 6000,8\n")
        assert proc.wait(timeout=10) == 0
    finally:
        proc.kill()
    stats = tfb.read_stats(tmp_path / "stats")
    assert (stats["before_mark"], stats["recorded"], stats["after_stop"]) == (3, 3, 1)
    bins = tfb.read_bins(tmp_path / "bins")
    got = list(zip(bins.window.tolist(), bins.page.tolist(), bins.count.tolist(), strict=True))
    assert got == [(0, 4, 2), (1, 5, 1)]


def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "bins").write_bytes(b"\0" * 10)  # not whole 24-byte records
    (tmp_path / "stats").write_text("window_accesses 3\n")
    (tmp_path / "maps").write_text("")
    proc = subprocess.run(
        [sys.executable, str(RECORD / "trace_from_bins.py"), "--bins", str(tmp_path / "bins"),
         "--stats", str(tmp_path / "stats"), "--maps", str(tmp_path / "maps"), "--out",
         str(tmp_path / "out.csv"), "--pid", "1"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "24-byte records" in proc.stderr


def test_summary_json_round_trips(agg: Path, tmp_path: Path) -> None:
    run_agg(agg, tmp_path, synthetic_log())
    (tmp_path / "maps").write_text("# snapshot accesses=0\n" + MAPS)
    rc = tfb.main([
        "--bins", str(tmp_path / "bins"), "--stats", str(tmp_path / "stats"), "--maps",
        str(tmp_path / "maps"), "--out", str(tmp_path / "t.csv"), "--summary",
        str(tmp_path / "s.json"), "--pid", "9", "--accesses-per-s", "100",
    ])
    assert rc == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["rows"] == 5 and summary["trace_s"] == pytest.approx(0.08)
