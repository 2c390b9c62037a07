"""The page-placement mechanisms `make vm-compare` runs side by side in the guest.

kscand-page_idle, kscand-damon (the daemon, `kscand run`); numab (kernel.numa_balancing
= 2, no demotion) and numab-demote (the same with /sys/kernel/mm/numa/demotion_enabled
= 1: kswapd demotes a top-tier node's inactive pages to the next tier when it is under
its watermark, mm/vmscan.c demote_folio_list); damos and damos-strict (one kdamond on
node 1's physical memory, DAMOS migrate_hot to node 0); damos-tier (damo's
scripts/mem_tier.sh pair: migrate_cold node 0 -> 1 and migrate_hot node 1 -> 0, as far
as 6.12 has it: see DamosTierMechanism); none.

Runs inside the guest; only the standard library.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testbed.actors import Daemon, Tunables
from testbed.guestio import (
    DAMON_ADMIN,
    DEMOTION_ENABLED,
    NUMA_BALANCING,
    kdamond_cpu_s,
    node_phys_range,
    proc_cpu_s,
    write_sysfs,
)

UINT_MAX = (1 << 32) - 1
SZ_MAX = (1 << 63) - 1
MiB = 1 << 20
MECHANISMS = (
    "kscand-page_idle", "kscand-damon", "numab", "numab-demote", "damos", "damos-strict",
    "damos-tier", "none",
)  # fmt: skip


class Mechanism(Protocol):
    """Something that promotes pages (or not) while the workload runs."""

    @property
    def name(self) -> str: ...

    @property
    def starts_after_ready(self) -> bool: ...

    def start(self, out: Path) -> None: ...

    def cpu_s(self) -> float: ...

    def counters(self) -> dict[str, Any]: ...

    def stop(self) -> dict[str, Any]: ...


@dataclass
class KscandMechanism:
    """The kscand daemon with the default tunables (unless given) and a forced access source."""

    source: str
    tunables: Tunables = field(default_factory=dict)
    daemon: Daemon | None = None
    # Started before the workload (the daemon's import takes seconds); it sees the
    # workload only once it is ready, when it renames itself kscand-wl.
    starts_after_ready = False

    @property
    def name(self) -> str:
        return f"kscand-{self.source}"

    def start(self, out: Path) -> None:
        self.daemon = Daemon(self.source, self.tunables, out)
        self.daemon.wait_up()

    def cpu_s(self) -> float:
        """The daemon's CPU; with DAMON also the kdamonds it runs."""
        assert self.daemon is not None
        cpu = proc_cpu_s(self.daemon.pid)
        own = sum(cpu) if cpu else 0.0
        return own + (kdamond_cpu_s() if self.source == "damon" else 0.0)

    def counters(self) -> dict[str, Any]:
        assert self.daemon is not None
        state = self.daemon.fresh_state() or {}
        return {
            "totals": state.get("totals", {}),
            "daemon": state.get("daemon", {}),
            "tunables": state.get("tunables", {}),
        }

    def stop(self) -> dict[str, Any]:
        assert self.daemon is not None
        self.daemon.stop()
        return self.daemon.summary()


class NumabMechanism:
    """kernel.numa_balancing = 2 (NUMA_BALANCING_MEMORY_TIERING), default knobs; with
    demote, also demotion_enabled = 1 (reclaim demotes instead of reclaiming)."""

    # On from the start: it leaves the workload's memory alone while it is bound
    # (task_numa_work skips MPOL_BIND VMAs), i.e. until ready.
    starts_after_ready = False

    def __init__(self, demote: bool = False) -> None:
        self.demote = demote
        self.name = "numab-demote" if demote else "numab"
        self.previous = "0"
        self.previous_demotion: str | None = None

    def start(self, out: Path) -> None:
        self.previous = NUMA_BALANCING.read_text().strip()
        self.previous_demotion = DEMOTION_ENABLED.read_text().strip()
        write_sysfs(NUMA_BALANCING, 2)
        write_sysfs(DEMOTION_ENABLED, 1 if self.demote else 0)

    def cpu_s(self) -> float:
        return 0.0  # hint faults are charged to the workload, kswapd's demotion to nobody here

    def counters(self) -> dict[str, Any]:
        return {
            "numa_balancing": NUMA_BALANCING.read_text().strip(),
            "demotion_enabled": DEMOTION_ENABLED.read_text().strip(),
        }

    def stop(self) -> dict[str, Any]:
        write_sysfs(NUMA_BALANCING, self.previous)
        if self.previous_demotion is not None:
            write_sysfs(DEMOTION_ENABLED, 1 if self.previous_demotion == "true" else 0)
        return {}


