"""Counters: the series' nr_kscand_* vmstat items plus a named counter per skip or failure.

The names are typed (kscand.core.counters): Stats counts under CounterName
members and labelled family counters only, and raises TypeError for a plain str.
Every counter counts base pages unless its name says otherwise (like
/proc/vmstat's pgpromote_success); a THP folio counts HPAGE_PMD_NR.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from kscand.core.counters import (
    SERIES_COUNTERS,
    CounterFamily,
    CounterKey,
    MigrateDrop,
    PageSkip,
    VmaSkip,
    counter_key,
)
from kscand.machine import ProcessId

__all__ = ["SERIES_COUNTERS", "MigrateDrop", "PageSkip", "Stats", "VmaSkip"]


@dataclass
class Stats:
    """Counters in total and per process; per-process counters outlive the process.

    The keys are CounterKeys (str subclasses): a reader may index with the plain name.
    """

    total: Counter[str] = field(default_factory=Counter)
    per_proc: dict[ProcessId, Counter[str]] = field(default_factory=dict)

    def add(self, proc: ProcessId | None, counter: CounterKey | CounterFamily, value: int = 1,
            **labels: int | str) -> None:
        """Count value under counter (a family's counter: with its labels, e.g. node=1)."""
        key = counter_key(counter, labels)
        if not value:
            return
        self.total[key] += value
        if proc is not None:
            self.per_proc.setdefault(proc, Counter())[key] += value

    def of(self, proc: ProcessId) -> Counter[str]:
        return self.per_proc.get(proc, Counter())

    def snapshot(self) -> dict[str, int]:
        """Totals with every series counter present (zero when never counted)."""
        out: dict[str, int] = {name: 0 for name in SERIES_COUNTERS}
        out.update(self.total)
        return dict(sorted(out.items()))
