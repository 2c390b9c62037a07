"""Parsing of human-readable sizes and durations in config and scenario files."""

from __future__ import annotations

import re

from kscand.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size_bytes(value: object, field: str) -> int:
    """Bytes from an int or a string such as "4GiB", "512 MiB", "1.5G" (binary units)."""
    if isinstance(value, bool):
        raise ConfigError(f"{field}: expected a size, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(f"{field}: size must not be negative, got {value}")
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if not isinstance(value, str):
        raise ConfigError(f"{field}: expected a size such as \"4GiB\", got {value!r}")
    match = _SIZE_RE.match(value)
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ConfigError(f"{field}: cannot parse size {value!r} (use e.g. \"4GiB\", \"512MiB\")")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_bytes(nbytes: float) -> str:
    """A short human-readable size: 1.5 GiB, 512 MiB, 4 KiB."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(nbytes) >= scale:
            value = nbytes / scale
            return f"{value:.0f} {unit}" if value.is_integer() else f"{value:.1f} {unit}"
    return f"{nbytes:.0f} B"
