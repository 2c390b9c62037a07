"""Trace files: the bulk parser gives the per-line parser's values, .gz, limits, the cache."""

from __future__ import annotations

import gzip
import os
import random
from pathlib import Path

import numpy as np
import pytest

from kscand.cli import main
from kscand.errors import ConfigError
from kscand.sim import tracedecode as td
from kscand.sim import tracefile as tf
from kscand.sim import workloads as wl


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test: its own cache directory, and nothing left in this process's memory."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(tf.TRACE_CACHE_ENV, str(cache))
    monkeypatch.setattr(tf, "_LOADED", {})
    return cache


def per_line(text: str) -> list[tuple[float, int, int, float]]:
    """The reference: every line through the per-line parser, the header skipped."""
    rows = []
    header_possible = True
    for lineno, line in enumerate(text.splitlines(), start=1):
        if header_possible and line.strip() and not line.strip().startswith("#"):
            header_possible = False
            if td._is_header(line):
                continue
        row = td._parse_line(line, "ref", lineno)
        if row is not None:
            rows.append(row)
    return rows


def random_trace(seed: int, uniform: bool, nr_rows: int = 3000) -> str:
    rng = random.Random(seed)

    def number() -> str:
        kind = rng.random()
        if kind < 0.3:
            return f"{rng.random() * 1000:.{rng.randint(0, 9)}f}"
        if kind < 0.5:
            return f"{rng.random() * 10:.6e}"
        if kind < 0.6:
            return str(rng.randint(0, 10**18))
        if kind < 0.8:
            return f"{rng.randint(0, 99)}.{'0' * rng.randint(0, 25)}{rng.randint(1, 9)}"
        return f"{rng.random():.17g}"

    lines = ["time_s,pid,address,count"] if rng.random() < 0.5 else []
    for _ in range(nr_rows):
        address = rng.choice([hex(rng.randint(0, 2**63)), str(rng.randint(0, 2**64 - 1)),
                              "0X" + format(rng.randint(0, 2**40), "X"),
                              "0x" + "0" * rng.randint(0, 30) + "1f"])
        fields = [number(), str(rng.randint(0, 2**31 - 1)), address]
        if uniform or rng.random() < 0.5:
            fields.append(number())
        lines.append((", " if not uniform and rng.random() < 0.3 else ",").join(fields))
        if rng.random() < 0.01:
            lines.append("# a comment, with, commas")
        if rng.random() < 0.01:
            lines.append("")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("seed", "uniform"), [(1, True), (2, False), (3, True), (4, False)])
def test_bulk_parser_equals_the_per_line_parser(seed: int, uniform: bool) -> None:
    text = random_trace(seed, uniform)
    trace = tf.parse_trace(text, "t.csv")
    rows = per_line(text)
    order = np.argsort(np.array([r[0] for r in rows]), kind="stable")
    assert trace.nr_rows == len(rows)
    assert np.array_equal(trace.t_s, np.array([r[0] for r in rows])[order])
    assert np.array_equal(trace.pid, np.array([r[1] for r in rows], dtype=np.int32)[order])
    assert np.array_equal(trace.page, np.array([r[2] >> 12 for r in rows], dtype=np.int64)[order])
    assert np.array_equal(trace.count, np.array([r[3] for r in rows], dtype=np.float32)[order])


def test_the_example_trace_loads_as_before() -> None:
    path = Path(__file__).resolve().parent.parent / "evaluation" / "traces" / "phases.csv"
    trace = tf.load_trace(str(path))
    text = path.read_text()
    rows = per_line(text)
    assert trace.nr_rows == len(rows) == 18_360
    assert float(trace.count.sum()) == pytest.approx(sum(r[3] for r in rows))


