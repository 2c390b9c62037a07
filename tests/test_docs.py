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
    missing = [p.name for p in (ROOT / "scenarios").glob("*.toml") if p.name not in README]
    assert not missing, missing
