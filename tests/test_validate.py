"""The one validation toolkit (kscand.validate) behind the config, the scenario and the
tunables: one key rule, one message per kind of mistake, whichever file it is in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from kscand.config import config_from_text
from kscand.core.tunables import tunables_from_mapping
from kscand.errors import ConfigError
from kscand.sim.scenario import scenario_from_mapping
from kscand.validate import (
    check_fields,
    int_in,
    list_of,
    read_int,
    read_table,
    show_key,
    unique,
    unknown_key,
)


def error_of(call: Callable[..., object], *args: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as info:
        call(*args, **kwargs)
    return str(info.value)


def test_show_key_quotes_what_toml_cannot_write_bare() -> None:
    assert show_key("scan_sleep-ms2") == "scan_sleep-ms2"
    assert show_key("a b") == "'a b'"
    assert show_key("x\nnew line") == "'x\\nnew line'"
    assert show_key("\x1b[31m") == "'\\x1b[31m'"
    assert show_key("") == "''"


def test_unknown_keys_are_named_the_same_way_everywhere() -> None:
    assert str(unknown_key("", "x y", ("b", "a"), "section")) == "'x y': unknown section (known: a, b)"
    assert error_of(read_table, {"b": 1, "a\n": 2}, "sim", {"c"}) == (
        "sim.'a\\n': unknown key (known: c)")
    assert error_of(check_fields, {"n\x00": 1}, "scan", {"pids": int_in(1, 2)}) == (
        "scan.'n\\x00': unknown field (known: pids)")
    assert error_of(config_from_text, '"bad key" = 1\n').startswith("'bad key': unknown section")
    assert error_of(scenario_from_mapping, {"a b": 1}).startswith("scenario.'a b': unknown key")


def test_a_bad_integer_reads_alike_in_the_config_the_scenario_and_the_tunables() -> None:
    assert error_of(config_from_text, "[[process]]\npid = 1\nscale = 1.5\n") == (
        "process[0].scale: expected an integer, got 1.5")
    assert error_of(read_int, {"count": 1.5}, "count", "processes[0]") == (
        "processes[0].count: expected an integer, got 1.5")
    assert error_of(tunables_from_mapping, {"hot_history_depth": 1.5}) == (
        "tunables.hot_history_depth: expected an integer, got 1.5")
    assert error_of(config_from_text, "[[process]]\npid = 1\nscale = 11\n") == (
        "process[0].scale: 11 is out of range [0, 10]")
    assert error_of(read_int, {"count": 0}, "count", "p", lo=1, hi=9) == (
        "p.count: 0 is out of range [1, 9]")
    assert error_of(tunables_from_mapping, {"hot_history_depth": 9}) == (
        "tunables.hot_history_depth: 9 is out of range [1, 8] (scans)")


def test_list_checks_name_each_item_and_repeats_in_value_order() -> None:
    check = unique(list_of(int_in(1, 100)))
    assert check([3, 1, 2], "scan.pids") == (3, 1, 2)
    assert error_of(check, [1, "2"], "scan.pids") == (
        "scan.pids[1]: expected an integer, got '2'")
    assert error_of(check, [10, 9, 10, 9], "scan.pids") == (
        "scan.pids: listed more than once: 9, 10")
    assert error_of(check, 5, "scan.pids") == "scan.pids: expected a list, got 5"