@dataclass(frozen=True)
class DamosScheme:
    """One DAMOS scheme on one node's physical memory (6.12's sysfs: DAMON_SYSFS ABI)."""

    action: str  # migrate_hot | migrate_cold
    source_nid: int
    target_nid: int
    min_nr_accesses: int
    max_nr_accesses: int = UINT_MAX
    min_age: int = 0
    quota_bytes: int = 0  # per reset interval; 0: no quota
    quota_reset_ms: int = 0
    apply_interval_us: int = 0  # 0: every aggregation
    young_filter: bool | None = None  # True: skip young pages; False: skip non-young ones


SAMPLE_US = 5000
AGGR_US = 100_000


def kdamond_writes(kdamond: Path, scheme: DamosScheme) -> list[tuple[Path, object]]:
    """The sysfs writes that set up one kdamond (paddr, the node's whole range, one scheme);
    the caller turns it on."""
    start, end = node_phys_range(scheme.source_nid)
    ctx = kdamond / "contexts" / "0"
    attrs = ctx / "monitoring_attrs"
    sch = ctx / "schemes" / "0"
    pattern = sch / "access_pattern"
    writes: list[tuple[Path, object]] = [
        (kdamond / "contexts" / "nr_contexts", 1),
        (ctx / "operations", "paddr"),
        (attrs / "intervals" / "sample_us", SAMPLE_US),
        (attrs / "intervals" / "aggr_us", AGGR_US),
        (attrs / "intervals" / "update_us", 1_000_000),
        (attrs / "nr_regions" / "min", 10),
        (attrs / "nr_regions" / "max", 1000),
        (ctx / "targets" / "nr_targets", 1),
        (ctx / "targets" / "0" / "regions" / "nr_regions", 1),
        (ctx / "targets" / "0" / "regions" / "0" / "start", start),
        (ctx / "targets" / "0" / "regions" / "0" / "end", end),
        (ctx / "schemes" / "nr_schemes", 1),
        (sch / "action", scheme.action),
        (sch / "target_nid", scheme.target_nid),
        (sch / "apply_interval_us", scheme.apply_interval_us),
        (pattern / "sz" / "min", 4096),
        (pattern / "sz" / "max", SZ_MAX),
        (pattern / "nr_accesses" / "min", scheme.min_nr_accesses),
        (pattern / "nr_accesses" / "max", scheme.max_nr_accesses),
        (pattern / "age" / "min", scheme.min_age),
        (pattern / "age" / "max", UINT_MAX),
    ]
    if scheme.quota_bytes:
        writes += [
            (sch / "quotas" / "bytes", scheme.quota_bytes),
            (sch / "quotas" / "reset_interval_ms", scheme.quota_reset_ms),
        ]
    if scheme.young_filter is not None:
        # 6.12's filters exclude what they match ("matching" Y) or what they do not (N).
        writes += [
            (sch / "filters" / "nr_filters", 1),
            (sch / "filters" / "0" / "type", "young"),
            (sch / "filters" / "0" / "matching", "Y" if scheme.young_filter else "N"),
        ]
    return writes


SCHEME_STATS = ("nr_tried", "sz_tried", "nr_applied", "sz_applied", "qt_exceeds")


