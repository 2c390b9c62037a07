"""The series' V3 throttling rules, the scale, and the failure feedback (pure functions)."""

from __future__ import annotations

import pytest

from kscand.core.throttle import (
    USEFUL_MIN_PAGES,
    ScanRate,
    decay_failures,
    failure_ratio_pct,
    next_scan_rate,
    scaled_period_ms,
    smooth_useful,
)

MiB, GiB = 1 << 20, 1 << 30
PERIODS = (600.0, 5000.0)
SIZES = (256 * MiB, 4 * GiB)
BUSY = USEFUL_MIN_PAGES  # the smallest count that is not "0"


def step(
    x: int, y: int, period: float = 2000.0, size: int = GiB, fratio: float = 0.0,
) -> ScanRate:
    return next_scan_rate(ScanRate(period, size), x, y, fratio, PERIODS, SIZES)


def test_nothing_then_nothing_slows_down_and_shrinks() -> None:
    rate = step(0, 0)
    assert rate.period_ms == pytest.approx(2300.0) and rate.size_bytes == 512 * MiB


def test_steady_work_speeds_up_and_grows() -> None:
    rate = step(BUSY, BUSY)
    assert rate.period_ms == pytest.approx(1700.0) and rate.size_bytes == 2 * GiB


def test_work_dried_up_backs_off_eightfold_same_size() -> None:
    assert step(BUSY, 0, period=600.0) == ScanRate(4800.0, GiB)


def test_work_appeared_eightfold_faster_full_size() -> None:
    assert step(0, BUSY, period=4800.0) == ScanRate(600.0, 4 * GiB)


def test_counts_under_256_are_zero() -> None:
    assert step(BUSY - 1, BUSY - 1) == step(0, 0)


def test_clamps() -> None:
    assert step(BUSY, 0, period=2000.0).period_ms == 5000.0  # 16 s clamped
    assert step(0, BUSY, period=2000.0).period_ms == 600.0  # 250 ms clamped
    assert step(0, 0, size=256 * MiB).size_bytes == 256 * MiB  # 128 MiB clamped
    assert step(BUSY, BUSY, size=4 * GiB).size_bytes == 4 * GiB  # 8 GiB clamped


def test_failure_feedback_stretches_the_period() -> None:
    assert failure_ratio_pct(75, 25) == 25.0
    assert failure_ratio_pct(0, 0) == 0.0
    # x 0.85 (steady) then x (1 + 25/10) = 3.5
    assert step(BUSY, BUSY, period=1000.0, fratio=25.0).period_ms == pytest.approx(2975.0)


def test_failure_counters_decay_every_1024_migrations() -> None:
    assert decay_failures(1000, 23) == (1000, 23)
    assert decay_failures(1000, 24) == (250, 6)


def test_smoothing() -> None:
    assert smooth_useful(0, 300) == 300
    assert smooth_useful(320, 10) == 30


def test_scale() -> None:
    assert scaled_period_ms(900.0, 1) == 900.0
    assert scaled_period_ms(900.0, 10) == 1800.0
    assert scaled_period_ms(900.0, 8) == pytest.approx(1600.0)
