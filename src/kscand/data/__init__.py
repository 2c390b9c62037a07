"""The files kscand ships in its wheel: scenarios, the example config and the systemd unit.

These are the only copies. In a checkout, `scenarios/`, `contrib/kscand.toml`,
`contrib/kscand.service` and the synthetic `evaluation/scenarios/*.toml` are
symbolic links to them (tests/test_package_data.py fails if one is a copy).
The recorded-trace evaluation scenarios (redis-zipf, sqlite-kv,
igraph-pagerank, trace-phases) are not shipped: their traces live in the
repository's evaluation/traces/.

Pure lookups: nothing here prints or exits.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from kscand.errors import ConfigError

DATA_DIR = Path(__file__).resolve().parent
CONFIG_EXAMPLE = DATA_DIR / "kscand.toml"
SYSTEMD_UNIT = DATA_DIR / "kscand.service"

# Scenario groups, in the order `kscand sim --list` shows them.
SCENARIO_DIRS: dict[str, Path] = {
    "simulator": DATA_DIR / "scenarios",
    "evaluation": DATA_DIR / "evaluation",
}

DESCRIPTION_MAX_CHARS = 200  # a one-line description, cut past this


@dataclass(frozen=True)
class ShippedScenario:
    name: str  # the file's stem, what `kscand sim NAME` takes
    group: str  # a key of SCENARIO_DIRS
    path: Path
    description: str


def _description(path: Path) -> str:
    """The scenario's `description` key on one line ('' when it has none)."""
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return ""
    text = raw.get("description", "")
    if not isinstance(text, str):
        return ""
    line = " ".join(text.split())
    return line[:DESCRIPTION_MAX_CHARS]


def shipped_scenarios() -> list[ShippedScenario]:
    """Every shipped scenario, by group then name."""
    found: list[ShippedScenario] = []
    for group, directory in SCENARIO_DIRS.items():
        for path in sorted(directory.glob("*.toml")):
            found.append(ShippedScenario(path.stem, group, path, _description(path)))
    return found


def looks_like_path(arg: str) -> bool:
    """Whether a scenario argument is meant as a file, not a shipped name."""
    return "/" in arg or arg.endswith(".toml") or arg.startswith(".")


def resolve_scenario(arg: str) -> Path:
    """The scenario file an argument names: an existing file, else a shipped scenario of
    that name. A name that is neither is a ConfigError (one line); a path that does not
    exist is left to the scenario loader, which names it."""
    path = Path(arg)
    if path.is_file() or looks_like_path(arg):
        return path
    for scenario in shipped_scenarios():
        if scenario.name == arg:
            return scenario.path
    raise ConfigError(
        f"scenario {arg!r}: no such file and no shipped scenario of that name "
        "(--list names them)"
    )