class DamosMechanism:
    """kdamonds on physical memory with DAMOS migration schemes, one kdamond per scheme.

    DAMON's default intervals (sample 5 ms, aggregation 100 ms, update 1 s). "damos": one
    migrate_hot scheme on node 1, regions accessed at least once in an aggregation (1 of
    its 20 samples), no quota; "damos-strict": at least 5 of 20 samples, and for at least
    10 aggregations (1 s) in a row. (6.12's vaddr operations do not implement
    migrate_hot; paddr does.)
    """

    # migrate_hot ignores memory policies: started before, it would move the pages the
    # workload is populating on node 1. So it starts at ready (a few sysfs writes).
    starts_after_ready = True

    def __init__(self, name: str, schemes: tuple[DamosScheme, ...]) -> None:
        self.name = name
        self.schemes = schemes
        self.kdamonds = [DAMON_ADMIN / "kdamonds" / str(i) for i in range(len(schemes))]

    def start(self, out: Path) -> None:
        kdamonds = DAMON_ADMIN / "kdamonds"
        if int((kdamonds / "nr_kdamonds").read_text()) != 0:
            raise RuntimeError("DAMON sysfs already has kdamonds")
        write_sysfs(kdamonds / "nr_kdamonds", len(self.schemes))
        for kdamond, scheme in zip(self.kdamonds, self.schemes, strict=True):
            for path, value in kdamond_writes(kdamond, scheme):
                write_sysfs(path, value)
        for kdamond in self.kdamonds:
            write_sysfs(kdamond / "state", "on")
        regions = {s.action: node_phys_range(s.source_nid) for s in self.schemes}
        (out / "damos.json").write_text(json.dumps({"regions": regions}))

    def cpu_s(self) -> float:
        return kdamond_cpu_s()

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kdamond, scheme in zip(self.kdamonds, self.schemes, strict=True):
            with contextlib.suppress(OSError):
                write_sysfs(kdamond / "state", "update_schemes_stats")
            stats = kdamond / "contexts" / "0" / "schemes" / "0" / "stats"
            mine: dict[str, int] = {}
            for name in SCHEME_STATS:
                with contextlib.suppress(OSError, ValueError):
                    mine[name] = int((stats / name).read_text())
            out[scheme.action] = mine
        return out

    def stop(self) -> dict[str, Any]:
        for kdamond in self.kdamonds:
            with contextlib.suppress(OSError):
                write_sysfs(kdamond / "state", "off")
        with contextlib.suppress(OSError):
            write_sysfs(DAMON_ADMIN / "kdamonds" / "nr_kdamonds", 0)
        return {}


def damos_tier_schemes(quota_bytes: int = 200 * MiB) -> tuple[DamosScheme, ...]:
    """damo's scripts/mem_tier.sh as far as Linux 6.12 goes.

    mem_tier.sh: migrate_cold node 0 -> 1 for regions with 0 % access, quota 200 MB per
    1 s, quota goal node_mem_free_bp 0.5 % of node 0, young pages rejected; migrate_hot
    node 1 -> 0 for >= 5 % access, 200 MB per 1 s, goal node_mem_used_bp 99.7 % of
    node 0, only young pages; both applied every 1 s, intervals auto-tuned to 4 % of
    the observable access events (5 ms .. 10 s sampling). 6.12 has the actions, the
    quotas, apply_interval_us and the young filter; it lacks the node_mem_*_bp quota
    goals (6.16) and the intervals goal (6.15). So here the demotion is not held back
    by node 0's free memory (it demotes node 0's cold regions at up to 200 MiB/s), and
    the intervals are fixed at 5 ms / 100 ms (5 % of 20 samples: 1).
    """
    common = {"quota_bytes": quota_bytes, "quota_reset_ms": 1000, "apply_interval_us": 1_000_000}
    return (
        DamosScheme("migrate_cold", 0, 1, min_nr_accesses=0, max_nr_accesses=0,
                    young_filter=True, **common),
        DamosScheme("migrate_hot", 1, 0, min_nr_accesses=1, young_filter=False, **common),
    )  # fmt: skip


class NoMechanism:
    """Nothing promotes: the baseline."""

    name = "none"
    starts_after_ready = False

    def start(self, out: Path) -> None:
        return None

    def cpu_s(self) -> float:
        return 0.0

    def counters(self) -> dict[str, Any]:
        return {}

    def stop(self) -> dict[str, Any]:
        return {}


def make_mechanism(name: str, tunables: Tunables | None = None) -> Mechanism:
    if name.startswith("kscand-"):
        return KscandMechanism(name.removeprefix("kscand-"), dict(tunables or {}))
    factories: dict[str, Callable[[], Mechanism]] = {
        "numab": NumabMechanism,
        "numab-demote": lambda: NumabMechanism(demote=True),
        "damos": lambda: DamosMechanism("damos", (DamosScheme("migrate_hot", 1, 0, 1),)),
        "damos-strict": lambda: DamosMechanism(
            "damos-strict", (DamosScheme("migrate_hot", 1, 0, 5, min_age=10),)
        ),
        "damos-tier": lambda: DamosMechanism("damos-tier", damos_tier_schemes()),
        "none": NoMechanism,
    }
    if name not in factories:
        raise ValueError(f"unknown mechanism {name!r}: one of {', '.join(MECHANISMS)}")
    return factories[name]()
