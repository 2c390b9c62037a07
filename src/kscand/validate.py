"""The one validation toolkit of kscand's input: the config file (kscand.config), the
scenario file (kscand.sim.scenario) and the tunables (kscand.core.tunables).

Every check takes a value and `where`, the dotted name of the field it came from
(``process[1].scale``, ``nodes[0].capacity``), and returns the typed value or
raises ConfigError with one line that starts with that name, so the CLI prints it
as is. Three shapes, over the same checks:

- value checks, ``expect_*(value, where, ...)``: one value;
- checkers, ``Check`` = (value, where) -> typed value, built by ``int_in``,
  ``one_of``, ``list_of``, ``unique`` and dispatched per key by ``check_fields``
  (the config's tables);
- readers, ``read_*(table, key, where, default, ...)``: a key of a table with its
  default, named ``where.key`` (the scenario's tables);

and ``check_knob`` for a dataclass field that carries its range and unit in its
metadata (the tunables). Keys are shown by ``show_key``; unknown ones are named
by ``unknown_key``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Collection, Iterable
from typing import Any, TypeVar

from kscand.errors import ConfigError

T = TypeVar("T")
Check = Callable[[Any, str], T]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


# --- keys and tables -----------------------------------------------------------------


def show_key(key: str) -> str:
    """A key as an error shows it: as is when TOML could write it bare (letters, digits,
    _ and -), else quoted and escaped (a quoted TOML key may hold any character; the
    message stays one line)."""
    return key if _BARE_KEY.fullmatch(key) else repr(key)


def unknown_key(where: str, key: str, known: Iterable[str], noun: str = "key") -> ConfigError:
    """The error for key, not one of known, in the table at where ("" at the top)."""
    name = f"{where}.{show_key(key)}" if where else show_key(key)
    return ConfigError(f"{name}: unknown {noun} (known: {', '.join(sorted(known))})")


def expect_table(value: Any, where: str, what: str = "a table") -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected {what}, got {type(value).__name__}")
    return value


def check_keys(
    table: dict[str, Any], where: str, known: Collection[str], noun: str = "key"
) -> dict[str, Any]:
    """table, when every key is known; else the error names the first unknown, sorted."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise unknown_key(where, unknown[0], known, noun)
    return table


def check_fields(
    table: dict[str, Any], where: str, fields: dict[str, Check[Any]], noun: str = "field"
) -> dict[str, Any]:
    """The checked values of one table, in its order; an unknown key is an error."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        check = fields.get(key)
        if check is None:
            raise unknown_key(where, key, fields, noun)
        out[key] = check(value, f"{where}.{key}")
    return out


# --- values ----------------------------------------------------------------------------


def expect_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def expect_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def expect_choice(value: Any, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def expect_integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def expect_number(value: Any, where: str) -> int | float:
    """An int or a float (never a bool), possibly infinite or NaN: see expect_finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    return value


def expect_finite(value: int | float, where: str) -> int | float:
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value!r}")
    return value


def expect_range(
    value: int | float, where: str, lo: float | None, hi: float | None, unit: str | None = None
) -> None:
    """lo <= value <= hi (a None bound is open); the message names the unit when given."""
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        shown_unit = f" ({unit})" if unit else ""
        raise ConfigError(f"{where}: {value} is out of range [{lo}, {hi}]{shown_unit}")


def expect_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    return value


# --- checkers ----------------------------------------------------------------------------


def int_in(lo: int, hi: int) -> Check[int]:
    def check(value: Any, where: str) -> int:
        number = expect_integer(value, where)
        expect_range(number, where, lo, hi)
        return number

    return check


def one_of(choices: tuple[str, ...]) -> Check[str]:
    def check(value: Any, where: str) -> str:
        return expect_choice(value, where, choices)

    return check


def list_of(item: Check[T]) -> Check[tuple[T, ...]]:
    def check(value: Any, where: str) -> tuple[T, ...]:
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(expect_list(value, where)))

    return check


def unique(check: Check[tuple[T, ...]]) -> Check[tuple[T, ...]]:
    def checked(value: Any, where: str) -> tuple[T, ...]:
        items = check(value, where)
        repeated: set[Any] = {x for x in items if items.count(x) > 1}
        dups = sorted(repeated)
        if dups:
            raise ConfigError(f"{where}: listed more than once: {', '.join(map(str, dups))}")
        return items

    return checked


# --- readers: a key of a table, with its default -------------------------------------------


def read_table(raw: Any, where: str, allowed: Collection[str]) -> dict[str, Any]:
    return check_keys(expect_table(raw, where), where, allowed)


def _value_of(raw: dict[str, Any], key: str, where: str, default: Any) -> Any:
    value = raw.get(key, default)
    if value is None:
        raise ConfigError(f"{where}.{key}: missing")
    return value


def read_num(raw: dict[str, Any], key: str, where: str, default: float | None = None,
             lo: float | None = None, hi: float | None = None) -> float:
    name = f"{where}.{key}"
    value = expect_finite(expect_number(_value_of(raw, key, where, default), name), name)
    expect_range(value, name, lo, hi)
    return float(value)


def read_int(raw: dict[str, Any], key: str, where: str, default: int | None = None,
             lo: int | None = None, hi: int | None = None) -> int:
    name = f"{where}.{key}"
    value = expect_integer(_value_of(raw, key, where, default), name)
    expect_range(value, name, lo, hi)
    return value


def read_str(raw: dict[str, Any], key: str, where: str, default: str | None = None,
             choices: tuple[str, ...] | None = None) -> str:
    name = f"{where}.{key}"
    value = expect_str(_value_of(raw, key, where, default), name)
    return value if choices is None else expect_choice(value, name, choices)


def read_bool(raw: dict[str, Any], key: str, where: str, default: bool) -> bool:
    return expect_bool(raw.get(key, default), f"{where}.{key}")


def read_list(raw: dict[str, Any], key: str, where: str) -> list[Any]:
    """A non-empty array of tables; where is a prefix ("" at the top, "processes[0].")."""
    value = raw.get(key)
    if value is None:
        raise ConfigError(f"{where}{key}: missing (at least one entry)")
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}{key}: expected a non-empty array of tables")
    return value


# --- knobs: a dataclass field with its range and unit in its metadata ----------------------


def check_knob(f: dataclasses.Field[Any], value: Any, where: str) -> None:
    """value for field f, whose metadata holds "min", "max" (None: open) and "unit"
    ("bool" for a flag); an int-typed field takes only integers."""
    meta = f.metadata
    if meta["unit"] == "bool":
        expect_bool(value, where)
        return
    expect_number(value, where)
    if f.type in ("int", int):
        expect_integer(value, where)
    expect_finite(value, where)
    expect_range(value, where, meta["min"], meta["max"], meta["unit"])
