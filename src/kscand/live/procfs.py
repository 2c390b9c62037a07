"""Pure parsers and decoders for /proc: stat, maps/smaps, pagemap and kpageflags words.

Nothing here opens a file: the functions take text or numpy arrays, so they
are tested with synthetic input. Bit positions follow the kernel's
Documentation/admin-guide/mm/pagemap.rst and
include/uapi/linux/kernel-page-flags.h.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kscand.machine import PAGE_SHIFT, PageFlag, U32Array, U64Array, Vma, VmFlag

# --- /proc/PID/pagemap: one u64 per virtual page -------------------------------------------

PM_PFRAME_MASK = np.uint64((1 << 55) - 1)  # bits 0-54: PFN when present
PM_SOFT_DIRTY = np.uint64(1 << 55)
PM_MMAP_EXCLUSIVE = np.uint64(1 << 56)  # mapped by this process only
PM_UFFD_WP = np.uint64(1 << 57)
PM_FILE = np.uint64(1 << 61)  # file page or shared anon
PM_SWAP = np.uint64(1 << 62)
PM_PRESENT = np.uint64(1 << 63)
PAGEMAP_ENTRY_BYTES = 8

# --- /proc/kpageflags: one u64 per PFN (KPF_* bit numbers) ------------------------------------

KPF_LOCKED = 0
KPF_REFERENCED = 2
KPF_DIRTY = 4
KPF_LRU = 5
KPF_ACTIVE = 6
KPF_SLAB = 7
KPF_BUDDY = 10
KPF_MMAP = 11
KPF_ANON = 12
KPF_SWAPCACHE = 13
KPF_SWAPBACKED = 14
KPF_COMPOUND_HEAD = 15
KPF_COMPOUND_TAIL = 16
KPF_HUGE = 17  # hugetlb
KPF_UNEVICTABLE = 18
KPF_HWPOISON = 19
KPF_NOPAGE = 20  # no struct page at this PFN
KPF_KSM = 21
KPF_THP = 22
KPF_OFFLINE = 23
KPF_ZERO_PAGE = 24
KPF_IDLE = 25
KPF_PGTABLE = 26


def _kpf(bit: int) -> np.uint64:
    return np.uint64(1 << bit)


# --- /proc/PID/stat ---------------------------------------------------------------------------

PF_KTHREAD = 0x00200000  # include/linux/sched.h: task->flags of a kernel thread


class ParseError(ValueError):
    """Text from /proc did not have the expected shape (named what and why)."""


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of /proc/PID/stat that kscand uses."""

    pid: int
    comm: str
    state: str
    ppid: int
    flags: int  # task->flags (PF_*)
    start_time: int  # clock ticks after boot (field 22)

    @property
    def is_kernel_thread(self) -> bool:
        return bool(self.flags & PF_KTHREAD)


def parse_stat(text: str) -> ProcStat:
    """Parse /proc/PID/stat, splitting at the LAST ')' (comm may hold ')' and spaces)."""
    open_paren = text.find("(")
    close_paren = text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        raise ParseError("stat: no '(comm)' field")
    try:
        pid = int(text[:open_paren].strip())
    except ValueError as err:
        raise ParseError(f"stat: bad pid {text[:open_paren].strip()!r}") from err
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 1 :].split()
    # rest[0] is field 3 (state): field N is rest[N - 3].
    if len(rest) < 20:
        raise ParseError(f"stat: {len(rest) + 2} fields, need at least 22")
    try:
        return ProcStat(
            pid=pid,
            comm=comm,
            state=rest[0],
            ppid=int(rest[1]),
            flags=int(rest[6]),
            start_time=int(rest[19]),
        )
    except ValueError as err:
        raise ParseError(f"stat: non-numeric field ({err})") from err


# --- /proc/PID/maps and smaps -----------------------------------------------------------------

