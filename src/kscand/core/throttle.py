"""Per-process scan period and scan size throttling: the kscand series' V3 rules, pure.

After each scan of a process, X is the number of useful slow-tier pages (the
accessed pages on slow-tier nodes) its previous scan found and Y the number
this scan found, smoothed as Y = Y_old / 16 + new. Totals under 256 count
as 0. Then:

    X = 0, Y = 0: nothing to do there      period x 1.15, size / 2
    X > 0, Y > 0: steady work              period x 0.85, size x 2
    X > 0, Y = 0: the work dried up        period x 8,    size unchanged
    X = 0, Y > 0: work appeared            period / 8,    size = max

The period is then stretched by migration failures (x (1 + fratio / 10),
fratio = 100 x failed / (succeeded + failed)) and clamped to
[scan_period_min_ms, scan_period_max_ms]; the size to
[scan_size_min_bytes, scan_size_max_bytes]. The per-process scale (the
series' prctl, 0..10) stretches the period once more:
period + period x (scale - 1) / 9; scale 0 never scans.
"""

from __future__ import annotations

from dataclasses import dataclass

from kscand.machine import PMD_SIZE

USEFUL_MIN_PAGES = 256  # totals under this count as 0 (the series' ignore threshold)
SMOOTH_SHIFT = 4  # Y = Y_old / 16 + new
FAILURE_DECAY_EVERY = 1024  # migrations between two decays of the failure counters
FAILURE_DECAY_SHIFT = 2  # the decay: counters >> 2
SCALE_MAX = 10


@dataclass(frozen=True, slots=True)
class ScanRate:
    """How often and how much of one process to scan."""

    period_ms: float
    size_bytes: int


def smooth_useful(prev_smoothed: int, new: int) -> int:
    """The smoothed count of useful pages: prev / 16 + new."""
    return (prev_smoothed >> SMOOTH_SHIFT) + new


def failure_ratio_pct(succeeded: int, failed: int) -> float:
    """fratio: percent of recent migrations that failed (0 when there were none)."""
    total = succeeded + failed
    return 100.0 * failed / total if total else 0.0


def clamp(value: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, value))


def next_scan_rate(
    rate: ScanRate,
    prev_useful: int,
    useful: int,
    fratio_pct: float,
    period_ms_range: tuple[float, float],
    size_range: tuple[int, int],
) -> ScanRate:
    """The next period and size of a process after a scan (the four cases, feedback, clamps)."""
    seen_before = prev_useful >= USEFUL_MIN_PAGES
    seen_now = useful >= USEFUL_MIN_PAGES
    period, size = rate.period_ms, rate.size_bytes
    size_max = size_range[1]
    if not seen_before and not seen_now:
        period, size = period * 1.15, size // 2
    elif seen_before and seen_now:
        period, size = period * 0.85, size * 2
    elif seen_before:
        period = period * 8
    else:
        period, size = period / 8, size_max
    period *= 1.0 + fratio_pct / 10.0
    size = int(clamp(size, *size_range))
    size -= size % PMD_SIZE
    return ScanRate(clamp(period, *period_ms_range), max(size, PMD_SIZE))


def work_appeared(pass_useful_smoothed: int, this_pass_so_far: int) -> bool:
    """The last passes found no work and the current pass already has (X = 0, Y > 0)."""
    return pass_useful_smoothed < USEFUL_MIN_PAGES <= this_pass_so_far


def scaled_period_ms(period_ms: float, scale: int) -> float:
    """The period stretched by the per-process scale (1 = as is, 10 = twice as long)."""
    return period_ms + period_ms * (scale - 1) / 9


def decay_failures(succeeded: int, failed: int) -> tuple[int, int]:
    """Age the failure-feedback counters once FAILURE_DECAY_EVERY migrations accumulated."""
    if succeeded + failed < FAILURE_DECAY_EVERY:
        return succeeded, failed
    return succeeded >> FAILURE_DECAY_SHIFT, failed >> FAILURE_DECAY_SHIFT
