"""The baselines' counters: the kernel's names for what NUMA balancing, kswapd and DAMON do.

Typed like the engine's (kscand.core.counters): each counter is a CounterName
member, each parameterised one a CounterFamily member plus labels. None of them
is kscand's: what every policy promoted and demoted is measured by the simulated
machine (SimView.promoted_pages), the same for kscand and each baseline.
"""

from __future__ import annotations

import enum

from kscand.core.counters import CounterFamily, CounterName


class Vmstat(CounterName):
    """/proc/vmstat items the baselines count as the kernel does (mm/vmstat.c)."""

    NUMA_PTE_UPDATES = "numa_pte_updates"
    NUMA_HUGE_PTE_UPDATES = "numa_huge_pte_updates"
    NUMA_HINT_FAULTS = "numa_hint_faults"
    NUMA_PAGES_MIGRATED = "numa_pages_migrated"
    PGPROMOTE_SUCCESS = "pgpromote_success"
    PGPROMOTE_CANDIDATE = "pgpromote_candidate"
    PGPROMOTE_CANDIDATE_NRL = "pgpromote_candidate_nrl"
    PGMIGRATE_SUCCESS = "pgmigrate_success"
    PGMIGRATE_FAIL = "pgmigrate_fail"
    PGSCAN_KSWAPD = "pgscan_kswapd"
    PGDEMOTE_KSWAPD = "pgdemote_kswapd"
    PGACTIVATE = "pgactivate"
    PGDEACTIVATE = "pgdeactivate"


class Numab(CounterName):
    """NUMA balancing's own work and the promotion gate's refusals (no vmstat item)."""

    SCANS = "numab_scans"  # task_numa_work() passes
    PTES_WALKED = "numab_ptes_walked"
    SKIP_NOT_MOVABLE = "numab_skip_not_movable"  # hint faults on pages it cannot migrate
    REJECT_LATENCY = "numab_reject_latency"  # slower than the hot threshold
    REJECT_RATE_LIMIT = "numab_reject_rate_limit"  # the promotion rate limit spent
    FAIL_BALANCE = "numab_fail_balance"  # would take the top node below its high watermark


class KswapdCounter(CounterName):
    """kswapd's demotion work (beyond pgscan_kswapd / pgdemote_kswapd)."""

    WAKE_HOPELESS = "kswapd_wake_hopeless"  # not woken: it gave up (MAX_RECLAIM_RETRIES)
    RUNS = "kswapd_runs"
    FAILURES = "kswapd_failures"  # runs that reclaimed nothing
    PTES_CHECKED = "kswapd_ptes_checked"  # folio_referenced() rmap walks
    NO_DEMOTION_TARGET = "kswapd_no_demotion_target"
    DEMOTE_FAIL = "kswapd_demote_fail"


class WakeReason(enum.StrEnum):
    """Why kswapd is woken (the label of KSWAPD_WAKE)."""

    ALLOC = "alloc"  # an allocation found the node below its watermark
    PROMOTE = "promote"  # a promotion found no room


class Damon(CounterName):
    """DAMON's sampling and DAMOS's actions, over every scheme."""

    SAMPLES = "damon_samples"  # regions sampled (one PTE each)
    QT_EXCEEDS = "damos_qt_exceeds"
    NR_TRIED = "damos_nr_tried"
    SZ_TRIED = "damos_sz_tried"  # bytes
    PTES_WALKED = "damos_ptes_walked"
    FILTERED_NOT_YOUNG = "damos_filtered_not_young"
    NR_APPLIED = "damos_nr_applied"
    SZ_APPLIED = "damos_sz_applied"  # bytes
    MIGRATE_CALLS = "damos_migrate_calls"
    SKIP_NOT_MOVABLE = "damos_skip_not_movable"
    FAIL_NO_ROOM = "damos_fail_no_room"  # the target node would pass its floor


class DamosStat(enum.StrEnum):
    """A DAMOS scheme's stats (mm/damon/sysfs-schemes.c's names; the label of DAMOS_SCHEME)."""

    NR_TRIED = "nr_tried"
    SZ_TRIED = "sz_tried"  # bytes
    FILTERED_OUT = "filtered_out"
    NR_APPLIED = "nr_applied"
    SZ_APPLIED = "sz_applied"  # bytes
    QT_EXCEEDS = "qt_exceeds"
    INTERVALS_TUNED = "intervals_tuned"  # intervals auto-tuning steps


class BaselineFamily(CounterFamily):
    """The baselines' labelled counters."""

    KSWAPD_WAKE = "kswapd_wake_{reason}"  # by WakeReason
    DAMOS_SCHEME = "damos_{scheme}_{stat}"  # per scheme (its name), by DamosStat