# smaps' VmFlags mnemonics (fs/proc/task_mmu.c show_smap_vma_flags) that kscand maps.
VMFLAG_MNEMONICS: dict[str, VmFlag] = {
    "rd": VmFlag.READ,
    "wr": VmFlag.WRITE,
    "ex": VmFlag.EXEC,
    "sh": VmFlag.SHARED,
    "io": VmFlag.IO,
    "pf": VmFlag.PFNMAP,
    "mm": VmFlag.MIXEDMAP,
    "ht": VmFlag.HUGETLB,
    "lo": VmFlag.LOCKED,
    "hg": VmFlag.HUGEPAGE,
    "de": VmFlag.DONTEXPAND,
}

# Kernel-provided special mappings: no struct pages kscand could move.
SPECIAL_MAPPINGS = frozenset(
    {"[vsyscall]", "[vvar]", "[vvar_vclock]", "[vdso]", "[uprobes]", "[sigpage]", "[vectors]"}
)

_MAPS_LINE = re.compile(
    r"^([0-9a-fA-F]+)-([0-9a-fA-F]+)\s+([-rwxsp]{4})\s+([0-9a-fA-F]+)\s+"
    r"([0-9a-fA-F]+:[0-9a-fA-F]+)\s+([0-9]+)\s*(.*)$"
)


@dataclass(frozen=True, slots=True)
class MapsEntry:
    """One line of /proc/PID/maps."""

    start: int
    end: int
    perms: str  # e.g. "rw-p"
    offset: int
    inode: int
    pathname: str

    @property
    def key(self) -> tuple[int, int, str, int, int]:
        """What identifies the mapping for caching its smaps VmFlags."""
        return (self.start, self.end, self.perms, self.offset, self.inode)


def parse_maps_line(line: str) -> MapsEntry | None:
    """One maps/smaps header line, or None when the line is not a mapping header."""
    match = _MAPS_LINE.match(line.rstrip("\n"))
    if match is None:
        return None
    start, end = int(match.group(1), 16), int(match.group(2), 16)
    if end <= start:
        return None
    return MapsEntry(
        start=start,
        end=end,
        perms=match.group(3),
        offset=int(match.group(4), 16),
        inode=int(match.group(6)),
        pathname=match.group(7).strip(),
    )


def flags_from_perms(perms: str) -> VmFlag:
    """VmFlag from maps' permission string ("rw-p", "r-xs", ...)."""
    flags = VmFlag(0)
    if perms[0:1] == "r":
        flags |= VmFlag.READ
    if perms[1:2] == "w":
        flags |= VmFlag.WRITE
    if perms[2:3] == "x":
        flags |= VmFlag.EXEC
    if perms[3:4] == "s":
        flags |= VmFlag.SHARED
    return flags


def flags_from_vmflags(mnemonics: str) -> VmFlag:
    """VmFlag from smaps' "VmFlags: rd wr mr ..." value; unknown mnemonics are ignored."""
    flags = VmFlag(0)
    for word in mnemonics.split():
        flags |= VMFLAG_MNEMONICS.get(word, VmFlag(0))
    return flags


def flags_from_mapping(entry: MapsEntry) -> VmFlag:
    """FILE and SPECIAL: what the pathname and inode say about the mapping."""
    if entry.pathname in SPECIAL_MAPPINGS:
        return VmFlag.SPECIAL
    if entry.inode != 0 or entry.pathname.startswith("/"):
        return VmFlag.FILE
    return VmFlag(0)


def vma_from_entry(entry: MapsEntry, vmflags: VmFlag | None) -> Vma:
    """A Vma from a maps entry and, when smaps gave them, its VmFlags."""
    base = vmflags if vmflags is not None else flags_from_perms(entry.perms)
    return Vma(entry.start, entry.end, base | flags_from_mapping(entry), entry.pathname)


def parse_maps(text: str) -> list[MapsEntry]:
    """Every mapping of /proc/PID/maps text; malformed lines are skipped."""
    entries = (parse_maps_line(line) for line in text.splitlines())
    return [e for e in entries if e is not None]


