"""kscand.live.u64file (run planning, batched reads, short reads) and page_idle word math."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fake_linux import write_u64s

from kscand.live.page_idle import group_words, young_from_words
from kscand.live.u64file import plan_runs, read_u64_at, read_u64_range


@pytest.fixture
def u64_file(tmp_path: Path) -> Iterator[int]:
    """A file of 1000 u64 entries, entry i = 1000 + i."""
    path = tmp_path / "u64"
    write_u64s(path, {i: 1000 + i for i in range(1000)})
    fd = os.open(path, os.O_RDONLY)
    yield fd
    os.close(fd)


def runs(index: list[int], gap: int) -> list[tuple[int, int]]:
    plan = plan_runs(np.array(index, dtype=np.int64), gap)
    return list(zip(plan.first.tolist(), plan.length.tolist(), strict=True))


def test_plan_runs_in_address_order() -> None:
    assert runs([5, 6, 7, 20, 21], 0) == [(5, 3), (20, 2)]
    assert runs([5, 6, 9, 20], 2) == [(5, 5), (20, 1)]  # 6 -> 9 steps over a gap of 2
    assert runs([9, 8, 7], 0) == [(9, 1), (8, 1), (7, 1)]  # descending: one run each
    assert runs([3, 3, 3, 4, 3], 0) == [(3, 2), (3, 1)]  # repeats (the zero page) share a run


def test_read_at_any_order_with_repeats(u64_file: int) -> None:
    index = np.array([7, 8, 3, 3, 500, 9, 999, 0], dtype=np.uint64)
    [(values, valid)] = read_u64_at([u64_file], index, max_gap=4)
    assert values.tolist() == [1000 + int(i) for i in index]
    assert valid.all()


def test_short_read_past_end_is_invalid_not_garbage(u64_file: int) -> None:
    index = np.array([998, 999, 1000, 1001, 5000, 2], dtype=np.uint64)
    [(values, valid)] = read_u64_at([u64_file], index, max_gap=8)
    assert valid.tolist() == [True, True, False, False, False, True]
    assert values.tolist() == [1998, 1999, 0, 0, 0, 1002]


def test_read_range_reports_entries_read(u64_file: int) -> None:
    values, nr_read = read_u64_range(u64_file, 990, 20)
    assert nr_read == 10
    assert values.tolist() == [1990 + i for i in range(10)] + [0] * 10


def test_group_words_and_masks() -> None:
    pfn = np.array([130, 64, 129, 64 * 7 + 63, 130], dtype=np.uint64)
    words, inverse, masks = group_words(pfn)
    assert words.tolist() == [1, 2, 7]
    assert words[inverse].tolist() == [2, 1, 2, 7, 2]
    assert masks.tolist() == [1, (1 << 1) | (1 << 2), 1 << 63]
    # Word 2 has pfn 129 idle (bit 1 set), pfn 130 accessed (bit 2 clear).
    values = np.array([0, 1 << 1, 1 << 63], dtype=np.uint64)
    assert young_from_words(values, inverse, pfn).tolist() == [True, True, False, False, True]
