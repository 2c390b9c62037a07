"""Counters: the series' nr_kscand_* vmstat items plus a named counter per skip or failure.

Every counter counts base pages unless its name says otherwise (like
/proc/vmstat's pgpromote_success); a THP folio counts HPAGE_PMD_NR.
"""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

from kscand.machine import ProcessId

# The vmstat counters of the kscand series, in its order.
SERIES_COUNTERS = (
    "nr_kscand_mm_scans",  # per-process scan visits (one per slot per pass)
    "nr_kscand_vma_scans",  # VMAs (or parts of them) walked
    "nr_kscand_migadded",  # pages queued for promotion
    "nr_kscand_migrated",  # pages promoted
    "nr_kscand_migrate_failed",  # pages whose move failed (by errno: move_fail_*)
    "nr_kscand_slowtier",  # scanned eligible pages on a slow-tier node
    "nr_kscand_toptier",  # scanned eligible pages on a top-tier node
    "nr_kscand_idlepage",  # scanned eligible pages not accessed since the last scan
    "nr_kscand_hotpage",  # accessed and hot (history criterion met)
    "nr_kscand_coldpage",  # accessed, but not (yet) hot
)


class VmaSkip(enum.StrEnum):
    """Why a whole VMA is not scanned (the seed's kscand_walk_page_vma)."""

    NOT_MIGRATABLE = "vma_not_migratable"  # VM_IO / VM_PFNMAP / special mapping
    HUGETLB = "vma_hugetlb"
    MIXEDMAP = "vma_mixedmap"
    FILE_READONLY = "vma_file_readonly"  # read-only file mapping (text, data files)
    INACCESSIBLE = "vma_inaccessible"  # PROT_NONE


class PageSkip(enum.IntEnum):
    """Why a page is not considered (the seed's is_valid_folio + LRU test).

    ELIGIBLE, ELIGIBLE_THP and THP_TAIL are not skips: a THP is one folio,
    its head stands for it and its tails are accounted with it. The order is
    the order of the tests: a page counts under the first match.
    """

    ELIGIBLE = 0  # a base page to test
    ELIGIBLE_THP = 1  # the head of a THP to test as one folio
    THP_TAIL = 2
    NOT_PRESENT = 3
    ZERO_PAGE = 4
    HUGETLB = 5
    ZONE_DEVICE = 6
    SHARED = 7
    UNEVICTABLE = 8
    NOT_LRU = 9

    @property
    def counter(self) -> str:
        return f"page_{self.name.lower()}"


class MigrateDrop(enum.StrEnum):
    """Why a queued candidate is dropped without a move (revalidation, room, queue cap)."""

    QUEUE_FULL = "drop_queue_full"  # candidate list at migrate_queue_max
    PROC_GONE = "drop_proc_gone"  # process exited or pid reused before the move
    ACCESS_DENIED = "drop_access_denied"  # its page tables could not be read to revalidate
    PAGE_GONE = "drop_page_gone"  # no longer present
    PAGE_CHANGED = "drop_page_changed"  # a different page (pfn) is mapped there now
    ALREADY_TOPTIER = "drop_already_toptier"  # moved to the top tier meanwhile
    TARGET_FULL = "drop_target_full"  # room check: every target would pass its watermark
    RATE_LIMITED = "drop_rate_limited"  # promote_rate_limit_mbps spent
    NO_TARGET = "drop_no_target"  # no valid top-tier target node


@dataclass
class Stats:
    """Counters in total and per process; per-process counters outlive the process."""

    total: Counter[str] = field(default_factory=Counter)
    per_proc: dict[ProcessId, Counter[str]] = field(default_factory=dict)

    def add(self, proc: ProcessId | None, name: str, value: int = 1) -> None:
        if not value:
            return
        self.total[name] += value
        if proc is not None:
            self.per_proc.setdefault(proc, Counter())[name] += value

    def of(self, proc: ProcessId) -> Counter[str]:
        return self.per_proc.get(proc, Counter())

    def snapshot(self) -> dict[str, int]:
        """Totals with every series counter present (zero when never counted)."""
        out = {name: 0 for name in SERIES_COUNTERS}
        out.update(self.total)
        return dict(sorted(out.items()))