def parse_smaps_vmflags(text: str) -> dict[tuple[int, int, str, int, int], VmFlag]:
    """maps key -> VmFlag (from VmFlags) for each mapping of smaps text that has them."""
    out: dict[tuple[int, int, str, int, int], VmFlag] = {}
    entry: MapsEntry | None = None
    for line in text.splitlines():
        if line.startswith("VmFlags:"):
            if entry is not None:
                out[entry.key] = flags_from_vmflags(line[len("VmFlags:") :])
            continue
        if line[:1] in "0123456789abcdefABCDEF":
            head = parse_maps_line(line)
            if head is not None:
                entry = head
    return out


# --- pagemap / kpageflags / kpagecount decoding -----------------------------------------------


def pagemap_present(entries: U64Array) -> npt.NDArray[np.bool_]:
    """Present pages. uint64 (n,) pagemap entries -> bool (n,)."""
    out: npt.NDArray[np.bool_] = (entries & PM_PRESENT) != 0
    return out


def pagemap_pfn(entries: U64Array) -> U64Array:
    """PFN of each present page, 0 otherwise (swap entries are not PFNs). uint64 (n,)."""
    return np.where(pagemap_present(entries), entries & PM_PFRAME_MASK, np.uint64(0)).astype(
        np.uint64
    )


# pagemap bits 62-63 (SWAP, PRESENT) -> PageFlag: one lookup instead of two masked passes.
_PM_FLAG_TABLE = np.array(
    [0, PageFlag.SWAPPED, PageFlag.PRESENT, PageFlag.PRESENT | PageFlag.SWAPPED], dtype=np.uint32
)


def pagemap_flags(entries: U64Array) -> U32Array:
    """PageFlag bits that pagemap alone gives: PRESENT, SWAPPED. uint64 (n,) -> uint32 (n,)."""
    return _PM_FLAG_TABLE.take((entries >> np.uint64(62)).view(np.int64))


# kpageflags bit -> PageFlag bit, for the flags that map one to one.
_KPF_DIRECT: tuple[tuple[int, PageFlag], ...] = (
    (KPF_UNEVICTABLE, PageFlag.UNEVICTABLE),
    (KPF_LRU, PageFlag.LRU),
    (KPF_HUGE, PageFlag.HUGETLB),
    (KPF_KSM, PageFlag.KSM),
    (KPF_ZERO_PAGE, PageFlag.ZERO),
    (KPF_ANON, PageFlag.ANON),
    (KPF_NOPAGE, PageFlag.ZONE_DEVICE),
)

# Every kpageflags bit kscand decodes lies in two windows: bits 5-12 (LRU .. ANON) and
# bits 15-24 (COMPOUND_HEAD .. ZERO_PAGE). Each window indexes a table of the PageFlag
# bits it means, so a decode is two lookups and an OR, whatever the number of flags.
_KPF_LO_SHIFT, _KPF_LO_BITS = KPF_LRU, 8
_KPF_HI_SHIFT, _KPF_HI_BITS = KPF_COMPOUND_HEAD, 10


def _window_table(shift: int, nr_bits: int) -> U32Array:
    """PageFlag bits of every value of kpageflags bits [shift, shift + nr_bits)."""
    words = np.arange(1 << nr_bits, dtype=np.uint64) << np.uint64(shift)
    table = np.zeros(words.shape, dtype=np.uint32)
    for bit, flag in _KPF_DIRECT:
        table[(words & _kpf(bit)) != 0] |= np.uint32(flag)
    thp = (words & _kpf(KPF_THP)) != 0
    table[thp & ((words & _kpf(KPF_COMPOUND_HEAD)) != 0)] |= np.uint32(PageFlag.THP_HEAD)
    table[thp & ((words & _kpf(KPF_COMPOUND_TAIL)) != 0)] |= np.uint32(PageFlag.THP_TAIL)
    return table


_KPF_LO_TABLE = _window_table(_KPF_LO_SHIFT, _KPF_LO_BITS)
_KPF_HI_TABLE = _window_table(_KPF_HI_SHIFT, _KPF_HI_BITS)

def _window(kflags: U64Array, shift: int, nr_bits: int) -> npt.NDArray[np.int64]:
    index = (kflags >> np.uint64(shift)).view(np.int64)
    index &= (1 << nr_bits) - 1
    return index


