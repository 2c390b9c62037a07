"""Trace levels: which of the series' events daemon.trace writes."""

from __future__ import annotations

import io
import json

import pytest

from kscand.daemon.trace import ALL_EVENTS, JsonLinesTrace
from kscand.errors import ConfigError

EVENTS = ("mm_enter", "scan_mm_start", "scan_mm_end", "scan_mm_migrate", "mm_exit")


@pytest.mark.parametrize(
    ("level", "written"),
    [
        ("mm", ["mm_enter", "mm_exit"]),
        ("scan", ["mm_enter", "scan_mm_start", "scan_mm_end", "mm_exit"]),
        ("all", list(EVENTS)),
    ],
)
def test_level_selects_events(level: str, written: list[str]) -> None:
    out = io.StringIO()
    trace = JsonLinesTrace(out, lambda: 42, level=level)
    for event in EVENTS:
        trace(event, {"mm": "1@2"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["event"] for line in lines] == written
    assert all(line["ts_ns"] == 42 and line["mm"] == "1@2" for line in lines)
    assert trace.nr_events == len(written)


def test_level_changes_on_set_level_and_bad_level_is_one_line() -> None:
    out = io.StringIO()
    trace = JsonLinesTrace(out, lambda: 0, level="mm")
    trace("scan_mm_start", {})
    trace.set_level("all")
    trace("scan_mm_start", {})
    assert out.getvalue().count("\n") == 1
    assert frozenset(EVENTS) == ALL_EVENTS
    with pytest.raises(ConfigError, match=r"^daemon.trace_level: expected one of mm, scan, all"):
        trace.set_level("verbose")


def test_reload_changes_the_trace_level(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from daemon_fakes import FAST_TUNABLES, DaemonThread, FakeMachine, write_config

    from kscand.config import config_from_text
    from kscand.daemon.trace import MM_EVENTS

    trace = tmp_path / "trace.jsonl"
    head = f'[tunables]\n{FAST_TUNABLES}[daemon]\ntrace = "{trace}"\n'
    path = write_config(tmp_path / "kscand.toml", head + 'trace_level = "all"\n')
    config = config_from_text(path.read_text()).with_state_dir(tmp_path / "s")
    run = DaemonThread(config, FakeMachine(), config_path=path)
    try:
        assert run.daemon.trace.events == ALL_EVENTS
        write_config(path, head + 'trace_level = "mm"\n')
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.counters.counts["reloads"] == 1)
        assert run.daemon.trace.events == MM_EVENTS
        assert run.daemon.config.daemon.trace_level == "mm"
    finally:
        run.stop()
