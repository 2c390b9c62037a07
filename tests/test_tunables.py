"""Tunables: defaults from the series, ranges, parsing."""

from __future__ import annotations

import pytest

from kscand.core.tunables import Tunables, parse_assignment, tunables_from_mapping
from kscand.errors import ConfigError


def test_series_defaults() -> None:
    t = Tunables()
    assert t.scan_sleep_ms == 20
    assert t.scan_size_bytes == 4 << 30  # the series: 1 GiB (tunables.py says why)
    assert t.mms_to_scan == 4096
    assert t.hot_history_depth == 2
    assert t.scan_enabled is True


def test_sizes_and_ranges() -> None:
    assert tunables_from_mapping({"scan_size_bytes": "256MiB"}).scan_size_bytes == 256 << 20
    with pytest.raises(ConfigError, match=r"tunables.scan_size_bytes: .* out of range"):
        tunables_from_mapping({"scan_size_bytes": 4096})
    with pytest.raises(ConfigError, match="tunables.hot_history_depth: 9 is out of range"):
        tunables_from_mapping({"hot_history_depth": 9})
    with pytest.raises(ConfigError, match="tunables.scan_enabled: expected true or false"):
        tunables_from_mapping({"scan_enabled": 1})
    with pytest.raises(ConfigError, match="tunables.mms_to_scan: expected an integer"):
        tunables_from_mapping({"mms_to_scan": 2.5})
    with pytest.raises(ConfigError, match="multiple of the page size"):
        tunables_from_mapping({"scan_size_bytes": (4 << 20) + 1})
    assert tunables_from_mapping({"target_free_min_pct": 5}).target_free_min_pct == 5.0
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="finite"):
            tunables_from_mapping({"target_free_min_pct": bad})


def test_parse_assignment() -> None:
    assert parse_assignment("scan_sleep_ms=50") == ("scan_sleep_ms", 50)
    assert parse_assignment("scan_enabled=off") == ("scan_enabled", False)
    assert parse_assignment("scan_size_bytes=2GiB") == ("scan_size_bytes", 2 << 30)
    for bad in ("scan_sleep_ms", "=3", "nope=1", "scan_sleep_ms=fast", "scan_sleep_ms=-1"):
        with pytest.raises(ConfigError):
            parse_assignment(bad)


def test_replace_validates() -> None:
    assert Tunables().replace(scan_sleep_ms=5).scan_sleep_ms == 5
    with pytest.raises(ConfigError):
        Tunables().replace(scan_sleep_ms=-5)