def kpageflags_to_pageflags(kflags: U64Array) -> U32Array:
    """PageFlag bits from kpageflags words. uint64 (n,) -> uint32 (n,).

    THP_HEAD is KPF_THP with COMPOUND_HEAD, THP_TAIL KPF_THP with
    COMPOUND_TAIL (kpageflags sets KPF_THP for every large LRU/anon folio).
    Two table lookups (bits 5-12 and 15-24) instead of a masked pass per flag.
    """
    out = _KPF_LO_TABLE.take(_window(kflags, _KPF_LO_SHIFT, _KPF_LO_BITS))
    out |= _KPF_HI_TABLE.take(_window(kflags, _KPF_HI_SHIFT, _KPF_HI_BITS))
    return out


def shared_mask(entries: U64Array, kflags: U64Array, kcount: U64Array) -> npt.NDArray[np.bool_]:
    """Pages mapped by more than one process. All uint64 (n,) -> bool (n,).

    An anonymous page whose pagemap entry lacks PM_MMAP_EXCLUSIVE is shared
    (e.g. with a forked child before copy-on-write); any page with
    kpagecount > 1 is mapped more than once.
    """
    anon = (kflags & _kpf(KPF_ANON)) != 0
    exclusive = (entries & PM_MMAP_EXCLUSIVE) != 0
    out: npt.NDArray[np.bool_] = (anon & ~exclusive) | (kcount > np.uint64(1))
    return out


def kpagecount_needed(entries: U64Array) -> npt.NDArray[np.bool_]:
    """Present pages whose kpagecount can change the SHARED verdict. uint64 (n,) -> bool (n,).

    PM_MMAP_EXCLUSIVE is set when the page has a single mapper (page
    mapcount 1; since 6.15 "not maybe mapped shared", fs/proc/task_mmu.c),
    so an exclusive page cannot have kpagecount > 1 from another process,
    and a non-exclusive anon page is shared anyway. Only a non-exclusive
    file page needs kpagecount: reading it for every page would double the
    kernel work of a scan for no change in the result.
    """
    file_shared = (entries & (PM_MMAP_EXCLUSIVE | PM_FILE)) == PM_FILE
    out: npt.NDArray[np.bool_] = pagemap_present(entries) & file_shared
    return out


def decode_pages(
    entries: U64Array, kflags: U64Array, kcount: U64Array, nid: npt.NDArray[np.int32]
) -> U32Array:
    """PageFlag bits of each page from its pagemap entry, kpageflags, kpagecount and nid.

    entries, kflags, kcount: uint64 (n,) (kflags/kcount 0 where not present or
    not read, see kpagecount_needed);
    nid: int32 (n,), NID_NONE for a present PFN outside every memory block,
    which counts as ZONE_DEVICE. Returns uint32 (n,).
    """
    flags = pagemap_flags(entries)
    page = kpageflags_to_pageflags(kflags)
    np.bitwise_or(page, np.uint32(PageFlag.SHARED), out=page,
                  where=shared_mask(entries, kflags, kcount))
    np.bitwise_or(page, np.uint32(PageFlag.ZONE_DEVICE), out=page, where=nid < 0)
    page &= np.uint32(0) - (flags & np.uint32(PageFlag.PRESENT))  # all ones where present
    flags |= page
    return flags


def vaddr_range(start: int, end: int) -> U64Array:
    """Page-aligned addresses of [start, end). -> uint64 (n,)."""
    first, last = start >> PAGE_SHIFT, end >> PAGE_SHIFT
    out = np.arange(first, last, dtype=np.uint64)
    out <<= np.uint64(PAGE_SHIFT)
    return out


def contiguous_runs(
    index: U64Array, max_gap: int = 0
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Runs covering sorted unique indices: (first index, length) per run, int64 (r,).

    Two indices at most max_gap apart (max_gap missing indices between them)
    land in the same run, so one read covers both: fewer syscalls for a few
    wasted entries.
    """
    if index.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    idx = index.astype(np.int64)
    breaks = np.flatnonzero(np.diff(idx) > max_gap + 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [idx.size])) - 1
    first = idx[starts]
    return first, idx[ends] - first + 1
