"""Field readers for the scenario file: each checks one TOML value and names the field
(`where.key`) in its one-line ConfigError."""

from __future__ import annotations

import math
from typing import Any

from kscand.errors import ConfigError


def show_key(key: str) -> str:
    """A key as an error shows it: as is when it is a plain name, else quoted and escaped."""
    return key if key.isidentifier() else repr(key)


def read_table(raw: dict[str, Any], where: str, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed))
        raise ConfigError(f"{where}.{show_key(unknown[0])}: unknown key (known: {known})")
    return raw


def read_num(raw: dict[str, Any], key: str, where: str, default: float | None = None,
         lo: float | None = None, hi: float | None = None) -> float:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}: missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}.{key}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}.{key}: expected a finite number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}.{key}: {value} is out of range [{lo}, {hi}]")
    return float(value)


def read_int(raw: dict[str, Any], key: str, where: str, default: int | None = None,
         lo: int | None = None, hi: int | None = None) -> int:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}: missing")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}: expected an integer, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{where}.{key}: {value} is out of range [{lo}, {hi}]")
    return value


def read_str(raw: dict[str, Any], key: str, where: str, default: str | None = None,
         choices: tuple[str, ...] | None = None) -> str:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}: missing")
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{key}: expected a string, got {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(f"{where}.{key}: {value!r} is not one of {', '.join(choices)}")
    return value


def read_bool(raw: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}.{key}: expected true or false, got {value!r}")
    return value


def read_list(raw: dict[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key)
    if value is None:
        raise ConfigError(f"{where}{key}: missing (at least one entry)")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}{key}: expected a non-empty array of tables")
    return value
