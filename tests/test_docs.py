"""The README documents every tunable and every shipped scenario."""

from __future__ import annotations

from pathlib import Path

from kscand.core.tunables import tunable_fields

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_commands() -> None:
    head = "\n".join(README.splitlines()[:10])
    assert "make demo" in head and "make test" in head


def test_every_tunable_is_documented() -> None:
    missing = [f.name for f in tunable_fields() if f"`{f.name}`" not in README]
    assert not missing, missing


def test_every_scenario_is_documented() -> None:
    from kscand.data import shipped_scenarios

    missing = [s.name for s in shipped_scenarios() if f"`{s.name}`" not in README]
    assert not missing, missing


def test_readme_runs_scenarios_by_name() -> None:
    """A pip user has no scenarios/ folder: the README's kscand commands name scenarios."""
    commands = [line.strip() for line in README.splitlines()
                if line.startswith("    kscand sim ") or line.startswith("    kscand compare ")]
    assert commands
    assert not [c for c in commands if "scenarios/" in c or ".toml" in c.split("#")[0]], commands
