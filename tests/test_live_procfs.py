"""kscand.live.procfs: stat, maps/smaps, pagemap and kpageflags decoding (pure functions)."""

from __future__ import annotations

import numpy as np
import pytest
from fake_linux import (
    ANON_LRU,
    PM_EXCLUSIVE,
    PM_FILE,
    PM_PRESENT,
    PM_SWAP,
    kpf,
    smaps_entry,
    stat_line,
)

from kscand.core.filters import vma_skip_reason
from kscand.core.stats import VmaSkip
from kscand.live.procfs import (
    PF_KTHREAD,
    ParseError,
    contiguous_runs,
    decode_pages,
    flags_from_perms,
    kpageflags_to_pageflags,
    pagemap_pfn,
    parse_maps,
    parse_maps_line,
    parse_smaps_vmflags,
    parse_stat,
    vaddr_range,
    vma_from_entry,
)
from kscand.machine import PageFlag, Vma, VmFlag


def vmas_of_smaps(text: str) -> list[Vma]:
    """The VMAs LinuxMachine.vmas() builds: maps entries, flags from smaps' VmFlags."""
    by_key = parse_smaps_vmflags(text)
    vmas = [vma_from_entry(e, by_key.get(e.key)) for e in parse_maps(text)]
    return sorted(vmas, key=lambda v: v.start)


def u64(values: list[int]) -> np.ndarray:
    return np.array(values, dtype=np.uint64)


# --- /proc/PID/stat ----------------------------------------------------------------------------


def test_stat_fields() -> None:
    stat = parse_stat(stat_line(4242, "redis-server", start_time=987654, ppid=7))
    assert (stat.pid, stat.comm, stat.state, stat.ppid, stat.start_time) == (
        4242, "redis-server", "S", 7, 987654,
    )
    assert not stat.is_kernel_thread


def test_stat_comm_with_parens_and_spaces_splits_at_last_paren() -> None:
    stat = parse_stat(stat_line(17, "a) b (c)) S 99", start_time=31337))
    assert stat.comm == "a) b (c)) S 99"
    assert stat.start_time == 31337
    assert stat.ppid == 1


def test_stat_kernel_thread_flag() -> None:
    assert parse_stat(stat_line(2, "kthreadd", flags=PF_KTHREAD | 0x40)).is_kernel_thread


@pytest.mark.parametrize(
    "text",
    ["", "12 no parens S 1", "x (comm) S 1 2 3", "12 (comm) S 1", "12 (comm) S one 2 3 4 5 6 7"
     " 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"],
)
def test_stat_malformed_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_stat(text)


# --- maps / smaps ------------------------------------------------------------------------------


def test_maps_line_with_path_containing_spaces() -> None:
    entry = parse_maps_line("7f00a000-7f00b000 r-xp 00001000 08:01 1234  /opt/my app/lib.so\n")
    assert entry is not None
    assert (entry.start, entry.end, entry.perms, entry.offset, entry.inode) == (
        0x7F00A000, 0x7F00B000, "r-xp", 0x1000, 1234,
    )
    assert entry.pathname == "/opt/my app/lib.so"


@pytest.mark.parametrize("line", ["", "garbage", "zz-10 rw-p 0 00:00 0", "2000-1000 rw-p 0 0:0 0"])
def test_maps_line_malformed_is_skipped(line: str) -> None:
    assert parse_maps_line(line) is None


def test_perms_to_flags() -> None:
    assert flags_from_perms("rw-p") == VmFlag.READ | VmFlag.WRITE
    assert flags_from_perms("r-xs") == VmFlag.READ | VmFlag.EXEC | VmFlag.SHARED
    assert flags_from_perms("---p") == VmFlag(0)


def test_smaps_vmflags_and_filter() -> None:
    """The seed's VMA filter expressed with smaps flags: each VMA gets its named reason."""
    text = "".join([
        smaps_entry(0x1000, 0x3000, "rw-p", "rd wr mr mw me ac"),  # anon: scanned
        smaps_entry(0x3000, 0x4000, "rw-s", "rd wr sh mr mw me io pf dd", dev="00:05",
                    inode=9, path="/dev/mem"),
        smaps_entry(0x4000, 0x5000, "rw-p", "rd wr mr mw me ht", inode=3,
                    path="/dev/hugepages/x"),
        smaps_entry(0x5000, 0x6000, "rw-s", "rd wr sh mr mw me mm", dev="00:05", inode=4,
                    path="/dev/dri/card0"),
        smaps_entry(0x6000, 0x8000, "r--p", "rd mr mw me", dev="08:01", inode=77,
                    path="/usr/lib/libc.so.6"),
        smaps_entry(0x8000, 0x9000, "---p", "mr mw me ac"),  # PROT_NONE guard
        smaps_entry(0x9000, 0xA000, "r-xp", "rd ex mr mw me de", path="[vdso]"),
        smaps_entry(0xA000, 0xB000, "rw-p", "rd wr mr mw me lo hg ac"),
    ])
    vmas = vmas_of_smaps(text)
    assert [v.start for v in vmas] == [0x1000, 0x3000, 0x4000, 0x5000, 0x6000, 0x8000, 0x9000,
                                       0xA000]
    reasons = [vma_skip_reason(v) for v in vmas]
    assert reasons == [
        None,
        VmaSkip.NOT_MIGRATABLE,
        VmaSkip.HUGETLB,
        VmaSkip.MIXEDMAP,
        VmaSkip.FILE_READONLY,
        VmaSkip.INACCESSIBLE,
        VmaSkip.NOT_MIGRATABLE,
        None,
    ]
    assert vmas[7].flags & VmFlag.LOCKED and vmas[7].flags & VmFlag.HUGEPAGE
    assert vmas[6].flags & VmFlag.SPECIAL and vmas[6].flags & VmFlag.DONTEXPAND
    assert vmas[4].name == "/usr/lib/libc.so.6" and vmas[4].flags & VmFlag.FILE


