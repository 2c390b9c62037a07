"""The reader's fast paths against the plain ones: table decode of kpageflags and pagemap
words against the masked decode it replaced (random words, every bit), and PAGEMAP_SCAN
against the plain pagemap read on this host's real /proc (skipped where the ioctl or
root is missing; fails under CI=true)."""

from __future__ import annotations

import errno
import mmap
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from fake_linux import write_u64s

from kscand.live import LinuxMachine, ProcessSelection
from kscand.live.malloc import keep_freed_arrays
from kscand.live.pagemap_scan import PagemapReader, PagemapScanner
from kscand.live.procfs import (
    KPF_ANON,
    KPF_COMPOUND_HEAD,
    KPF_COMPOUND_TAIL,
    KPF_HUGE,
    KPF_KSM,
    KPF_LRU,
    KPF_NOPAGE,
    KPF_THP,
    KPF_UNEVICTABLE,
    KPF_ZERO_PAGE,
    PM_PRESENT,
    PM_SWAP,
    decode_pages,
    kpageflags_to_pageflags,
    pagemap_flags,
    shared_mask,
)
from kscand.live.u64file import ReadBuffer, read_u64_range
from kscand.machine import PAGE_SIZE, PageFlag, U32Array, U64Array

# --- the masked decode the tables replaced, kept here as the reference -------------------------

_DIRECT = ((KPF_UNEVICTABLE, PageFlag.UNEVICTABLE), (KPF_LRU, PageFlag.LRU),
           (KPF_HUGE, PageFlag.HUGETLB), (KPF_KSM, PageFlag.KSM),
           (KPF_ZERO_PAGE, PageFlag.ZERO), (KPF_ANON, PageFlag.ANON),
           (KPF_NOPAGE, PageFlag.ZONE_DEVICE))


def _bit(n: int) -> np.uint64:
    return np.uint64(1 << n)


def masked_kpageflags(kflags: U64Array) -> U32Array:
    out = np.zeros(kflags.shape, dtype=np.uint32)
    for bit, flag in _DIRECT:
        out[(kflags & _bit(bit)) != 0] |= np.uint32(flag)
    thp = (kflags & _bit(KPF_THP)) != 0
    out[thp & ((kflags & _bit(KPF_COMPOUND_HEAD)) != 0)] |= np.uint32(PageFlag.THP_HEAD)
    out[thp & ((kflags & _bit(KPF_COMPOUND_TAIL)) != 0)] |= np.uint32(PageFlag.THP_TAIL)
    return out


def masked_pagemap_flags(entries: U64Array) -> U32Array:
    flags = np.zeros(entries.shape, dtype=np.uint32)
    flags[(entries & PM_PRESENT) != 0] |= np.uint32(PageFlag.PRESENT)
    flags[(entries & PM_SWAP) != 0] |= np.uint32(PageFlag.SWAPPED)
    return flags


def masked_decode(entries: U64Array, kflags: U64Array, kcount: U64Array,
                  nid: np.ndarray) -> U32Array:
    flags = masked_pagemap_flags(entries)
    present = (flags & np.uint32(PageFlag.PRESENT)) != 0
    page = masked_kpageflags(kflags)
    page[shared_mask(entries, kflags, kcount)] |= np.uint32(PageFlag.SHARED)
    page[nid < 0] |= np.uint32(PageFlag.ZONE_DEVICE)
    flags |= np.where(present, page, np.uint32(0)).astype(np.uint32)
    return flags


