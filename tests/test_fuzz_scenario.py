"""Fuzzed scenario files and `kscand sim` arguments: a clear error or a scenario,
never a traceback."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kscand.cli import main
from kscand.errors import ConfigError
from kscand.sim.scenario import scenario_from_mapping

BASE = tomllib.loads((Path(__file__).resolve().parent.parent / "scenarios" / "hotset.toml")
                     .read_text())

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(),
                                                          max_size=2),
)


def paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += paths(v, (*prefix, i))
    return out


ALL_PATHS = paths(BASE)


def mutate(
    doc: dict[str, Any], path: tuple[Any, ...], action: str, value: Any
) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if action == "delete":
        del parent[last]
    elif action == "replace":
        parent[last] = value
    else:  # add an unknown sibling key
        if isinstance(parent, dict):
            parent[f"x_{value!s:.5}"] = value
    return doc


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS),
                          st.sampled_from(["delete", "replace", "add"]), junk),
                min_size=1, max_size=3))
def test_mutated_scenarios_validate_or_fail_with_one_line(
    mutations: list[tuple[tuple[Any, ...], str, Any]],
) -> None:
    doc = BASE
    for path, action, value in mutations:
        try:
            doc = mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue  # the path no longer exists after an earlier mutation
    try:
        scenario = scenario_from_mapping(doc)
    except ConfigError as err:
        message = str(err)
        assert message and "\n" not in message
        assert "Traceback" not in message
        return
    assert scenario.duration_s > 0 and scenario.sample_interval_s > 0
    for node in scenario.nodes:
        assert node.capacity_bytes >= 2 << 20 and node.latency_ns >= 0


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["--seed", "--json", "--quiet", "-x", "--", "sim"]),
                          st.text(max_size=8)), max_size=5))
def test_sim_arguments_never_traceback(
    tmp_path_factory: pytest.TempPathFactory, argv: list[str],
) -> None:
    cwd = tmp_path_factory.mktemp("fuzz")
    try:
        code = main(["sim", *[str(cwd / a) if a.endswith(".toml") else a for a in argv]])
    except SystemExit as exc:  # argparse: usage error, exit status 2
        assert exc.code in (0, 2)
        return
    assert code in (0, 2)
