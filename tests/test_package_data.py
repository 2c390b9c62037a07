"""The wheel's data (src/kscand/data): single-sourced, all of it packaged, found by name;
and a fresh venv's `pip install .` runs a shipped scenario with nothing of the checkout."""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from kscand.cli import main
from kscand.data import (
    CONFIG_EXAMPLE,
    DATA_DIR,
    SCENARIO_DIRS,
    SYSTEMD_UNIT,
    resolve_scenario,
    shipped_scenarios,
)
from kscand.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EVALUATION = ROOT / "evaluation" / "scenarios"
SHIPPED_NAMES = {
    "simulator": ["flat-random", "hotset", "moving-hotset", "two-sockets", "zipf-kv"],
    "evaluation": ["graph-powerlaw", "gups-hotset", "large-256g", "many-small", "zipf-0.6",
                   "zipf-0.9", "zipf-1.2"],
}
NOT_SHIPPED = ["igraph-pagerank", "redis-recorded", "redis-zipf", "sqlite-kv", "trace-phases"]
# (they need traces)


def _uses_trace(value: Any) -> bool:
    if isinstance(value, dict):
        return value.get("kind") == "trace" or any(_uses_trace(v) for v in value.values())
    if isinstance(value, list):
        return any(_uses_trace(v) for v in value)
    return False


def _links_to(link: Path, target: Path) -> bool:
    return link.is_symlink() and link.resolve() == target.resolve()


# -- single source: the checkout's paths are links to the packaged files -------------------

def test_checkout_paths_link_to_the_packaged_files() -> None:
    assert _links_to(ROOT / "scenarios", SCENARIO_DIRS["simulator"])
    assert _links_to(ROOT / "contrib" / "kscand.toml", CONFIG_EXAMPLE)
    assert _links_to(ROOT / "contrib" / "kscand.service", SYSTEMD_UNIT)
    for path in sorted(SCENARIO_DIRS["evaluation"].glob("*.toml")):
        assert _links_to(EVALUATION / path.name, path), f"{path.name} is a copy or missing"


def test_no_scenario_exists_twice() -> None:
    """A regular file under evaluation/scenarios is one the wheel does not ship."""
    shipped = {s.name for s in shipped_scenarios()}
    for path in EVALUATION.glob("*.toml"):
        if not path.is_symlink():
            assert path.stem not in shipped, f"{path} duplicates a shipped scenario"


def test_exactly_the_scenarios_that_run_without_the_checkout_are_shipped() -> None:
    found: dict[str, list[str]] = {}
    for s in shipped_scenarios():
        found.setdefault(s.group, []).append(s.name)
        raw = tomllib.loads(s.path.read_text())
        assert raw["name"] == s.name, s.path  # `kscand sim NAME` is the name it reports
        assert s.description and "\n" not in s.description, s.name
        assert not _uses_trace(raw), f"{s.name} needs a trace file outside the wheel"
    assert found == SHIPPED_NAMES
    for name in NOT_SHIPPED:
        raw = tomllib.loads((EVALUATION / f"{name}.toml").read_text())
        assert _uses_trace(raw), f"{name} runs without a trace: ship it"


def test_pyproject_package_data_covers_every_data_file() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["kscand.data"]
    files = [p.relative_to(DATA_DIR).as_posix() for p in DATA_DIR.rglob("*")
             if p.is_file() and p.suffix != ".py" and "__pycache__" not in p.parts]
    assert len(files) == 2 + sum(len(v) for v in SHIPPED_NAMES.values())
    unmatched = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert unmatched == []


# -- names on the command line ----------------------------------------------------------

def test_a_name_resolves_to_the_shipped_file_and_a_path_still_works(tmp_path: Path,
                                                                  monkeypatch: Any) -> None:
    assert resolve_scenario("hotset") == SCENARIO_DIRS["simulator"] / "hotset.toml"
    assert resolve_scenario("zipf-0.9") == SCENARIO_DIRS["evaluation"] / "zipf-0.9.toml"
    assert resolve_scenario("scenarios/hotset.toml") == Path("scenarios/hotset.toml")
    # An existing file wins over a shipped name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hotset").write_text("name = 'mine'\n")
    assert resolve_scenario("hotset") == Path("hotset")
    with pytest.raises(ConfigError, match="no shipped scenario of that name"):
        resolve_scenario("redis-zipf")  # not shipped: its trace is in the checkout only


def test_sim_list_prints_one_line_per_shipped_scenario(capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    assert main(["sim", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "simulator scenarios:" and lines[6] == "evaluation scenarios:"
    listed = [line.split()[0] for line in lines if line.startswith("  ")]
    assert listed == SHIPPED_NAMES["simulator"] + SHIPPED_NAMES["evaluation"]
    hotset = next(line for line in lines if line.split()[0] == "hotset")
    assert "10 % hot set" in hotset
    assert main(["compare", "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == lines


@pytest.mark.parametrize("command", ["sim", "compare"])
def test_unknown_name_is_one_line_exit_2(command: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "no-such-scenario"]) == 2
    err = capsys.readouterr().err
    assert err == (f"kscand {command}: scenario 'no-such-scenario': no such file and no "
                   "shipped scenario of that name (--list names them)\n")
    assert main([command]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_sim_runs_a_shipped_scenario_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "two-sockets", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("two-sockets seed ")
    assert "east[" in out and "west[" in out


# -- from a fresh venv, as a pip user ------------------------------------------------------

def _copy_checkout(dest: Path) -> Path:
    """The source tree without the venv, caches, build output and git metadata."""
    ignore = shutil.ignore_patterns(".venv", ".git", "build", "out", "*.egg-info",
                                    "__pycache__", ".*_cache")
    shutil.copytree(ROOT, dest, symlinks=True, ignore=ignore)
    return dest


@pytest.mark.slow
def test_fresh_venv_pip_install_runs_a_shipped_scenario(tmp_path: Path) -> None:
    src = _copy_checkout(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(src)],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    shutil.rmtree(src)  # nothing of the checkout is left to lean on
    away = tmp_path / "elsewhere"
    away.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    kscand = str(venv / "bin" / "kscand")

    def run(*words: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([kscand, *words], capture_output=True, text=True, cwd=away,
                              env=env, timeout=300)

    sim = run("sim", "hotset", "--quiet")
    assert sim.returncode == 0, sim.stderr
    assert sim.stdout.startswith("hotset seed 1: 30 s virtual")
    listed = run("sim", "--list")
    assert listed.returncode == 0 and "  zipf-kv " in listed.stdout
    compare = run("compare", "hotset", "--duration", "4", "--policies", "kscand,none",
                  "--jobs", "1", "--quiet")
    assert compare.returncode == 0, compare.stderr
    assert "hotset: seed 1, 4 s virtual" in compare.stdout
    files = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import kscand.data as d; print(d.DATA_DIR)"],
        capture_output=True, text=True, cwd=away, env=env, timeout=60, check=True,
    ).stdout.splitlines()
    assert files[0].startswith(str(venv)), files  # the installed copy, not the checkout
    installed = Path(files[0])
    assert (installed / "kscand.toml").read_bytes() == CONFIG_EXAMPLE.read_bytes()
    assert (installed / "kscand.service").read_bytes() == SYSTEMD_UNIT.read_bytes()
    assert sorted(p.name for p in (installed / "evaluation").glob("*.toml")) == [
        f"{n}.toml" for n in SHIPPED_NAMES["evaluation"]]
