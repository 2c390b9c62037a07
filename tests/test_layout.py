"""The layout's contracts, read from the source with ast (nothing is imported).

- The engine (src/kscand/core/) imports only the Machine interface (kscand.machine),
  kscand.errors, kscand.units, the input checks (kscand.validate), itself, the standard
  library and numpy: never the live machine, the simulator, the daemon, the CLI or the
  evaluation.
- The live machine (src/kscand/live/) holds only the backend: it imports neither the
  engine, the simulator, the daemon, the CLI, the evaluation, `kscand scan`'s inspection
  nor the test support.
- Only tests import the test support (kscand.testing): no daemon, CLI or backend code.
- No source file is over 500 lines, but for the listed exceptions.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "kscand"
CORE = SRC / "core"

CORE_MAY_IMPORT = ("kscand.machine", "kscand.errors", "kscand.units", "kscand.validate")
CORE_THIRD_PARTY = ("numpy",)
CORE_FORBIDDEN = (
    "kscand.live", "kscand.sim", "kscand.daemon", "kscand.cli", "kscand.evaluation",
)
LIVE = SRC / "live"
LIVE_FORBIDDEN = (
    "kscand.core", "kscand.sim", "kscand.daemon", "kscand.cli", "kscand.evaluation",
    "kscand.inspect", "kscand.testing",
)
TESTING = "kscand.testing"

MAX_LINES = 500
# Over MAX_LINES on purpose, each with its reason (none today: keep it that way).
LINE_EXCEPTIONS: dict[str, str] = {}
SIZE_CHECKED = ("src/kscand", "testbed", "bench", "evaluation")


def _module_of(path: Path) -> str:
    # a package's __init__ keeps its name so that its relative imports resolve
    return ".".join(path.relative_to(SRC.parent).with_suffix("").parts)


def imported_modules(source: str, module: str) -> list[str]:
    """Every module an ast import names, lazy and TYPE_CHECKING ones too, absolute."""
    package = module.rsplit(".", 1)[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
            continue
        if not isinstance(node, ast.ImportFrom):
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, base] if base else anchor)
        if node.module is None or base in ("kscand", "kscand.core"):
            # `from kscand.core import throttle`: the names are modules
            names.extend(f"{base}.{alias.name}" for alias in node.names)
            continue
        names.append(base)
    return names


def core_violations(source: str, module: str) -> list[str]:
    """The imports of one core module outside its contract, each named."""
    bad: list[str] = []
    for name in imported_modules(source, module):
        top = name.split(".")[0]
        if name == "kscand.core" or name.startswith("kscand.core."):
            continue
        if any(name == ok or name.startswith(ok + ".") for ok in CORE_MAY_IMPORT):
            continue
        if top == "kscand" or (top not in sys.stdlib_module_names
                               and top not in CORE_THIRD_PARTY):
            bad.append(name)
    return bad


def test_core_imports_only_the_machine_interface_errors_and_units() -> None:
    files = sorted(CORE.glob("*.py"))
    assert len(files) >= 13  # __init__ and the twelve engine modules
    found = {
        str(path.relative_to(ROOT)): core_violations(path.read_text(), _module_of(path))
        for path in files
    }
    assert {path: bad for path, bad in found.items() if bad} == {}


def test_the_contract_check_catches_each_forbidden_package() -> None:
    for forbidden in CORE_FORBIDDEN:
        src = f"import numpy\nfrom kscand.machine import Machine\nimport {forbidden}\n"
        assert core_violations(src, "kscand.core.engine") == [forbidden]
        lazy = f"def f() -> None:\n    from {forbidden} import x\n"
        assert core_violations(lazy, "kscand.core.engine") == [forbidden]
    assert core_violations("from kscand import daemon\n", "kscand.core.x") == ["kscand.daemon"]
    assert core_violations("from .. import cli\n", "kscand.core.x") == ["kscand.cli"]
    assert core_violations("from . import throttle\n", "kscand.core.x") == []
    assert core_violations("import rich\n", "kscand.core.x") == ["rich"]


def _line_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for top in SIZE_CHECKED:
        for path in sorted((ROOT / top).rglob("*.py")):
            counts[str(path.relative_to(ROOT))] = len(path.read_text().splitlines())
    return counts


def test_no_source_file_over_500_lines() -> None:
    counts = _line_counts()
    assert len(counts) > 50
    over = {path: n for path, n in counts.items() if n > MAX_LINES}
    assert {path: n for path, n in over.items() if path not in LINE_EXCEPTIONS} == {}


def test_every_line_exception_is_still_needed() -> None:
    counts = _line_counts()
    assert {path: counts.get(path, 0) for path in LINE_EXCEPTIONS
            if counts.get(path, 0) <= MAX_LINES} == {}


def test_backends_do_not_import_the_daemon() -> None:
    path = SRC / "backends.py"
    names = imported_modules(path.read_text(), _module_of(path))
    assert "kscand.machine" in names
    assert [n for n in names if n == "kscand.daemon" or n.startswith("kscand.daemon.")] == []


def _under(names: list[str], packages: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(n == p or n.startswith(p + ".") for p in packages)]


def test_the_live_machine_holds_only_the_backend() -> None:
    files = sorted(LIVE.glob("*.py"))
    assert len(files) >= 13
    found = {
        str(path.relative_to(ROOT)):
            _under(imported_modules(path.read_text(), _module_of(path)), LIVE_FORBIDDEN)
        for path in files
    }
    assert {path: bad for path, bad in found.items() if bad} == {}


def test_only_tests_import_the_test_support() -> None:
    found = {
        str(path.relative_to(ROOT)):
            _under(imported_modules(path.read_text(), _module_of(path)), (TESTING,))
        for path in sorted(SRC.rglob("*.py"))
        if not _module_of(path).startswith(TESTING)
    }
    assert {path: bad for path, bad in found.items() if bad} == {}
    assert (SRC / "testing" / "faults.py").exists()
