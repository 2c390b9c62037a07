"""What the daemon exports to Prometheus: duration histograms and the counter-to-metric map.

Pure and dependency-free: the daemon measures step and move-batch durations
whether or not the endpoint is on, and the maps below decide how each
kscand counter appears: by its type (kscand.core.counters), never by parsing
its name. The HTTP endpoint itself (kscand.daemon.prometheus) needs
the optional prometheus_client package and is imported only when
`--metrics` or daemon.metrics asks for it.

Metric names (counters get prometheus_client's `_total` suffix):
- nr_kscand_*: the series' counters over every process kscand has scanned;
  kscand_process_<name>{pid, comm}: the same per live process (at most
  MAX_PROCESS_SERIES of them, most promoted first: bounded cardinality).
- kscand_skipped_vmas{reason}, kscand_skipped_pages{reason},
  kscand_skipped_scans{reason}, kscand_dropped_pages{reason}: every skip and
  drop counter, by its reason (the enum member's name, lower case).
- kscand_move_failed_pages{reason}, kscand_demote_failed_pages{reason}: the
  move failures, by the label of their family (the errno name).
- kscand_promoted_bytes{node}: bytes promoted to each target node (its label).
- kscand_other_events{name}: every other counter.
- kscand_scan_step_duration_seconds, kscand_move_batch_duration_seconds:
  histograms of engine.step() and of each move_pages(2) batch.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from kscand.core.counters import (
    CounterFamily,
    CounterName,
    EngineCounter,
    EngineFamily,
    Labelled,
    MigrateDrop,
    PageSkipped,
    ScanSkip,
    Series,
    VmaSkip,
)
from kscand.errors import Unsupported
from kscand.machine import PAGE_SIZE

MAX_PROCESS_SERIES = 200  # per-process series exported per counter (most promoted first)
STEP_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MOVE_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                  0.5, 1.0, 2.5)


class DurationHistogram:
    """A Prometheus-style histogram of durations: fixed upper bounds, counts, sum.

    observe_ns() runs in the daemon's loop thread, snapshot() in the metrics
    thread; a lock keeps the two consistent (a bucket count never exceeds the
    total count).
    """

    def __init__(self, bounds_s: Sequence[float]) -> None:
        self.bounds_s = tuple(sorted(bounds_s))
        self._bounds_ns = [round(b * 1e9) for b in self.bounds_s]
        self._counts = [0] * (len(self.bounds_s) + 1)  # the last one: above every bound
        self._sum_ns = 0
        self._lock = threading.Lock()

    def observe_ns(self, duration_ns: int) -> None:
        index = bisect.bisect_left(self._bounds_ns, duration_ns)  # first bound >= duration
        with self._lock:
            self._counts[index] += 1
            self._sum_ns += duration_ns

    def snapshot(self) -> tuple[list[tuple[float, int]], int, float]:
        """(cumulative (upper bound s, count) pairs ending with +inf, count, sum s)."""
        with self._lock:
            counts = list(self._counts)
            sum_ns = self._sum_ns
        cumulative = []
        running = 0
        for bound, count in zip((*self.bounds_s, float("inf")), counts, strict=True):
            running += count
            cumulative.append((bound, running))
        return cumulative, running, sum_ns / 1e9


@dataclass(frozen=True, slots=True)
class CounterMetric:
    """Where one kscand counter goes: metric family, its label (name, value), the factor."""

    family: str
    label: tuple[str, str] | None = None
    factor: int = 1


# Counters exported each as a family of its own name.
OWN_FAMILIES: tuple[type[CounterName], ...] = (Series, EngineCounter)
# Enum of reasons -> its metric family; the reason label is the member's name, lower case.
REASON_FAMILIES: dict[type[CounterName], str] = {
    VmaSkip: "kscand_skipped_vmas",
    PageSkipped: "kscand_skipped_pages",
    ScanSkip: "kscand_skipped_scans",
    MigrateDrop: "kscand_dropped_pages",
}
# Labelled family (one label) -> (metric family, the factor to its unit).
LABELLED_FAMILIES: dict[CounterFamily, tuple[str, int]] = {
    EngineFamily.MOVE_FAILED: ("kscand_move_failed_pages", 1),
    EngineFamily.DEMOTE_MOVE_FAILED: ("kscand_demote_failed_pages", 1),
    EngineFamily.PROMOTED_PAGES_NODE: ("kscand_promoted_bytes", PAGE_SIZE),
}

FAMILY_HELP: dict[str, str] = {
    "kscand_demote_failed_pages": "base pages whose demotion move failed, by errno",
    "kscand_move_failed_pages": "base pages whose promotion move failed, by errno",
    "kscand_dropped_pages": "queued candidate base pages dropped without a move, by reason",
    "kscand_skipped_vmas": "VMAs skipped by the scan, by reason",
    "kscand_skipped_pages": "pages skipped by the scan, by reason",
    "kscand_skipped_scans": "process visits skipped or ended early, by reason",
    "kscand_promoted_bytes": "bytes promoted to each top-tier node",
    "kscand_other_events": "other kscand counters, by name",
}


def counter_metric(key: str) -> CounterMetric:
    """The metric family (and label) a kscand counter is exported as, from its type;
    TypeError for a plain str (the status's counters are typed keys)."""
    if isinstance(key, OWN_FAMILIES):
        return CounterMetric(str(key))
    if isinstance(key, Labelled):
        where = LABELLED_FAMILIES.get(key.family)
        if where is not None and len(key.labels) == 1:
            return CounterMetric(where[0], key.labels[0], where[1])
        return CounterMetric("kscand_other_events", ("name", str(key)))
    if isinstance(key, CounterName):
        family = REASON_FAMILIES.get(type(key))
        if family is not None:
            return CounterMetric(family, ("reason", key.name.lower()))
        return CounterMetric("kscand_other_events", ("name", str(key)))
    raise TypeError(f"not a kscand counter: {type(key).__name__} {key!r}")


def process_family(counter: Series) -> str:
    """The per-process family of a series counter (nr_kscand_migrated ->
    kscand_process_migrated)."""
    return "kscand_process_" + counter.name.lower()


METRICS_MISSING = (
    "the metrics endpoint needs the prometheus_client package: "
    "pip install 'kscand[metrics]' (or run without --metrics / daemon.metrics)"
)


def require_prometheus_client() -> None:
    """Unsupported with one line when the optional prometheus_client is not installed."""
    try:
        import prometheus_client  # noqa: F401 (only whether it imports)
    except ImportError as err:
        raise Unsupported(METRICS_MISSING) from err
