"""The command line imports only the chosen subcommand (issue 11): `kscand status --help`
loads neither the simulator, the evaluation, the live machine nor the engine's scanner."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
import kscand.cli
try:
    kscand.cli.main({argv!r})
except SystemExit:
    pass
sys.stderr.write(json.dumps(sorted(m for m in sys.modules if m.startswith("kscand"))))
"""


def _kscand_modules(argv: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True, text=True, timeout=60, check=True,
    )
    modules: list[str] = json.loads(done.stderr)
    return modules


def _under(modules: list[str], package: str) -> list[str]:
    return [m for m in modules if m == package or m.startswith(package + ".")]


@pytest.mark.parametrize("argv", [["status", "--help"], ["tune", "--help"], ["--help"]])
def test_a_daemon_client_imports_no_simulator_evaluation_or_live_machine(
    argv: list[str],
) -> None:
    modules = _kscand_modules(argv)
    assert "kscand.cli" in modules
    for package in ("kscand.sim", "kscand.evaluation", "kscand.live", "kscand.core.scanner"):
        assert _under(modules, package) == []


def test_status_help_imports_only_its_own_subcommand() -> None:
    modules = _kscand_modules(["status", "--help"])
    assert _under(modules, "kscand.cli") == [
        "kscand.cli", "kscand.cli.jsonout", "kscand.cli.pathargs", "kscand.cli.status",
        "kscand.cli.tables",
    ]


def test_the_probe_sees_what_a_subcommand_imports() -> None:
    assert _under(_kscand_modules(["sim", "--help"]), "kscand.sim") != []


@pytest.mark.parametrize("argv", [["record", "--help"], ["report", "heatmap", "--help"]])
def test_record_and_report_help_import_neither_the_backend_nor_the_simulator(
    argv: list[str],
) -> None:
    """The recorder imports the live machine and the heatmap the trace loader only once
    they run; their --help loads their own CLI module and nothing else of kscand.cli."""
    modules = _kscand_modules(argv)
    for package in ("kscand.sim", "kscand.evaluation", "kscand.live", "kscand.inspect",
                    "kscand.core.scanner", "kscand.core.filters"):
        assert _under(modules, package) == []
    assert f"kscand.cli.{argv[0]}" in modules
    others = {"kscand.cli.scan", "kscand.cli.sim", "kscand.cli.status", "kscand.cli.record",
              "kscand.cli.report"} - {f"kscand.cli.{argv[0]}"}
    assert others.isdisjoint(modules)
