"""The seed's VMA and page filters, as pure functions (pages: over numpy arrays)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kscand.core.stats import PageSkip, VmaSkip
from kscand.machine import HPAGE_PMD_NR, PageFlag, U32Array, Vma, VmFlag


def vma_skip_reason(vma: Vma) -> VmaSkip | None:
    """Why the VMA is not walked, or None to walk it (kscand_walk_page_vma in the seed).

    vma_migratable() refuses VM_IO|VM_PFNMAP; hugetlb and VM_MIXEDMAP are
    refused outright; read-only file mappings (program text, read-only data
    files) are shared page-cache pages and promoting them for one process is
    rarely right; PROT_NONE is !vma_is_accessible().
    """
    flags = vma.flags
    if flags & (VmFlag.IO | VmFlag.PFNMAP | VmFlag.SPECIAL):
        return VmaSkip.NOT_MIGRATABLE
    if flags & VmFlag.HUGETLB:
        return VmaSkip.HUGETLB
    if flags & VmFlag.MIXEDMAP:
        return VmaSkip.MIXEDMAP
    if flags & VmFlag.FILE and (flags & (VmFlag.READ | VmFlag.WRITE)) == VmFlag.READ:
        return VmaSkip.FILE_READONLY
    if not flags & (VmFlag.READ | VmFlag.WRITE | VmFlag.EXEC):
        return VmaSkip.INACCESSIBLE
    return None


# Every flag the page filter looks at lives in the low 10 bits, so the
# filter is one table lookup per page: key = flags & _KEY_MASK.
_KEY_MASK = 0x3FF
assert max(
    PageFlag.PRESENT, PageFlag.SHARED, PageFlag.UNEVICTABLE, PageFlag.LRU, PageFlag.THP_HEAD,
    PageFlag.THP_TAIL, PageFlag.HUGETLB, PageFlag.ZONE_DEVICE, PageFlag.KSM, PageFlag.ZERO,
) <= _KEY_MASK


def _page_skip_of(key: int) -> PageSkip:
    flags = PageFlag(key)
    if not flags & PageFlag.PRESENT:
        return PageSkip.NOT_PRESENT
    if flags & PageFlag.THP_TAIL:
        return PageSkip.THP_TAIL
    if flags & PageFlag.ZERO:
        return PageSkip.ZERO_PAGE
    if flags & PageFlag.HUGETLB:
        return PageSkip.HUGETLB
    if flags & PageFlag.ZONE_DEVICE:
        return PageSkip.ZONE_DEVICE
    if flags & (PageFlag.SHARED | PageFlag.KSM):
        return PageSkip.SHARED
    if flags & PageFlag.UNEVICTABLE:
        return PageSkip.UNEVICTABLE
    if not flags & PageFlag.LRU:
        return PageSkip.NOT_LRU
    if flags & PageFlag.THP_HEAD:
        return PageSkip.ELIGIBLE_THP
    return PageSkip.ELIGIBLE


PAGE_SKIP_TABLE: npt.NDArray[np.uint8] = np.array(
    [_page_skip_of(key) for key in range(_KEY_MASK + 1)], dtype=np.uint8
)
NR_PAGE_SKIP = len(PageSkip)


def page_skip_codes(flags: U32Array) -> npt.NDArray[np.uint8]:
    """PageSkip code of each page. flags: uint32 (n,) PageFlag bits -> uint8 (n,)."""
    out: npt.NDArray[np.uint8] = PAGE_SKIP_TABLE[flags & _KEY_MASK]
    return out


def folio_sizes(flags: U32Array) -> npt.NDArray[np.int64]:
    """Base pages of the folio each entry heads: 1 + its run of tail entries for a THP
    head, 1 for anything else. flags: uint32 (n,) of a contiguous range -> int64 (n,).

    Counting the tails (rather than assuming HPAGE_PMD_NR) gets multi-size THP
    right: the kernel marks every large anonymous folio KPF_THP, 16 KiB ones too.
    """
    n = flags.shape[0]
    sizes = np.ones(n, dtype=np.int64)
    heads = np.flatnonzero(flags & PageFlag.THP_HEAD)
    if not heads.size:
        return sizes
    not_tail = np.flatnonzero((flags & PageFlag.THP_TAIL) == 0)
    nxt = np.searchsorted(not_tail, heads, side="right")
    ends = np.where(nxt < not_tail.size, not_tail[np.minimum(nxt, not_tail.size - 1)], n)
    sizes[heads] = np.minimum(ends - heads, HPAGE_PMD_NR)
    return sizes