def test_smaps_unknown_and_missing_fields() -> None:
    text = (
        smaps_entry(0x1000, 0x2000, "rw-p", "rd wr zz qq xx", extra=("Bogus: 12 parsecs",))
        + smaps_entry(0x2000, 0x3000, "r--p", None, inode=5, path="/data")  # no VmFlags line
        + "not a line at all\n"
    )
    vmas = vmas_of_smaps(text)
    assert [(v.start, v.flags) for v in vmas] == [
        (0x1000, VmFlag.READ | VmFlag.WRITE),
        (0x2000, VmFlag.READ | VmFlag.FILE),  # from the perms string
    ]


def test_smaps_vmflags_by_key() -> None:
    text = smaps_entry(0x1000, 0x2000, "rw-p", "rd wr io") + smaps_entry(0x2000, 0x3000, "r--p",
                                                                         None)
    by_key = parse_smaps_vmflags(text)
    assert list(by_key.values()) == [VmFlag.READ | VmFlag.WRITE | VmFlag.IO]
    assert len(parse_maps(text)) == 2


# --- pagemap / kpageflags -------------------------------------------------------------------------


def test_pagemap_pfn_only_for_present_pages() -> None:
    entries = u64([PM_PRESENT | 0x1234, PM_SWAP | 0x55, 0, PM_PRESENT | ((1 << 55) - 1)])
    assert pagemap_pfn(entries).tolist() == [0x1234, 0, 0, (1 << 55) - 1]


def test_kpageflags_thp_head_and_tail() -> None:
    head = kpf("THP", "COMPOUND_HEAD", "LRU", "ANON")
    tail = kpf("THP", "COMPOUND_TAIL", "ANON")
    hugetlb_head = kpf("HUGE", "COMPOUND_HEAD")  # not a THP
    flags = kpageflags_to_pageflags(u64([head, tail, hugetlb_head]))
    assert flags[0] == PageFlag.THP_HEAD | PageFlag.LRU | PageFlag.ANON
    assert flags[1] == PageFlag.THP_TAIL | PageFlag.ANON
    assert flags[2] == PageFlag.HUGETLB


def test_decode_pages_flags() -> None:
    """Each PageFlag from its source bit; SHARED from exclusivity or kpagecount."""
    entries = u64([
        PM_PRESENT | PM_EXCLUSIVE | 10,  # private anon page
        PM_PRESENT | 11,  # anon, not exclusive: shared with a fork
        PM_PRESENT | PM_FILE | 12,  # file page, mapped twice
        PM_PRESENT | PM_FILE | PM_EXCLUSIVE | 13,  # file page of this process only
        PM_SWAP | 99,  # swapped out
        0,  # never touched
        PM_PRESENT | PM_EXCLUSIVE | 16,  # outside every memory block
        PM_PRESENT | 17,  # zero page
        PM_PRESENT | PM_EXCLUSIVE | 18,  # KSM + unevictable
    ])
    kflags = u64([ANON_LRU, ANON_LRU, kpf("LRU", "MMAP"), kpf("LRU", "MMAP"), 0, 0, ANON_LRU,
                  kpf("ZERO_PAGE", "MMAP"), kpf("KSM", "ANON", "UNEVICTABLE", "LRU")])
    kcount = u64([1, 1, 2, 1, 0, 0, 1, 0, 1])
    nid = np.array([1, 1, 0, 0, -1, -1, -1, 0, 1], dtype=np.int32)
    f = decode_pages(entries, kflags, kcount, nid)
    P = PageFlag
    assert f[0] == P.PRESENT | P.LRU | P.ANON
    assert f[1] == P.PRESENT | P.LRU | P.ANON | P.SHARED
    assert f[2] == P.PRESENT | P.LRU | P.SHARED
    assert f[3] == P.PRESENT | P.LRU
    assert f[4] == P.SWAPPED
    assert f[5] == 0
    assert f[6] == P.PRESENT | P.LRU | P.ANON | P.ZONE_DEVICE
    assert f[7] == P.PRESENT | P.ZERO
    assert f[8] == P.PRESENT | P.KSM | P.ANON | P.UNEVICTABLE | P.LRU


def test_vaddr_range() -> None:
    assert vaddr_range(0x10000, 0x13000).tolist() == [0x10000, 0x11000, 0x12000]
    assert vaddr_range(0x10000, 0x10000).size == 0


@pytest.mark.parametrize(
    ("index", "gap", "runs"),
    [
        ([], 0, []),
        ([5], 0, [(5, 1)]),
        ([1, 2, 3, 7, 8, 20], 0, [(1, 3), (7, 2), (20, 1)]),
        ([1, 2, 3, 7, 8, 20], 3, [(1, 8), (20, 1)]),
        ([1, 2, 3, 7, 8, 20], 11, [(1, 20)]),
    ],
)
def test_contiguous_runs(index: list[int], gap: int, runs: list[tuple[int, int]]) -> None:
    first, length = contiguous_runs(u64(index), gap)
    assert list(zip(first.tolist(), length.tolist(), strict=True)) == runs
