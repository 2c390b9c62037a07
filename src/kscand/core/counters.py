"""Counter names, typed: every counter the engine counts is a member of an enum here.

A counter is a CounterName member, a StrEnum: the snapshot's keys, the status
JSON, the state file and the Prometheus text are the same strings as the member's
value, and a reader may look a counter up by its plain name. A parameterised
counter (per node, per errno) is a CounterFamily member plus its labels:

    stats.add(proc, EngineFamily.PROMOTED_PAGES_NODE, n, node=3)

counts under Labelled(EngineFamily.PROMOTED_PAGES_NODE, node="3"), the string
"promoted_pages_node3" that carries its family and labels, so an exporter reads
the label instead of parsing the name. Stats.add takes nothing else (TypeError):
a free-form name cannot creep in. The baselines' counters are in
kscand.evaluation.counters, on the same bases.

Every counter counts base pages unless its name says otherwise (like
/proc/vmstat's pgpromote_success); a THP folio counts HPAGE_PMD_NR.
"""

from __future__ import annotations

import enum
import errno
import string
from collections.abc import Mapping

Labels = tuple[tuple[str, str], ...]  # (label name, value), in the template's order


class CounterName(enum.StrEnum):
    """Base of every enum of counter names (its members are the only names Stats takes)."""


class CounterFamily(enum.Enum):
    """Base of every enum of labelled counter families.

    A member's value is the template of its counters' names, e.g.
    "move_fail_{reason}"; its fields are the family's label names.
    """

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(field for _text, field, _spec, _conv in string.Formatter().parse(self.value)
                     if field is not None)

    def key(self, **labels: int | str) -> Labelled:
        """The counter of this family with these labels (exactly the family's label names)."""
        names = self.label_names
        if set(labels) != set(names):
            raise TypeError(f"counter family {self.name} takes the labels {', '.join(names)}, "
                            f"not {', '.join(sorted(labels)) or 'none'}")
        return Labelled(self, tuple((name, str(labels[name])) for name in names))


class Labelled(str):
    """One counter of a family: its name (the str: the snapshot key), family and labels."""

    family: CounterFamily
    labels: Labels

    def __new__(cls, family: CounterFamily, labels: Labels) -> Labelled:
        self = super().__new__(cls, family.value.format(**dict(labels)))
        self.family = family
        self.labels = labels
        return self

    def __reduce__(self) -> tuple[type[Labelled], tuple[CounterFamily, Labels]]:
        return (Labelled, (self.family, self.labels))

    def label(self, name: str) -> str:
        return dict(self.labels)[name]


CounterKey = CounterName | Labelled  # what Stats counts under


def family_of(key: str) -> CounterFamily | None:
    """The family of a counter key, None for a CounterName (or a plain str)."""
    return key.family if isinstance(key, Labelled) else None


def counter_key(counter: CounterKey | CounterFamily, labels: Mapping[str, int | str]) -> CounterKey:
    """The key of a counter (a name, a family with its labels, or a key): TypeError for
    anything else, a plain str among them."""
    if isinstance(counter, CounterName | Labelled):
        if labels:
            raise TypeError(f"counter {counter} takes no labels")
        return counter
    if isinstance(counter, CounterFamily):
        return counter.key(**labels)
    raise TypeError(f"a counter is a CounterName or CounterFamily member, "
                    f"not {type(counter).__name__} {counter!r}")


class Series(CounterName):
    """The vmstat counters of the kscand series, in its order."""

    MM_SCANS = "nr_kscand_mm_scans"  # per-process scan visits (one per slot per pass)
    VMA_SCANS = "nr_kscand_vma_scans"  # VMAs (or parts of them) walked
    MIGADDED = "nr_kscand_migadded"  # pages queued for promotion
    MIGRATED = "nr_kscand_migrated"  # pages promoted
    MIGRATE_FAILED = "nr_kscand_migrate_failed"  # pages whose move failed (by errno: move_fail_*)
    SLOWTIER = "nr_kscand_slowtier"  # scanned eligible pages on a slow-tier node
    TOPTIER = "nr_kscand_toptier"  # scanned eligible pages on a top-tier node
    IDLEPAGE = "nr_kscand_idlepage"  # scanned eligible pages not accessed since the last scan
    HOTPAGE = "nr_kscand_hotpage"  # accessed and hot (history criterion met)
    COLDPAGE = "nr_kscand_coldpage"  # accessed, but not (yet) hot


