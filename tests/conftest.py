"""Shared test helpers: `require` turns a missing real-kernel prerequisite into a skip,
or into a failure when CI=true (a skipped real-kernel test must not pass CI)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest


def in_ci() -> bool:
    """True when running under CI (the env var CI is "true")."""
    return os.environ.get("CI", "").lower() == "true"


def _missing(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"required under CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def require(condition: object, reason: str) -> None:
    """Skip the calling test (fail under CI=true) unless `condition` is truthy."""
    if not condition:
        _missing(reason)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Any]:
    """A daemon (tests/daemon_fakes.py) on a fake machine of two 32-page processes, once
    it promoted all 64 pages; stopped after the test. State dir: tmp_path / "s"."""
    from daemon_fakes import DaemonThread, FakeMachine, fast_config

    run = DaemonThread(fast_config(tmp_path / "s"), FakeMachine(nr_procs=2, nr_pages=32))
    try:
        run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 64)
        yield run
    finally:
        run.stop()
