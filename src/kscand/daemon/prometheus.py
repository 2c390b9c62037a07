"""The Prometheus text endpoint (`kscand run --metrics 127.0.0.1:PORT`), on prometheus_client.

Imported only when the endpoint is wanted (prometheus_client is the optional
extra `metrics`). One HTTP thread ("kscand-metrics") serves GET /metrics;
each scrape reads the daemon's published status snapshot (rebuilt by the loop
thread when a step ended since) and the duration histograms, so the endpoint
never touches the engine. See kscand.daemon.metrics for the metric names.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kscand.config import MetricsAddress
from kscand.core.stats import SERIES_COUNTERS
from kscand.daemon.metrics import (
    FAMILY_HELP,
    MAX_PROCESS_SERIES,
    DurationHistogram,
    counter_metric,
    process_family,
)
from kscand.errors import KscandError

CLIENT_TIMEOUT_S = 5.0  # a scraper that stalls is dropped after this long
POLL_INTERVAL_S = 0.1  # how quickly close() stops the server thread
# Access source counters that go up and down (the rest only grow).
ACCESS_SOURCE_GAUGES = frozenset({"kdamonds_tracking", "processes_refused"})

StatusFn = Callable[[], dict[str, Any]]


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def histogram_family(name: str, doc: str, histogram: DurationHistogram) -> Metric:
    buckets, _count, sum_s = histogram.snapshot()
    family = HistogramMetricFamily(name, doc, labels=[])
    family.add_metric([], [(_le(b), float(c)) for b, c in buckets], sum_value=sum_s)
    return family


def _by_promoted(process: dict[str, Any]) -> tuple[int, int]:
    return (-int(process.get("counters", {}).get("nr_kscand_migrated", 0)),
            int(process.get("pid", 0)))


def total_families(totals: dict[str, int]) -> Iterator[Metric]:
    """Every counter in total: nr_kscand_* by name, the rest by their label (typed keys)."""
    families: dict[str, CounterMetricFamily] = {}
    for name, value in sorted(totals.items()):
        where = counter_metric(name)
        family = families.get(where.family)
        if family is None:
            doc = FAMILY_HELP.get(where.family, f"kscand counter {name} (base pages unless "
                                                "the name says otherwise)")
            labels = [where.label[0]] if where.label else []
            family = families[where.family] = CounterMetricFamily(where.family, doc,
                                                                  labels=labels)
        family.add_metric([where.label[1]] if where.label else [], value * where.factor)
    yield from families.values()


def process_families(processes: list[dict[str, Any]]) -> Iterator[Metric]:
    """The series' counters per live process (pid, comm), at most MAX_PROCESS_SERIES."""
    shown = sorted(processes, key=_by_promoted)[:MAX_PROCESS_SERIES]
    for name in SERIES_COUNTERS:
        family_name = process_family(name)
        family = CounterMetricFamily(family_name, f"{name} of each live process",
                                     labels=["pid", "comm"])
        for p in shown:
            family.add_metric([str(p.get("pid")), str(p.get("comm", ""))],
                              int(p.get("counters", {}).get(name, 0)))
        yield family
    omitted = GaugeMetricFamily(
        "kscand_process_series_omitted",
        f"live processes left out of the kscand_process_* series (only the {MAX_PROCESS_SERIES} "
        "most promoted are exported)",
        value=max(0, len(processes) - len(shown)),
    )
    yield omitted


def daemon_families(status: dict[str, Any]) -> Iterator[Metric]:
    """The daemon's own counters, the queue, the process count, tunables and an info line."""
    info = GaugeMetricFamily("kscand_info", "kscand version, machine and access source (1)",
                             labels=["version", "machine", "access_source"])
    info.add_metric([str(status.get("version", "")), str(status.get("machine", "")),
                     str(status.get("access_source", ""))], 1)
    yield info
    for name, value in sorted(status.get("daemon", {}).items()):
        if isinstance(value, int) and not name.endswith(("_last", "_max")):
            yield CounterMetricFamily(f"kscand_daemon_{name}", f"daemon counter {name}",
                                      value=value)
    for name, value in sorted((status.get("access_source_counters") or {}).items()):
        if not isinstance(value, int):
            continue
        if name in ACCESS_SOURCE_GAUGES:
            yield GaugeMetricFamily(f"kscand_access_source_{name}", f"access source: {name}",
                                    value=value)
        else:
            yield CounterMetricFamily(f"kscand_access_source_{name}", f"access source: {name}",
                                      value=value)
    queue = status.get("queue", {})
    yield GaugeMetricFamily("kscand_queued_folios", "promotion candidates queued now (folios)",
                            value=queue.get("queued_folios", 0))
    yield GaugeMetricFamily("kscand_processes", "processes in the scan list now",
                            value=len(status.get("processes", [])))
    tunables = GaugeMetricFamily("kscand_tunable", "the value of each tunable (bool: 0/1)",
                                 labels=["name"])
    for name, value in sorted(status.get("tunables", {}).items()):
        if isinstance(value, bool | int | float):
            tunables.add_metric([name], float(value))
    yield tunables


class KscandCollector(Collector):
    """Builds every metric family at scrape time from the status snapshot."""

    def __init__(self, status: StatusFn, step: DurationHistogram,
                 move_batch: DurationHistogram) -> None:
        self.status = status
        self.step = step
        self.move_batch = move_batch

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        yield from total_families(status.get("totals", {}))
        yield from process_families(status.get("processes", []))
        yield from daemon_families(status)
        yield histogram_family("kscand_scan_step_duration_seconds",
                               "duration of one engine step (scan pass + migration)", self.step)
        yield histogram_family("kscand_move_batch_duration_seconds",
                               "duration of one move_pages(2) batch", self.move_batch)


class _QuietHandler(WSGIRequestHandler):
    timeout = CLIENT_TIMEOUT_S

    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def _server_class(host: str) -> type[_Server]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(_Server):
        address_family = family

    return Server


class MetricsServer:
    """GET /metrics on address, served by one thread; close() stops it."""

    def __init__(self, address: MetricsAddress, collector: KscandCollector,
                 thread_setup: Callable[[], None] | None = None) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        try:
            self._httpd = make_server(address.host, address.port, make_wsgi_app(registry),
                                      server_class=_server_class(address.host),
                                      handler_class=_QuietHandler)
        except OSError as err:
            raise KscandError(
                f"metrics endpoint {address}: cannot listen: {err.strerror or err}"
            ) from err
        host, port = self._httpd.server_address[:2]
        self.address = MetricsAddress(str(host), int(port))
        self._thread_setup = thread_setup
        self._thread = threading.Thread(target=self._serve, name="kscand-metrics", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.address}/metrics"

    def _serve(self) -> None:
        if self._thread_setup is not None:
            self._thread_setup()
        self._httpd.serve_forever(poll_interval=POLL_INTERVAL_S)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._httpd.shutdown()
            self._httpd.server_close()
        self._thread.join(timeout=1.0)