class EngineCounter(CounterName):
    """The engine's nr_kscand_* counters beyond the series' (exported each by its name)."""

    PTES_SCANNED = "nr_kscand_ptes_scanned"
    MOVED = "nr_kscand_moved"  # pages promoted or demoted (the ping-pong guard's moves)
    PING_PONG = "nr_kscand_ping_pong"  # moved pages moved before within the window
    MM_ENTER = "nr_kscand_mm_enter"  # processes that entered the scan list
    MM_EXIT = "nr_kscand_mm_exit"  # processes that left it
    REPROBE_QUEUED = "nr_kscand_reprobe_queued"
    REPROBE_YOUNG = "nr_kscand_reprobe_young"
    DEMOTE_ADDED = "nr_kscand_demote_added"  # pages queued for demotion
    DEMOTED = "nr_kscand_demoted"
    EXCHANGE_DEMOTED = "nr_kscand_exchange_demoted"  # demoted to make room for a promotion


class HotSkip(CounterName):
    """Why an accessed page is not queued for promotion (yet): exported by name."""

    YOUNG_SCANS = "skip_young_scans"  # not accessed in enough consecutive scans
    NO_SHORT_EVIDENCE = "skip_no_short_evidence"  # the re-probe did not find it young
    PING_PONG_GUARD = "skip_ping_pong_guard"  # moved too recently
    REPROBE_QUEUE_FULL = "reprobe_queue_full"  # no room to queue its re-probe
    # the source had nothing new at its re-probe (DAMON): judged on the scan alone
    REPROBE_ACCESS_UNKNOWN = "reprobe_access_unknown"


class ScanSkip(CounterName):
    """Why a process visit is skipped or ends early (the member's name is the reason)."""

    ACCESS_DENIED = "scan_access_denied"  # its page tables could not be read
    PROC_GONE = "scan_proc_gone"  # it exited during the visit
    SCALE0 = "scan_skip_scale0"  # its scale is 0: not scanned
    # pages the access source had nothing new on (DAMON: no snapshot since): no look
    ACCESS_UNKNOWN = "scan_access_unknown"


class VmaSkip(CounterName):
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
    def counter(self) -> PageSkipped:
        """The counter of this skip (KeyError for ELIGIBLE, ELIGIBLE_THP, THP_TAIL)."""
        return PageSkipped[self.name]


class PageSkipped(CounterName):
    """The counters of the PageSkip reasons that are skips."""

    NOT_PRESENT = "page_not_present"
    ZERO_PAGE = "page_zero_page"
    HUGETLB = "page_hugetlb"
    ZONE_DEVICE = "page_zone_device"
    SHARED = "page_shared"
    UNEVICTABLE = "page_unevictable"
    NOT_LRU = "page_not_lru"


class MigrateDrop(CounterName):
    """Why a queued candidate (or re-probe) is dropped without a move (the member's name
    is the reason)."""

    QUEUE_FULL = "drop_queue_full"  # candidate list at migrate_queue_max
    PROC_GONE = "drop_proc_gone"  # process exited or pid reused before the move
    ACCESS_DENIED = "drop_access_denied"  # its page tables could not be read to revalidate
    PAGE_GONE = "drop_page_gone"  # no longer present
    PAGE_CHANGED = "drop_page_changed"  # a different page (pfn) is mapped there now
    ALREADY_TOPTIER = "drop_already_toptier"  # moved to the top tier meanwhile
    TARGET_FULL = "drop_target_full"  # room check: every target would pass its watermark
    RATE_LIMITED = "drop_rate_limited"  # promote_rate_limit_mbps spent
    NO_TARGET = "drop_no_target"  # no valid top-tier target node
    DEMOTE_QUEUE_FULL = "drop_demote_queue_full"  # demotion queue at migrate_queue_max
    DEMOTE_STALE = "drop_demote_stale"  # queued for demotion longer than the window
    DEMOTE_NOT_NEEDED = "drop_demote_not_needed"  # no deficit on its node (or no target)
    DEMOTE_CHANGED = "drop_demote_changed"  # no longer the page that was queued
    DEMOTE_TARGET_FULL = "drop_demote_target_full"  # no slow node has room
    DEMOTE_RATE_LIMITED = "drop_demote_rate_limited"  # the rate limit spent
    REPROBE_PROC_GONE = "drop_reprobe_proc_gone"  # a queued re-probe's process exited


class EngineFamily(CounterFamily):
    """The engine's labelled counters."""

    PROMOTED_PAGES_NODE = "promoted_pages_node{node}"  # pages promoted to each target node
    MOVE_FAILED = "move_fail_{reason}"  # by errno name; "stayed": left on another node
    DEMOTE_MOVE_FAILED = "demote_move_fail_{reason}"  # demotion moves, by errno name


def errno_reason(status: int) -> str:
    """The reason label of a negative move_pages(2) status: enomem, ebusy, ... (unknown)."""
    return errno.errorcode.get(-status, "unknown").lower()


SERIES_COUNTERS = tuple(Series)
