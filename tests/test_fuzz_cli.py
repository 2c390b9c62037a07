"""Fuzzed config files and command lines of the daemon-side commands (run, status, tune,
scale, topology, scan): a clear one-line error with exit status 2 (1: no daemon), or a
normal run; never a traceback."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kscand.backends
import kscand.cli.scale
import kscand.cli.status
import kscand.cli.tune
import kscand.inspect.oneshot
from kscand.cli import main
from kscand.config import Config, config_from_mapping, config_from_text, load_config
from kscand.errors import ConfigError, Unsupported

REPO = Path(__file__).resolve().parents[1]
CONTRIB = tomllib.loads((REPO / "contrib" / "kscand.toml").read_text())
CONTRIB["process"] = [{"comm": "redis*", "scale": 2}, {"pid": 7, "cgroup": "/a", "scale": 0}]
CONTRIB["daemon"]["metrics"] = "127.0.0.1:9477"

junk = st.one_of(
    st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "/", "/run/x", "0", "1GiB", "stderr", "mm", "all", "[::1]:0",
                     "127.0.0.1:99999", "/a/../b", "\0", "redis*", "x" * 20]),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
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


ALL_PATHS = paths(CONTRIB)


def mutate(doc: dict[str, Any], path: tuple[Any, ...], action: str, value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    parent: Any = doc
    for key in path[:-1]:
        parent = parent[key]
    if action == "delete":
        del parent[path[-1]]
    elif action == "replace":
        parent[path[-1]] = value
    elif isinstance(parent, dict):
        parent[f"x_{value!s:.5}"] = value
    return doc


def one_line(message: str) -> None:
    assert message and "\n" not in message and "Traceback" not in message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(ALL_PATHS),
                          st.sampled_from(["delete", "replace", "add"]), junk),
                min_size=1, max_size=3))
def test_mutated_configs_load_or_fail_with_one_line(mutations: list[Any]) -> None:
    doc = CONTRIB
    for path, action, value in mutations:
        try:
            doc = mutate(doc, path, action, value)
        except (KeyError, IndexError, TypeError):
            continue
    try:
        config = config_from_mapping(doc)
    except ConfigError as err:
        one_line(str(err))
        return
    assert isinstance(config, Config)
    assert all(0 <= rule.scale <= 10 for rule in config.process_rules)
    assert config.daemon.state_dir.is_absolute()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_config_files_of_any_bytes_load_or_fail_with_one_line(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "kscand.toml"
    path.write_bytes(data)
    path.chmod(0o644)
    try:
        load_config(path)
    except ConfigError as err:
        one_line(str(err))
        assert str(err).startswith(str(path))


def test_config_text_with_every_section_fuzzed_is_one_line() -> None:
    for text in ("[[process]]\n" * 3, "[daemon]\nmetrics = \"::1:80\"\n",
                 "[[process]]\nscale = 1\ncomm = \"\"\n", "process = {}\n",
                 "[daemon.trace]\n", "[[tunables]]\n"):
        with pytest.raises(ConfigError) as info:
            config_from_text(text)
        one_line(str(info.value))


# -- command lines ---------------------------------------------------------------------------

OPTIONS = {
    "run": ["--config", "--state-dir", "--log-level", "--sim", "--metrics", "--procfs",
            "--sysfs", "debug", "loud"],
    "status": ["--json", "--state-dir", "--top", "-1", "5"],
    "tune": ["--state-dir", "scan_sleep_ms=5", "bogus=1", "scan_size_bytes=lots", "=", "a=b=c"],
    "scale": ["--state-dir", "1", "0", "11", "-3", "99999999999999999999"],
    "topology": ["--procfs", "--sysfs", "--slow-nodes", "--top-tier-nodes", "0-1", "x", "3-1"],
    "scan": ["--pid", "--passes", "--interval-ms", "--heatmap", "--access-source", "--procfs",
             "--sysfs", "damon", "0", "1", "-1", "101", "x.png"],
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("cli")
    bad = root / "bad.toml"
    bad.write_text("[tunables]\nscan_sleep_ms = -1\n")
    bad.chmod(0o644)
    scenario = root / "bad-scenario.toml"
    scenario.write_text("[[nodes]]\nnid = 'x'\n")
    return {"bad.toml": str(bad), "scenario": str(scenario), "missing": str(root / "absent"),
            "dir": str(root)}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """No command may reach a real daemon's socket or start a live daemon here."""
    state_dir = tmp_path_factory.mktemp("state")
    patch = pytest.MonkeyPatch()
    for module in (kscand.cli.status, kscand.cli.tune, kscand.cli.scale):
        patch.setattr(module, "DEFAULT_STATE_DIR", state_dir)

    def no_live_backend(config: Any, procfs: str = "/proc", sysfs: str = "/sys") -> Any:
        raise Unsupported("test: the live daemon is not started by the fuzzer")

    patch.setattr(kscand.backends, "open_live_backend", no_live_backend)
    real_scan = kscand.inspect.oneshot.scan_process

    def short_scan(machine: Any, proc: Any, passes: int, interval_ns: int) -> Any:
        return real_scan(machine, proc, passes=min(passes, 2), interval_ns=0)

    patch.setattr(kscand.inspect.oneshot, "scan_process", short_scan)
    yield
    patch.undo()


@settings(max_examples=250, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(command=st.sampled_from(sorted(OPTIONS)), data=st.data())
def test_command_lines_never_traceback(
    command: str, data: st.DataObject, files: dict[str, str], sandbox: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    vocabulary = OPTIONS[command] + list(files.values()) + ["--", "-x", "\0", "", "--help",
                                                            "a\nb", "\x1e"]
    tokens = data.draw(st.lists(st.one_of(st.sampled_from(vocabulary), st.text(max_size=6)),
                                max_size=6))
    if command == "run" and "--sim" in tokens:  # never a scenario that would run forever
        tokens = [files["scenario"] if t.endswith(".toml") and t != files["bad.toml"] else t
                  for t in tokens]
    try:
        code = main([command, *tokens])
    except SystemExit as exc:  # argparse: usage error (2) or --help (0)
        code = exc.code  # type: ignore[assignment]
    _out, err = capsys.readouterr()
    assert "Traceback" not in err
    if code == 3:  # topology's documented "kscand cannot promote here", said on stdout
        assert command == "topology" and err == "", (tokens, err)
        return
    assert code in (0, 1, 2), (tokens, err)
    if code:
        lines = err.strip("\n").splitlines()
        assert len(lines) == 1 and lines[0].startswith("kscand"), (tokens, err)
