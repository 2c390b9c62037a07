"""`kscand record` on a fake /proc and /sys tree (page_idle): the file, the exit statuses,
every one-line error, a process that exits mid-record."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from fake_linux import ANON_LRU, PM_EXCLUSIVE, PM_PRESENT, FakeLinux, smaps_entry

from kscand.cli import main
from kscand.live.page_idle import PageIdleBitmap
from kscand.machine import PAGE_SIZE
from kscand.sim.tracefile import parse_trace

NODE1_PFN = 8 * ((128 << 20) >> 12)
VMA = 0x7F3A_0020_0000
PID = 4242


@pytest.fixture(autouse=True)
def root_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # the os live.features reads


@pytest.fixture
def fake(tmp_path: Path) -> FakeLinux:
    """Pages 0-3 on node 0, 4-9 on node 1, page 10 shared, 11-255 never touched."""
    fake = FakeLinux(tmp_path / "root")
    fake.two_tier()
    fake.enable_page_idle(NODE1_PFN + 4096)
    fake.add_process(PID, "redis-server", start_time=5000,
                     smaps=smaps_entry(VMA, VMA + (1 << 20)))
    entries = {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (200 + i) for i in range(4)}
    entries |= {VMA + i * PAGE_SIZE: PM_PRESENT | PM_EXCLUSIVE | (NODE1_PFN + i)
                for i in range(4, 10)}
    entries[VMA + 10 * PAGE_SIZE] = PM_PRESENT | (NODE1_PFN + 10)
    fake.set_pagemap(PID, entries)
    fake.set_kpages(range(200, 204), ANON_LRU)
    fake.set_kpages(range(NODE1_PFN + 4, NODE1_PFN + 11), ANON_LRU)
    return fake


def always_accessed(monkeypatch: pytest.MonkeyPatch,
                    after_write: Callable[[int], None] | None = None) -> None:
    """The bitmap never records the idle marks: every page reads accessed each pass.
    after_write(n) runs after the n-th write (1: the baseline pass's)."""
    calls = [0]

    def write_words(self: PageIdleBitmap, words: object, masks: object) -> None:
        calls[0] += 1
        if after_write is not None:
            after_write(calls[0])

    monkeypatch.setattr(PageIdleBitmap, "write_words", write_words)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit status, stdout, stderr); argparse's errors exit (SystemExit) with status 2."""
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(str(exc.code))
    out, err = capsys.readouterr()
    return rc, out, err


def record_argv(fake: FakeLinux, out: Path, *extra: str) -> list[str]:
    return ["record", "--pid", str(PID), "--duration", "0.03", "--interval", "0.01",
            "--out", str(out), "--procfs", fake.procfs, "--sysfs", fake.sysfs, *extra]


def test_record_writes_every_accessed_page_each_interval(
    fake: FakeLinux, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    always_accessed(monkeypatch)
    out = tmp_path / "rec.csv"
    rc, stdout, err = run(record_argv(fake, out, "--addresses", "vaddr"), capsys)
    assert rc == 0, err
    assert "recorded pid 4242 (redis-server): 3 of 3 interval(s) of 0.01 s, 30 record(s)" \
        in stdout
    assert "page_shared=4" in stdout  # page 10, over the 4 passes
    text = out.read_text()
    assert "# comm: redis-server" in text and "# access_source: page_idle" in text
    assert f"# kernel_release: {os.uname().release}" in text
    trace = parse_trace(text, str(out))
    expected = [VMA + i * PAGE_SIZE for i in range(10)]
    assert (trace.page << 12).tolist() == expected * 3
    assert np.unique(trace.t_s).tolist() == pytest.approx([0.005, 0.015, 0.025])


def test_record_compact_and_json(
    fake: FakeLinux, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    always_accessed(monkeypatch)
    out = tmp_path / "rec.csv.gz"
    rc, stdout, err = run(record_argv(fake, out, "--json", "-"), capsys)
    assert rc == 0, err
    summary = json.loads(stdout)
    assert summary["ended"] == "done" and summary["intervals"] == 3
    assert summary["records"] == 30 and summary["span_bytes"] == 10 * PAGE_SIZE
    assert summary["replay_vma_bytes"] == 2 << 20 and summary["addresses"] == "compact"
    assert summary["skips"]["page_shared"] == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--pid", "999"], "no process with pid 999"),
        (["--pid", "2"], "kernel thread"),
        (["--duration", "0"], "--duration: must be a positive number of seconds, got 0"),
        (["--interval", "-1"], "--interval: must be a positive number of seconds, got -1"),
        (["--interval", "nan"], "--interval: must be a positive number of seconds, got nan"),
        (["--duration", "1", "--interval", "2"], "--interval: 2 s is longer than --duration 1 s"),
        (["--duration", "inf"], "--duration: must be a positive number of seconds, got inf"),
        (["--duration", "1e7", "--interval", "1"], "makes more than 1,000,000 intervals"),
        (["--source", "damon"], "access_source damon:"),
        (["--source", "nope"], "invalid choice"),
    ],
)
def test_record_bad_input_is_one_line_exit_2(
    fake: FakeLinux, tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
    message: str,
) -> None:
    fake.add_process(2, "kthreadd", flags=0x00200000)
    rc, _, err = run([*record_argv(fake, tmp_path / "r.csv"), *argv], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "r.csv").exists()  # nothing written before the process is found


def test_record_out_errors(fake: FakeLinux, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(record_argv(fake, tmp_path), capsys)
    assert rc == 2 and err.strip().endswith(f"{tmp_path}: is a directory; name a file in it")
    rc, _, err = run(record_argv(fake, tmp_path / "missing" / "r.csv"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "cannot write: No such file or directory" in err


def test_record_without_an_access_source(fake: FakeLinux, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    (Path(fake.sysfs) / "kernel/mm/page_idle/bitmap").unlink()
    rc, _, err = run(record_argv(fake, tmp_path / "r.csv"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("kscand record: no access source: this kernel has no")


def test_record_needs_privilege(fake: FakeLinux, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    rc, _, err = run(record_argv(fake, tmp_path / "r.csv"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "root" in err, err


def test_a_process_exiting_mid_record_keeps_the_whole_intervals(
    fake: FakeLinux, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def exit_in_pass_2(n: int) -> None:
        if n == 3:  # during pass 2: interval 2 is dropped, interval 1 stays
            fake.remove_process(PID)

    always_accessed(monkeypatch, exit_in_pass_2)
    out = tmp_path / "rec.csv"
    rc, stdout, err = run(record_argv(fake, out), capsys)
    assert rc == 0, err
    assert "1 of 3 interval(s)" in stdout and "the process ended" in stdout
    text = out.read_text()
    assert parse_trace(text, str(out)).nr_rows == 10
    assert text.splitlines()[-1].startswith("# end: process_gone, 1 of 3 intervals")


def test_a_process_gone_before_the_first_interval_is_exit_2(
    fake: FakeLinux, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    always_accessed(monkeypatch, lambda n: fake.remove_process(PID) if n == 1 else None)
    rc, _, err = run(record_argv(fake, tmp_path / "rec.csv"), capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "pid 4242 (redis-server) exited before the first interval ended" in err
