"""The seed's VMA and page filters."""

from __future__ import annotations

import numpy as np

from kscand.core.filters import page_skip_codes, vma_skip_reason
from kscand.core.stats import PageSkip, VmaSkip
from kscand.machine import PageFlag, Vma, VmFlag

RW = VmFlag.READ | VmFlag.WRITE


def vma(flags: VmFlag) -> Vma:
    return Vma(0x1000, 0x2000, flags)


def test_vma_filter_reasons() -> None:
    assert vma_skip_reason(vma(RW)) is None
    assert vma_skip_reason(vma(RW | VmFlag.FILE)) is None  # writable file mapping: scanned
    assert vma_skip_reason(vma(RW | VmFlag.IO)) is VmaSkip.NOT_MIGRATABLE
    assert vma_skip_reason(vma(RW | VmFlag.PFNMAP)) is VmaSkip.NOT_MIGRATABLE
    assert vma_skip_reason(vma(RW | VmFlag.HUGETLB)) is VmaSkip.HUGETLB
    assert vma_skip_reason(vma(RW | VmFlag.MIXEDMAP)) is VmaSkip.MIXEDMAP
    assert vma_skip_reason(vma(VmFlag.READ | VmFlag.FILE)) is VmaSkip.FILE_READONLY
    assert vma_skip_reason(vma(VmFlag.READ | VmFlag.EXEC | VmFlag.FILE)) is VmaSkip.FILE_READONLY
    assert vma_skip_reason(vma(VmFlag(0))) is VmaSkip.INACCESSIBLE


def test_page_filter_first_match_order() -> None:
    P, L = PageFlag.PRESENT, PageFlag.LRU
    flags = np.array(
        [
            P | L,
            P | L | PageFlag.THP_HEAD,
            P | L | PageFlag.THP_TAIL,
            0,
            L,  # not present wins over everything
            P | PageFlag.ZERO,
            P | L | PageFlag.HUGETLB,
            P | L | PageFlag.ZONE_DEVICE,
            P | L | PageFlag.SHARED,
            P | L | PageFlag.KSM,
            P | L | PageFlag.UNEVICTABLE,
            P,
            P | L | PageFlag.SHARED | PageFlag.UNEVICTABLE,  # shared is tested first
        ],
        dtype=np.uint32,
    )
    expected = [
        PageSkip.ELIGIBLE,
        PageSkip.ELIGIBLE_THP,
        PageSkip.THP_TAIL,
        PageSkip.NOT_PRESENT,
        PageSkip.NOT_PRESENT,
        PageSkip.ZERO_PAGE,
        PageSkip.HUGETLB,
        PageSkip.ZONE_DEVICE,
        PageSkip.SHARED,
        PageSkip.SHARED,
        PageSkip.UNEVICTABLE,
        PageSkip.NOT_LRU,
        PageSkip.SHARED,
    ]
    assert page_skip_codes(flags).tolist() == [int(e) for e in expected]


def test_page_filter_ignores_unrelated_high_bits() -> None:
    flags = np.array([PageFlag.PRESENT | PageFlag.LRU | PageFlag.ANON | PageFlag.SWAPPED],
                     dtype=np.uint32)
    assert page_skip_codes(flags).tolist() == [PageSkip.ELIGIBLE]


def test_folio_sizes_count_the_tails_of_each_head() -> None:
    from kscand.core.filters import folio_sizes

    P, L, H, T = PageFlag.PRESENT, PageFlag.LRU, PageFlag.THP_HEAD, PageFlag.THP_TAIL
    flags = np.array([P | L, P | L | H, P | L | T, P | L | T, P | L | T,  # a 16 KiB mTHP
                      P | L | H, *[P | L | T] * 511,  # a PMD THP
                      0, P | L | H, P | L | T], dtype=np.uint32)  # cut by the range end
    sizes = folio_sizes(flags)
    assert sizes[:2].tolist() == [1, 4]
    assert sizes[5] == 512
    assert sizes[-2:].tolist() == [2, 1]
