"""Shared test helpers: `require` turns a missing real-kernel prerequisite into a skip,
or into a failure when CI=true (a skipped real-kernel test must not pass CI)."""

from __future__ import annotations

import os
from typing import NoReturn

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
