"""The page_idle access source: /sys/kernel/mm/page_idle/bitmap (idle page tracking).

The analog of the seed's folio_set_idle + clear_pte_refs. The bitmap is an
array of u64 words, bit pfn % 64 of word pfn // 64; reads and writes must be
whole, 8-byte-aligned words (mm/page_idle.c returns -EINVAL otherwise).
Reading a bit folds young PTEs into the idle flag: 1 = not accessed since the
page was marked idle, 0 = accessed (or never marked, or not an LRU page).
Writing a 1 bit marks the page idle after clearing the Accessed bit of every
PTE/PMD that maps it; 0 bits are ignored, so a word written with only the
batch's bits set leaves every other page of the word alone. Only the head
PFN of a THP carries the idle flag (Documentation/admin-guide/mm/idle_page_tracking.rst).
"""

from __future__ import annotations

import errno
import os

import numpy as np
import numpy.typing as npt

from kscand.errors import AccessDenied, Unsupported
from kscand.live.procfs import contiguous_runs
from kscand.live.u64file import pread_u64
from kscand.machine import BoolArray, PageBatch, ProcessId, U64Array

PAGE_IDLE_BITMAP = "kernel/mm/page_idle/bitmap"
WORD_BYTES = 8
BITS_PER_WORD = 64


def bitmap_word_of(pfn: U64Array) -> U64Array:
    """Word index of each PFN's idle bit. uint64 (n,) -> uint64 (n,)."""
    return (pfn >> np.uint64(6)).astype(np.uint64)


def bitmap_bit_of(pfn: U64Array) -> U64Array:
    """Bit mask of each PFN inside its word: 1 << (pfn % 64). uint64 (n,) -> uint64 (n,)."""
    return (np.uint64(1) << (pfn & np.uint64(BITS_PER_WORD - 1))).astype(np.uint64)


def group_words(pfn: U64Array) -> tuple[U64Array, npt.NDArray[np.intp], U64Array]:
    """The distinct words covering pfn and, per word, the mask of the batch's bits.

    Returns (words: uint64 (w,) sorted unique, inverse: intp (n,) index into
    words for each PFN, masks: uint64 (w,) OR of the PFNs' bits per word).
    """
    words, inverse = np.unique(bitmap_word_of(pfn), return_inverse=True)
    inverse = inverse.reshape(-1).astype(np.intp)
    masks = np.zeros(words.shape, dtype=np.uint64)
    np.bitwise_or.at(masks, inverse, bitmap_bit_of(pfn))
    return words.astype(np.uint64), inverse, masks


def young_from_words(
    values: U64Array, inverse: npt.NDArray[np.intp], pfn: U64Array
) -> BoolArray:
    """Accessed = idle bit clear. values: uint64 (w,) words read; -> bool (n,)."""
    out: BoolArray = (values[inverse] & bitmap_bit_of(pfn)) == 0
    return out


class PageIdleBitmap:
    """Whole-word, run-batched access to the idle bitmap file."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError as err:
            raise Unsupported(
                f"this kernel has no {path} (CONFIG_IDLE_PAGE_TRACKING)"
            ) from err
        except PermissionError as err:
            raise AccessDenied(f"{path}: {err.strerror} (kscand must run as root)") from err
        self.nr_word_reads = 0
        self.nr_word_writes = 0

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read_words(self, words: U64Array) -> tuple[U64Array, BoolArray]:
        """Read sorted unique words, one pread per contiguous run.

        Returns (values: uint64 (w,), valid: bool (w,)); a word past the end
        of the bitmap (beyond max_pfn: a short read) is not valid.
        """
        values = np.zeros(words.shape, dtype=np.uint64)
        valid = np.zeros(words.shape, dtype=np.bool_)
        first, length = contiguous_runs(words)
        pos = 0
        for word, count in zip(first.tolist(), length.tolist(), strict=True):
            try:
                got = pread_u64(self._fd, word, values[pos : pos + count])
            except OSError as err:
                raise self._error(err) from err
            valid[pos : pos + got] = True
            pos += count
        self.nr_word_reads += int(valid.sum())
        return values, valid

    def write_words(self, words: U64Array, masks: U64Array) -> None:
        """Write masks to sorted unique words, one pwrite per contiguous run."""
        first, length = contiguous_runs(words)
        pos = 0
        for word, count in zip(first.tolist(), length.tolist(), strict=True):
            data = np.ascontiguousarray(masks[pos : pos + count]).tobytes()
            self._pwrite(data, word * WORD_BYTES)
            pos += count
        self.nr_word_writes += int(words.size)

    def _pwrite(self, data: bytes, offset: int) -> None:
        done = 0
        while done < len(data):
            try:
                wrote = os.pwrite(self._fd, data[done:], offset + done)
            except OSError as err:
                raise self._error(err) from err
            if wrote <= 0:
                return
            done += wrote

    def _error(self, err: OSError) -> Exception:
        if err.errno in (errno.EACCES, errno.EPERM):
            return AccessDenied(f"{self.path}: {err.strerror}")
        return Unsupported(f"{self.path}: {err.strerror or err}")


class PageIdleSource:
    """Access source on the idle bitmap: read idle bits, then mark the pages idle again."""

    name = "page_idle"

    def __init__(self, sysfs: str = "/sys") -> None:
        self.bitmap = PageIdleBitmap(os.path.join(sysfs, PAGE_IDLE_BITMAP))
        self.nr_pages_tested = 0
        self.nr_pages_past_bitmap = 0  # PFNs beyond the bitmap's end: never reported accessed

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        """Accessed since the last call for each page (THP: its head PFN). -> bool (n,).

        Words past the end of the bitmap are neither reported accessed nor written.
        """
        if len(pages) == 0:
            return np.zeros(0, dtype=np.bool_)
        words, inverse, masks = group_words(pages.pfn)
        values, valid = self.bitmap.read_words(words)
        young = young_from_words(values, inverse, pages.pfn) & valid[inverse]
        self.bitmap.write_words(words[valid], masks[valid])
        self.nr_pages_tested += len(pages)
        self.nr_pages_past_bitmap += int(np.count_nonzero(~valid[inverse]))
        return young

    def forget(self, proc: ProcessId) -> None:
        """Nothing is kept per process."""

    def begin_step(self) -> None:
        """The bitmap is read synchronously: no per-step state."""

    def counters(self) -> dict[str, int]:
        return {
            "pages_tested": self.nr_pages_tested,
            "pages_past_bitmap": self.nr_pages_past_bitmap,
        }

    def close(self) -> None:
        self.bitmap.close()
