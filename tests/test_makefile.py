"""The Makefile on a fresh checkout (no .venv): `make demo` installs the package only,
`make test` the test toolchain too. `make -n` prints the recipes without running them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _dry_run(tmp_path: Path, target: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    # A fresh top-level make: under `make test` the parent's MAKEFLAGS/MAKELEVEL would
    # make this one print "make[1]: Entering directory" lines among the recipes.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    proc = subprocess.run(["make", "--no-print-directory", "-n", target], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=True, env=env)
    return proc.stdout.splitlines()


def test_make_demo_installs_only_the_package(tmp_path: Path) -> None:
    lines = _dry_run(tmp_path, "demo")
    installs = [line for line in lines if "pip install" in line]
    assert installs == [".venv/bin/python -m pip install -q -e ."]
    assert lines[-1] == ".venv/bin/kscand sim hotset"


def test_make_test_installs_the_test_extra_and_runs_every_test(tmp_path: Path) -> None:
    lines = _dry_run(tmp_path, "test")
    installs = [line for line in lines if "pip install" in line and "upgrade" not in line]
    assert installs == [".venv/bin/python -m pip install -q -e .",
                        ".venv/bin/python -m pip install -q -e '.[test]'"]
    assert lines[-1] == ".venv/bin/python -m pytest -q"
