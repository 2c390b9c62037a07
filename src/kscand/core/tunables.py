"""kscand's tunables: one validated dataclass, the analog of /sys/kernel/mm/kscand/.

Defaults and ranges follow the kscand RFC series where it has them; each field
carries its unit, range and a one-line description (the README's tunables
table and `kscand tune` are built from this metadata).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from kscand.errors import ConfigError
from kscand.machine import PAGE_SIZE
from kscand.units import parse_size_bytes
from kscand.validate import check_knob as _check_range

GiB = 1 << 30
MiB = 1 << 20


def _knob(default: Any, lo: float | None, hi: float | None, unit: str, doc: str) -> Any:
    return field(default=default, metadata={"min": lo, "max": hi, "unit": unit, "doc": doc})


@dataclass(frozen=True, slots=True)
class Tunables:
    """Every knob of the scanner and the migrator, validated on construction."""

    scan_enabled: bool = _knob(True, None, None, "bool", "scan at all (the series' scan_enabled)")
    scan_sleep_ms: int = _knob(
        20, 0, 60_000, "ms", "pause between two scan passes (series default 20)"
    )
    # 4 GiB (the series' 1 GiB, clamped to its 4 GiB max by the first visit that finds
    # work): a new process's first pass is its reaction time. Measured at 5ad9a3b+ with
    # kscand sim: acc-weighted hotset 67.5 -> 69.8 %, zipf-0.9 78.4 -> 79.4, zipf-1.2
    # 88.5 -> 91.5, gups 78.6 -> 81.5, graph-powerlaw 60.2 -> 63.4, moving-hotset
    # 72.6 -> 73.5, none lower (before a pass's accessed pages could qualify by repeated
    # scans, many-small fell from 71 to 62 % with it).
    scan_size_bytes: int = _knob(
        4 * GiB,
        2 * MiB,
        1 << 40,
        "bytes",
        "VMA bytes a new process's visits cover before the scan moves to the next process "
        "(adapted per process after; series: 1 GiB)",
    )
    scan_size_min_bytes: int = _knob(
        256 * MiB, 2 * MiB, 1 << 40, "bytes", "lower clamp of a process's adaptive scan size"
    )
    scan_size_max_bytes: int = _knob(
        4 * GiB, 2 * MiB, 1 << 40, "bytes", "upper clamp of a process's adaptive scan size"
    )
    mm_scan_period_ms: int = _knob(
        2000, 1, 600_000, "ms", "a new process's scan period (series default 2000)"
    )
    scan_period_min_ms: int = _knob(
        600, 1, 600_000, "ms", "lower clamp of a process's adaptive scan period"
    )
    scan_period_max_ms: int = _knob(
        5000, 1, 600_000, "ms", "upper clamp of a process's adaptive scan period"
    )
    scan_delay_ms: int = _knob(
        1000, 0, 600_000, "ms", "a new process is first scanned this long after it appears "
        "(numa_balancing_scan_delay_ms is 1000; the series used 2000)"
    )
    mms_to_scan: int = _knob(4096, 1, 1_000_000, "processes", "processes visited per pass")
    rank_hotness: bool = _knob(
        True, None, None, "bool", "rank pages by estimated access rate and promote those whose "
        "heat is at or above the threshold at which they fit the top tier; false = the series' "
        "rule (hot_history_depth consecutive accessed scans, first come first served)"
    )
    reprobe_delay_ms: int = _knob(
        100, 0, 10_000, "ms", "test an accessed page again this long after its scan cleared "
        "the bit, to rank pages touched in every scan; 0 = no re-probe"
    )
    exchange_enabled: bool = _knob(
        True, None, None, "bool", "when a top-tier node is short, demote its coldest pages to "
        "the slow tier to make room for candidates hotter by exchange_margin_bins (rank mode)"
    )
    exchange_margin_bins: int = _knob(
        3, 0, 32, "bins", "how much hotter a candidate (its lower confidence bound) must be "
        "than the estimate of the page it replaces (3 bins = twice the access rate)"
    )
    hot_history_depth: int = _knob(
        2,
        1,
        8,
        "scans",
        "series rule (rank_hotness = false): consecutive scans a page must be found accessed "
        "in to be hot (2 = the series' second access; 1 = first touch promotes)",
    )
    promote_on_reprobe: bool = _knob(
        True, None, None, "bool", "rank mode on page-exact sources: promote a slow-tier page "
        "only once a re-probe found it accessed (touched within reprobe_delay_ms of a clear: "
        "about 1/delay accesses/s or more); false = on the scan's evidence too, which fills "
        "free room sooner with warm pages at many more moves"
    )
    promote_young_scans: int = _knob(
        0, 0, 8, "scans", "rank mode: consecutive scans a slow-tier page must be found accessed "
        "in before it may be promoted; 0 = the access source's: 1 where Accessed bits are "
        "page-exact (page_idle, the simulator), 3 with DAMON, whose region edges straddle hot "
        "and cold pages for a snapshot or two"
    )
    target_node: int = _knob(
        -1, -1, 1023, "nid", "promotion target; -1 = the first top-tier node (must be top tier)"
    )
    target_free_min_pct: float = _knob(
        2.0, 0.0, 50.0, "%", "never fill the target node above 100 - this percent of its capacity"
    )
    migrate_queue_max: int = _knob(
        131_072,
        1,
        1 << 24,
        "folios",
        "cap on queued promotion candidates over all processes; overflow is counted and dropped",
    )
    migrate_batch_folios: int = _knob(
        512, 1, 65_536, "folios", "folios per move_pages(2) call"
    )
    promote_rate_limit_mbps: int = _knob(
        65_536, 1, 1 << 30, "MB/s", "promotion rate limit (numa_balancing's default is 65536)"
    )
    default_scale: int = _knob(
        8, 0, 10, "scale", "per-process scale when no rule sets one: period x (1 + (scale-1)/9); "
        "0 = never scan"
    )
    demote_watermark_pct: float = _knob(
        0.0, 0.0, 50.0, "%", "proactive demotion: demote idle top-tier pages while a top-tier "
        "node's free memory is under this percent of its capacity (exchange, which demotes only "
        "for hotter candidates, is separate); 0 = off"
    )
    demote_idle_scans: int = _knob(
        4, 1, 8, "scans", "consecutive scans a top-tier page must be idle in to be demoted"
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            _check_range(f, getattr(self, f.name), f.name)
        for name in ("scan_size_bytes", "scan_size_min_bytes", "scan_size_max_bytes"):
            if getattr(self, name) % PAGE_SIZE:
                raise ConfigError(
                    f"{name}: must be a multiple of the page size ({PAGE_SIZE}), "
                    f"got {getattr(self, name)}"
                )
        if self.scan_size_min_bytes > self.scan_size_max_bytes:
            raise ConfigError("scan_size_min_bytes: must not exceed scan_size_max_bytes")
        if self.scan_period_min_ms > self.scan_period_max_ms:
            raise ConfigError("scan_period_min_ms: must not exceed scan_period_max_ms")

    def replace(self, **changes: Any) -> Tunables:
        """A copy with changes applied and validated."""
        return tunables_from_mapping({**dataclasses.asdict(self), **changes}, where="")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def tunable_fields() -> tuple[dataclasses.Field[Any], ...]:
    """The dataclass fields of Tunables, with their metadata."""
    return dataclasses.fields(Tunables)


def coerce_tunable(name: str, value: Any, where: str) -> Any:
    """One tunable value from config text: sizes may be strings like "1GiB"."""
    fields = {f.name: f for f in tunable_fields()}
    if name not in fields:
        raise ConfigError(f"{where}{name}: unknown tunable (known: {', '.join(sorted(fields))})")
    f = fields[name]
    if f.metadata["unit"] == "bytes":
        value = parse_size_bytes(value, f"{where}{name}")
    elif f.type in ("float", float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    _check_range(f, value, f"{where}{name}")
    return value


def tunables_from_mapping(mapping: dict[str, Any], where: str = "tunables.") -> Tunables:
    """Tunables from a TOML table; unknown keys and bad values raise ConfigError."""
    values = {name: coerce_tunable(name, value, where) for name, value in mapping.items()}
    try:
        return Tunables(**values)
    except ConfigError as err:
        raise ConfigError(f"{where}{err}") from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """NAME=VALUE from the command line, typed like the tunable (for `kscand tune`)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ConfigError(f"{text!r}: expected NAME=VALUE")
    fields = {f.name: f for f in tunable_fields()}
    if name not in fields:
        raise ConfigError(f"{name}: unknown tunable (known: {', '.join(sorted(fields))})")
    raw = raw.strip()
    unit = fields[name].metadata["unit"]
    value: Any
    if unit == "bool":
        if raw.lower() not in ("0", "1", "true", "false", "on", "off"):
            raise ConfigError(f"{name}: expected true or false, got {raw!r}")
        value = raw.lower() in ("1", "true", "on")
    elif unit == "bytes":
        value = raw
    else:
        try:
            value = int(raw) if fields[name].type in ("int", int) else float(raw)
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    return name, coerce_tunable(name, value, "")