def random_words(rng: np.random.Generator, n: int) -> U64Array:
    """Uniform 64-bit words, plus each single bit and all ones / zero."""
    words = rng.integers(0, 1 << 64, size=n, dtype=np.uint64, endpoint=False)
    singles = np.uint64(1) << np.arange(64, dtype=np.uint64)
    return np.concatenate((words, singles, np.array([0, (1 << 64) - 1], dtype=np.uint64)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kpageflags_tables_equal_the_masked_decode(seed: int) -> None:
    kflags = random_words(np.random.default_rng(seed), 200_000)
    assert np.array_equal(kpageflags_to_pageflags(kflags), masked_kpageflags(kflags))
    # Sparse words too: the flags' interactions (THP with HEAD/TAIL) at realistic density.
    sparse = kflags & random_words(np.random.default_rng(seed + 10), 200_000)
    assert np.array_equal(kpageflags_to_pageflags(sparse), masked_kpageflags(sparse))


def test_every_kpageflags_bit_subset_of_the_decoded_ones() -> None:
    """All 2^13 combinations of the bits the decode reads, the others set at random."""
    bits = [KPF_LRU, KPF_ANON, KPF_COMPOUND_HEAD, KPF_COMPOUND_TAIL, KPF_HUGE, KPF_UNEVICTABLE,
            KPF_NOPAGE, KPF_KSM, KPF_THP, KPF_ZERO_PAGE, 0, 31, 63]
    combo = np.arange(1 << len(bits), dtype=np.uint64)
    words = np.zeros(combo.shape, dtype=np.uint64)
    for i, bit in enumerate(bits):
        words |= ((combo >> np.uint64(i)) & np.uint64(1)) << np.uint64(bit)
    assert np.array_equal(kpageflags_to_pageflags(words), masked_kpageflags(words))


@pytest.mark.parametrize("seed", [3, 4])
def test_decode_pages_equals_the_masked_decode(seed: int) -> None:
    rng = np.random.default_rng(seed)
    entries = random_words(rng, 100_000)
    n = entries.size
    kflags = random_words(rng, n - 66)
    kcount = rng.integers(0, 4, size=n, dtype=np.uint64)
    nid = rng.integers(-1, 3, size=n, dtype=np.int32)
    assert np.array_equal(pagemap_flags(entries), masked_pagemap_flags(entries))
    assert np.array_equal(decode_pages(entries, kflags, kcount, nid),
                          masked_decode(entries, kflags, kcount, nid))


def test_read_buffer_reuses_and_caps() -> None:
    buf = ReadBuffer(max_entries=1000)
    a = buf.take(100)
    assert buf.take(50).ctypes.data == a.ctypes.data  # kept, not reallocated
    assert buf.take(1000).size == 1000
    big = buf.take(5000)  # past the cap: its own array, not kept
    assert big.size == 5000 and buf.take(10).ctypes.data != big.ctypes.data


def test_malloc_thresholds_are_set_on_glibc() -> None:
    reason = keep_freed_arrays()
    require(reason == "", f"glibc mallopt not available: {reason}")


# --- PAGEMAP_SCAN against the plain read on this host ----------------------------------------

NR_PAGES = 4096


@pytest.fixture
def sparse_buffer() -> Iterator[int]:
    """NR_PAGES private pages: every third touched, one run of 512 touched, a run read-only
    touched (the zero page), the rest never touched."""
    buf = mmap.mmap(-1, NR_PAGES * PAGE_SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    arr = np.frombuffer(buf, dtype=np.uint8)
    arr[: 1024 * PAGE_SIZE : 3 * PAGE_SIZE] = 1
    arr[2048 * PAGE_SIZE : 2560 * PAGE_SIZE : PAGE_SIZE] = 2
    assert int(arr[3000 * PAGE_SIZE : 3100 * PAGE_SIZE : PAGE_SIZE].sum()) == 0  # read: zero page
    yield int(arr.ctypes.data)
    del arr


def scanner_or_skip(fd: int, base: int) -> PagemapScanner:
    scanner = PagemapScanner(regions_per_call=16)  # small: the continuation path is taken
    try:
        scanner.regions(fd, base, base + PAGE_SIZE)
    except OSError as err:
        require(err.errno not in (errno.ENOTTY, errno.EINVAL),
                f"no PAGEMAP_SCAN on this kernel ({errno.errorcode.get(err.errno or 0)})")
        raise
    return scanner


def test_pagemap_scan_entries_equal_the_plain_read(sparse_buffer: int) -> None:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        scanner = scanner_or_skip(fd, sparse_buffer)
        first = sparse_buffer // PAGE_SIZE
        plain, nr_plain = read_u64_range(fd, first, NR_PAGES)
        scanned = np.full(NR_PAGES, 7, dtype=np.uint64)  # stale content must be cleared
        known = scanner.read(fd, first, scanned)
        firsts, counts = scanner.regions(fd, sparse_buffer, sparse_buffer + NR_PAGES * PAGE_SIZE)
    finally:
        os.close(fd)
    assert nr_plain == NR_PAGES and known == NR_PAGES
    assert np.array_equal(scanned, plain)
    assert scanner.calls > 3  # more regions than one call's slots
    # The runs cover exactly the entries that are not zero.
    covered = np.zeros(NR_PAGES, dtype=bool)
    for run_first, run_pages in zip(firsts, counts, strict=True):
        covered[run_first - first : run_first - first + run_pages] = True
    assert np.array_equal(covered, plain != 0)


def test_read_range_scan_and_plain_agree(sparse_buffer: int) -> None:
    require(os.geteuid() == 0, "needs root: pagemap hides PFNs and kpageflags is root-only")
    require(os.path.exists("/proc/kpageflags"), "kernel without CONFIG_PROC_PAGE_MONITOR")
    end = sparse_buffer + NR_PAGES * PAGE_SIZE
    with LinuxMachine(selection=ProcessSelection(pids=(os.getpid(),)), self_pid=-1) as m:
        proc = m.process_id(os.getpid())
        scanned = m.read_range(proc, sparse_buffer, end)
        require(m.pagemap.scan_reason == "", f"no PAGEMAP_SCAN: {m.pagemap.scan_reason}")
        m.pagemap.use_scan = False
        plain = m.read_range(proc, sparse_buffer, end)
        assert dict(m.pagemap.reads) == {"scan": 1, "plain": 1}
    for field in ("vaddr", "pfn", "nid", "flags"):
        assert np.array_equal(getattr(scanned, field), getattr(plain, field)), field
    present = (plain.flags & PageFlag.PRESENT) != 0
    assert 1024 // 3 + 512 <= int(present.sum()) < NR_PAGES


def test_pagemap_reader_falls_back_where_the_ioctl_is_refused(tmp_path: Path) -> None:
    """A file that is no pagemap (ENOTTY): the plain read, the reason kept, counted."""
    path = tmp_path / "pagemap"
    write_u64s(path, {i: 1 << 63 | i for i in range(64)})
    fd = os.open(path, os.O_RDONLY)
    try:
        reader = PagemapReader()
        entries, known = reader.read(fd, 8, 16)
        assert known == 16 and entries.tolist() == [1 << 63 | i for i in range(8, 24)]
        assert reader.scan_reason == "PAGEMAP_SCAN failed with ENOTTY"
        entries, known = reader.read(fd, 60, 8)  # past the end: 4 known, the rest zero
        assert known == 4 and entries.tolist()[4:] == [0] * 4
    finally:
        os.close(fd)
    assert dict(reader.reads) == {"plain_scan_enotty": 1, "plain": 1}


def test_vsyscall_is_read_the_plain_way() -> None:
    """PAGEMAP_SCAN refuses a range past the user address space (EFAULT); the plain read
    returns it (zeros), so the reader falls back for that range and keeps the ioctl."""
    with open("/proc/self/maps", encoding="ascii") as f:
        lines = [line for line in f if line.rstrip().endswith("[vsyscall]")]
    require(lines, "no [vsyscall] mapping in this process")
    start = int(lines[0].split("-")[0], 16)
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        scanner_or_skip(fd, 0x10000)
        reader = PagemapReader()
        reader.scan_reason = ""  # as after a successful probe
        entries, known = reader.read(fd, start // PAGE_SIZE, 1)
        plain, nr_plain = read_u64_range(fd, start // PAGE_SIZE, 1)
    finally:
        os.close(fd)
    assert dict(reader.reads) == {"plain_scan_efault": 1} and reader.scan_reason == ""
    assert (known, entries.tolist()) == (nr_plain, plain.tolist())