def test_gzip_trace_equals_the_plain_one(tmp_path: Path) -> None:
    text = random_trace(5, True, 500)
    plain, packed = tmp_path / "t.csv", tmp_path / "t.csv.gz"
    plain.write_text(text)
    packed.write_bytes(gzip.compress(text.encode()))
    a, b = tf.load_trace(str(plain)), tf.load_trace(str(packed))
    for name in ("t_s", "pid", "page", "count"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    (tmp_path / "bad.csv.gz").write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(ConfigError, match="cannot decompress"):
        tf.load_trace(str(tmp_path / "bad.csv.gz"))


def test_the_cache_is_keyed_by_size_mtime_and_hash(tmp_path: Path, _cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0.5,7,0x1000,3\n0.1,7,0x2000\n")
    before = dict(tf.TRACE_CACHE_STATS)
    first = tf.load_trace(str(path))
    monkeypatch.setattr(tf, "_LOADED", {})  # as a fresh worker process
    second = tf.load_trace(str(path))
    assert isinstance(second.t_s, np.memmap)  # mapped from the cache, not parsed
    assert tf.TRACE_CACHE_STATS["cache_hit"] == before.get("cache_hit", 0) + 1
    assert first.t_s.tolist() == second.t_s.tolist() == [0.1, 0.5]
    assert second.page.tolist() == [2, 1] and second.count.tolist() == [1.0, 3.0]
    path.write_text("0.5,7,0x1000,4\n0.1,7,0x2000\n")  # same size, new content and mtime
    os.utime(path, ns=(1, 1))
    monkeypatch.setattr(tf, "_LOADED", {})
    assert tf.load_trace(str(path)).count.tolist() == [1.0, 4.0]
    assert len([p for p in _cache.iterdir() if not p.name.startswith(".")]) == 2


def test_cache_off_and_an_unwritable_cache(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.csv"
    path.write_text("0.5,7,0x1000\n")
    monkeypatch.setenv(tf.TRACE_CACHE_ENV, "off")
    assert tf.cache_dir() is None and tf.load_trace(str(path)).nr_rows == 1
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(tf.TRACE_CACHE_ENV, str(blocker / "sub"))
    monkeypatch.setattr(tf, "_LOADED", {})
    failed = tf.TRACE_CACHE_STATS["cache_write_failed"]
    assert tf.load_trace(str(path)).nr_rows == 1
    assert tf.TRACE_CACHE_STATS["cache_write_failed"] == failed + 1


def test_only_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        tf.load_trace(str(fifo))  # refused without blocking on the open
    with pytest.raises(ConfigError, match="not a regular file"):
        tf.load_trace("/dev/zero")
    with pytest.raises(ConfigError, match="not a regular file"):
        tf.load_trace(str(tmp_path))
    with pytest.raises(ConfigError, match="No such file"):
        tf.load_trace(str(tmp_path / "missing.csv"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.1,7\n", r"t\.csv:1: expected time_s,pid,address"),
        ("0.1,7,1\n0.1,7,zz\n", r"t\.csv:2: cannot parse"),
        ("-1,7,0x1000\n", "negative or non-finite"),
        ("1,7,0x1,nan\n", "negative or non-finite"),
        ("# nothing\n", "no records"),
        ("1,2147483648,0x10\n", "pid 2147483648 out of range"),
        ("1,-3,0x10\n", "pid -3 out of range"),
        ("1,2,0x10000000000000000\n", "does not fit 64 bits"),
        ("1,2,18446744073709551616\n", "does not fit 64 bits"),
        ("1,2,3\n" + "9" * 5000, "longer than 4096 bytes"),
    ],
)
def test_bad_traces_are_one_line_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        tf.parse_trace(text, "t.csv")
    assert "\n" not in str(err.value)


def test_size_and_memory_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.csv"
    path.write_text("".join(f"{i},7,{i * 4096}\n" for i in range(1000)))
    monkeypatch.setattr(tf, "TRACE_MAX_FILE_BYTES", 100)
    with pytest.raises(ConfigError, match="over the trace size limit"):
        tf.load_trace(str(path))
    monkeypatch.setattr(tf, "TRACE_MAX_FILE_BYTES", 1 << 30)
    monkeypatch.setattr(tf, "TRACE_MEMORY_LIMIT_BYTES", 500 * tf.TRACE_ROW_BYTES)
    with pytest.raises(ConfigError, match=r"up to 1,001 records need about .* over the limit"):
        tf.load_trace(str(path))  # before parsing: from the line count
    packed = tmp_path / "t.csv.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    monkeypatch.setattr(tf, "TRACE_MAX_TEXT_BYTES", 1000)
    with pytest.raises(ConfigError, match="more than 0 MiB of text"):
        tf.load_trace(str(packed))  # a gzip bomb stops at the text limit


def test_absurd_windows_are_refused_in_one_line(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    trace = tf.parse_trace("1e12,7,0x1000\n", "far.csv")
    with pytest.raises(ConfigError, match=r"window_s = 0.001 over 1e\+12 s makes 1e\+15 windows"):
        wl.check_trace_windows(trace, -1, 0.001, "far.csv")
    assert wl.check_trace_windows(trace, -1, 1e9, "far.csv") == 1001
    (tmp_path / "far.csv").write_text("1e12,7,0x1000\n")
    scenario = tmp_path / "far.toml"
    scenario.write_text("""
duration_s = 1
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
vmas = [{ kind = "anon", size = "1MiB", workload = { kind = "trace", path = "far.csv", window_s = 0.001 } }]
""")
    assert main(["compare", str(scenario), "--quiet", "--jobs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "use a larger window_s" in err


def test_window_rates_match_a_per_window_recount() -> None:
    rng = np.random.default_rng(9)
    n = 5000
    small = tf.Trace(np.sort(rng.random(n) * 500.0), np.full(n, 7, dtype=np.int32),
                     rng.integers(100, 100 + 4096, n).astype(np.int64),
                     rng.integers(1, 50, n).astype(np.float32))
    small.count[:40] = 30.0  # ties at the hot cut
    w = wl.trace_rates(small, 4096, -1, 50.0, 0.7, False, "t.csv")
    low = int(small.page.min())
    assert w.nr_windows == 10
    for k in range(w.nr_windows):
        sel = (small.t_s // 50.0) == k
        expect = np.zeros(4096)
        np.add.at(expect, small.page[sel] - low, small.count[sel].astype(np.float64))
        got = w.rates(k * 50.0 + 1.0).astype(np.float64) * 50.0
        assert np.allclose(got, expect, rtol=1e-5)
        hot = wl.top_share_pages((expect / 50.0).astype(np.float32), 0.7)
        assert np.array_equal(w.hot(k * 50.0 + 1.0), hot)
    assert w.end_s == 500.0 and float(w.rates(w.end_s).sum()) == 0.0
