"""The kscand daemon: a khugepaged-shaped loop around the engine, with signals and a control socket.

Threads
-------
- main: run_foreground() installs SIGTERM/SIGINT/SIGHUP handlers that only
  set a flag and wake the loop, then waits for the loop thread.
- loop ("kscand"): engine.step(), then an interruptible sleep of
  scan_sleep_ms. Between steps (and when woken during the sleep) it applies
  a config reload or new tunables, publishes a status snapshot and rewrites
  state_dir/status.json. It is the only thread that touches the engine.
- control ("kscand-ctl"): serves the Unix socket (kscand.control). It reads
  only the published snapshot and the desired tunables; changes go to the
  loop through `_desired_tunables` and take effect on the next step.
- metrics ("kscand-metrics", only with daemon.metrics / --metrics): serves the
  Prometheus endpoint (kscand.prometheus) from the published snapshot and the
  step and move-batch duration histograms, which the loop fills.
The loop, control and metrics threads block the daemon's signals, so the
kernel delivers them to the main thread and never interrupts an engine syscall.

How long one step can take, and how a stop interrupts it
--------------------------------------------------------
A step scans at most mms_to_scan processes, each for at most
scan_size_bytes of VMA, read in ranges of at most one 128 MiB history chunk,
then moves at most migrate_queue_max queued folios in move_pages(2) batches
of migrate_batch_folios. The engine gets the machine through _StopGuard:
once a stop is requested, the next range read or move batch raises
StepAbandoned instead of starting, so the step ends at the next such
boundary. A move_pages(2) call already running completes (the kernel moves
each page or leaves it; no batch is half issued), and the folios still
queued are dropped: they are only hints and are found again after a restart.
The stop therefore waits for at most one range read (milliseconds) or one
move batch (512 folios; worst case 512 THPs = 1 GiB of copying); steps
longer than LONG_STEP_NS are logged and counted as long_steps.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from kscand import __version__
from kscand.config import Config, load_config
from kscand.control import ControlServer
from kscand.core.engine import Kscand, ScalePolicy
from kscand.core.throttle import SCALE_MAX
from kscand.core.tunables import Tunables, coerce_tunable, tunable_fields
from kscand.errors import ConfigError, KscandError
from kscand.machine import (
    BoolArray,
    Clock,
    I32Array,
    Machine,
    PageBatch,
    ProcessId,
    ProcessInfo,
    Topology,
    U64Array,
    Vma,
)
from kscand.metrics import (
    MOVE_BUCKETS_S,
    STEP_BUCKETS_S,
    DurationHistogram,
    require_prometheus_client,
)
from kscand.rules import RuleScalePolicy
from kscand.statedir import prepare_state_dir, remove_state, socket_path, write_state_file
from kscand.trace import open_trace

if TYPE_CHECKING:  # imported only when the endpoint is on (prometheus_client is optional)
    from kscand.prometheus import MetricsServer

log = logging.getLogger("kscand")

DAEMON_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
LONG_STEP_NS = 1_000_000_000
STOP_GRACE_S = 0.9  # how long run_foreground waits for the loop after a stop request
BACKEND_CLOSE_WAIT_S = 5.0  # ... and then, with the socket closed, before closing the backend
MAX_FAILED_STEPS = 10  # consecutive steps failing with a KscandError before giving up
SNAPSHOT_WAIT_S = 0.5  # how long a status request waits for the loop (then: the last one)
LOOP_CALL_TIMEOUT_S = 2.0  # how long a control request waits for the loop to run it
PRUNE_SLACK = 64  # exited processes whose counters may linger before a prune
EXIT_OK = 0
EXIT_FAILURE = 1


def _no_counters() -> dict[str, int]:
    return {}


def _noop() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Backend:
    """The machine the daemon drives, and what to tell the operator about it."""

    machine: Machine
    kind: str  # "live", or "sim:<scenario>"
    access_source: str  # page_idle | damon | simulated
    access_source_reason: str  # one sentence: why this source
    close: Callable[[], None] = _noop
    # The access source's own counters (DAMON snapshots, pages it could not judge, ...).
    access_counters: Callable[[], dict[str, int]] = _no_counters
    # Simulated machines keep virtual time: told how long the daemon really slept.
    after_sleep: Callable[[int], None] | None = None
    # Tunables the machine comes with (a scenario's [tunables]), used without --config.
    tunables: Tunables | None = None
    # Scales the machine gives processes no [[process]] rule matches (a scenario's `scale`).
    scale_policy: ScalePolicy | None = None


class StepAbandoned(Exception):
    """Raised into the engine by _StopGuard when a stop is requested mid-step."""


class _StopGuard:
    """The Machine as the engine sees it in the daemon: each range read or move batch
    first checks for a stop request (see the module docstring); move batches are timed."""

    def __init__(
        self,
        machine: Machine,
        stopping: Callable[[], bool],
        move_batch: DurationHistogram | None = None,
    ) -> None:
        self._machine = machine
        self._stopping = stopping
        self._move_batch = move_batch
        self.clock: Clock = machine.clock

    def _check(self) -> None:
        if self._stopping():
            raise StepAbandoned

    def topology(self) -> Topology:
        return self._machine.topology()

    def processes(self) -> list[ProcessId]:
        return self._machine.processes()

    def describe(self, proc: ProcessId) -> ProcessInfo:
        return self._machine.describe(proc)

    def is_alive(self, proc: ProcessId) -> bool:
        return self._machine.is_alive(proc)

    def vmas(self, proc: ProcessId) -> list[Vma]:
        self._check()
        return self._machine.vmas(proc)

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        self._check()
        return self._machine.read_range(proc, start, end)

    def read_pages(self, proc: ProcessId, vaddrs: U64Array) -> PageBatch:
        self._check()
        return self._machine.read_pages(proc, vaddrs)

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> BoolArray:
        return self._machine.test_and_clear_young(proc, pages)

    def move_pages(self, proc: ProcessId, vaddrs: U64Array, nid: int) -> I32Array:
        self._check()
        start_ns = time.monotonic_ns()
        try:
            return self._machine.move_pages(proc, vaddrs, nid)
        finally:
            if self._move_batch is not None:
                self._move_batch.observe_ns(time.monotonic_ns() - start_ns)


def block_daemon_signals() -> None:
    """Block SIGTERM/SIGINT/SIGHUP in the calling thread (they belong to the main thread)."""
    signal.pthread_sigmask(signal.SIG_BLOCK, DAEMON_SIGNALS)


def apply_tunable_changes(base: Tunables, changes: Any) -> Tunables:
    """base with {name: value} applied, validated exactly like the config's [tunables]."""
    if not isinstance(changes, dict) or not changes:
        raise ConfigError('set: expected "tunables": {NAME: VALUE, ...} with at least one name')
    coerced = {name: coerce_tunable(str(name), value, "") for name, value in changes.items()}
    return base.replace(**coerced)


def target_node_problem(target_node: int, topology: Topology) -> str | None:
    """Why target_node cannot be a promotion target on this topology, or None.

    -1 (the first top-tier node) always can; any other value must name a
    top-tier node, or every candidate would be dropped (drop_no_target).
    """
    if target_node < 0:
        return None
    top = topology.top_tier_nids
    if target_node in topology.slow_tier_nids:
        return (f"target_node {target_node} is on the slow tier; promotion targets are "
                f"top-tier nodes ({', '.join(map(str, top)) or 'none'})")
    if target_node not in top:
        nids = ", ".join(str(n.nid) for n in topology.nodes) or "none"
        return f"target_node {target_node}: no such node on this machine (nodes: {nids})"
    return None


def check_target_node(tunables: Tunables, topology: Topology) -> None:
    """ConfigError (one line) when tunables.target_node is not a top-tier node."""
    problem = target_node_problem(tunables.target_node, topology)
    if problem is not None:
        raise ConfigError(problem)


def _scale_request(request: dict[str, Any]) -> tuple[int, int]:
    """(pid, scale) of a `scale` request, checked; ConfigError naming the bad field."""
    pid, scale = request.get("pid"), request.get("scale")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        raise ConfigError(f"scale: pid must be a positive integer, got {pid!r}")
    if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= SCALE_MAX:
        raise ConfigError(f"scale: scale must be an integer 0..{SCALE_MAX}, got {scale!r}")
    return pid, scale


def tunables_diff(old: Tunables, new: Tunables) -> str:
    """'name old -> new, ...' for the fields that differ ('' when none)."""
    a, b = old.as_dict(), new.as_dict()
    return ", ".join(f"{k} {a[k]} -> {b[k]}" for k in a if a[k] != b[k])


def tunables_table() -> list[dict[str, Any]]:
    """Name, unit, range and description of every tunable (for `kscand tune`)."""
    return [
        {
            "name": f.name,
            "unit": f.metadata["unit"],
            "min": f.metadata["min"],
            "max": f.metadata["max"],
            "doc": f.metadata["doc"],
        }
        for f in tunable_fields()
    ]


@dataclass
class _DaemonCounters:
    """The daemon's own counters (the engine's are in engine.stats)."""

    counts: Counter[str] = field(default_factory=Counter)
    step_ns_last: int = 0
    step_ns_max: int = 0
    consecutive_failures: int = 0


class Daemon:
    """One kscand daemon: engine, loop, control socket and state file."""

    def __init__(
        self,
        config: Config,
        backend: Backend,
        *,
        config_path: Path | None = None,
        allowed_uids: frozenset[int] | None = None,
        log_level_override: str | None = None,
        overrides: Callable[[Config], Config] | None = None,
    ) -> None:
        self.config = config
        # The command line's --state-dir/--metrics, applied to every reloaded config too.
        self._overrides = overrides
        self.backend = backend
        self.config_path = config_path
        self.trace = open_trace(
            config.daemon.trace, backend.machine.clock.now_ns, config.daemon.trace_level
        )
        self.step_durations = DurationHistogram(STEP_BUCKETS_S)
        self.move_batch_durations = DurationHistogram(MOVE_BUCKETS_S)
        guard = _StopGuard(backend.machine, self.stopping, self.move_batch_durations)
        self.scale_policy = RuleScalePolicy(guard, config.process_rules, backend.scale_policy)
        self.engine = Kscand(
            guard, config.tunables, trace=self.trace, scale_policy=self.scale_policy
        )
        self._metrics: MetricsServer | None = None  # when daemon.metrics is set
        self.counters = _DaemonCounters()
        self.exit_status = EXIT_OK
        self._allowed_uids = allowed_uids
        self._log_level_override = log_level_override  # `kscand run --log-level` beats reloads
        self._server: ControlServer | None = None
        self._owns_state = False
        self._backend_closed = False
        # The node tiers target_node is checked against (start, reload, every state write).
        self._topology = Topology(nodes=())
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._snapshot_cond = threading.Condition(self._lock)
        # Guarded by _lock:
        self._stop_reason: str | None = None
        self._reload_requested = False
        self._desired_tunables = config.tunables
        self._loop_calls: list[tuple[Callable[[], Any], Future[Any]]] = []
        self._snapshot_wanted = False
        self._snapshot: dict[str, Any] = {}
        self._snapshot_ns = 0
        self._snapshot_steps = 0  # _steps_done when the snapshot was built
        self._steps_done = 0  # steps ended (completed, abandoned or failed)
        self._state = "starting"
        self._started_mono_ns = time.monotonic_ns()
        self._started_wall = time.time()
        self._state_written_ns = 0
        self._state_write_error = ""

    # -- requests from other threads (signal handlers, the control socket) ---

    def stopping(self) -> bool:
        return self._stop_reason is not None

    def request_stop(self, reason: str) -> None:
        """Ask the loop to stop after the current range read or move batch."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    def request_reload(self) -> None:
        """Ask the loop to re-read the config file (SIGHUP)."""
        self._reload_requested = True
        self._wake.set()

    @property
    def tunables(self) -> Tunables:
        """The tunables the next step uses."""
        with self._lock:
            return self._desired_tunables

    def set_tunables(self, changes: Any) -> Tunables:
        """Validate {name: value} and queue it for the next step; returns the result."""
        with self._lock:
            new = apply_tunable_changes(self._desired_tunables, changes)
            check_target_node(new, self._topology)
            self._desired_tunables = new
        self._wake.set()
        return new

    def status(self) -> dict[str, Any]:
        """The latest status snapshot, rebuilt first by the loop if a step ended since.

        Waits at most SNAPSHOT_WAIT_S (a long step may be running), then
        answers with the last snapshot and its age.
        """
        with self._lock:
            if self._snapshot_steps != self._steps_done:
                old_ns = self._snapshot_ns
                self._snapshot_wanted = True
                self._wake.set()
                self._snapshot_cond.wait_for(
                    lambda: self._snapshot_ns != old_ns, timeout=SNAPSHOT_WAIT_S
                )
            snapshot = dict(self._snapshot)
            snapshot_ns = self._snapshot_ns
        now = time.monotonic_ns()
        snapshot["snapshot_age_s"] = round((now - snapshot_ns) / 1e9, 3)
        snapshot["uptime_s"] = round((now - self._started_mono_ns) / 1e9, 3)
        return snapshot

    def handle_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The control-socket commands (runs in the control thread)."""
        cmd = request["cmd"]
        if cmd == "ping":
            return {"pid": os.getpid(), "version": __version__}
        if cmd == "status":
            return {"status": self.status()}
        if cmd == "get":
            return {"tunables": self.tunables.as_dict(), "fields": tunables_table()}
        if cmd == "set":
            new = self.set_tunables(request.get("tunables"))
            return {"tunables": new.as_dict(), "applies": "from the next step"}
        if cmd == "scale":
            pid, scale = _scale_request(request)
            return {"processes": self.call_in_loop(lambda: self._set_scale(pid, scale))}
        raise ConfigError(f"unknown command {cmd!r} (known: get, ping, scale, set, status)")

    def call_in_loop(self, fn: Callable[[], Any], timeout_s: float = LOOP_CALL_TIMEOUT_S) -> Any:
        """Run fn in the loop thread between steps (the only thread that may touch the
        engine) and return its result; KscandError if the loop does not get to it in time."""
        future: Future[Any] = Future()
        with self._lock:
            if self.stopping():
                raise KscandError("the daemon is stopping")
            self._loop_calls.append((fn, future))
        self._wake.set()
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout as err:
            future.cancel()
            raise KscandError(
                f"the daemon's loop is busy (a step has run for more than {timeout_s:g} s); "
                "try again"
            ) from err

    def _set_scale(self, pid: int, scale: int) -> list[dict[str, Any]]:
        """Set the scale of the scanned process(es) with this pid (loop thread only)."""
        procs = [slot.proc for slot in self.engine.mm_list if slot.proc.pid == pid]
        if not procs:
            raise KscandError(f"pid {pid} is not a process kscand scans")
        for proc in procs:
            self.engine.set_scale(proc, scale)
            log.info("scale of pid %d (%s) set to %d", pid, proc, scale)
        self._snapshot_wanted = True
        return [{"pid": p.pid, "start_time": p.start_time, "scale": scale} for p in procs]

    # -- life cycle ----------------------------------------------------------

    def start(self) -> None:
        """Prepare the state directory, start the control socket and the metrics endpoint,
        say what runs."""
        if self.config.daemon.metrics is not None:
            require_prometheus_client()  # refuse before touching the state directory
        self._topology = self.backend.machine.topology()
        check_target_node(self.config.tunables, self._topology)
        state_dir = prepare_state_dir(self.config.daemon.state_dir)
        self._server = ControlServer(
            socket_path(state_dir),
            self.handle_request,
            allowed_uids=self._allowed_uids,
            thread_setup=block_daemon_signals,
        )
        self._publish("starting")  # a status request that comes at once gets an answer
        self._server.start()
        self._owns_state = True
        self._start_metrics()
        self._log_start()
        self._publish("running")
        self._write_state_file()

    def _start_metrics(self) -> None:
        """The Prometheus endpoint (daemon.metrics / --metrics), in its own thread."""
        address = self.config.daemon.metrics
        if address is None:
            return
        from kscand.prometheus import KscandCollector, MetricsServer

        collector = KscandCollector(
            self.status, self.step_durations, self.move_batch_durations
        )
        self._metrics = MetricsServer(address, collector, thread_setup=block_daemon_signals)
        if not ipaddress.ip_address(self._metrics.address.host).is_loopback:
            log.warning(
                "the metrics endpoint listens on %s, beyond this host: it has no "
                "authentication", self._metrics.address,
            )

    @property
    def metrics_url(self) -> str | None:
        """Where the Prometheus endpoint answers (the real port when 0 was asked for)."""
        return self._metrics.url if self._metrics is not None else None

    def close(self) -> None:
        """Stop the control socket and metrics endpoint, remove the socket and state file,
        release the machine (the loop thread must have ended)."""
        self.close_services()
        self.close_backend()

    def close_services(self) -> None:
        """Stop the control socket and metrics endpoint, remove the socket and state file."""
        if self._metrics is not None:
            self._metrics.close()
            self._metrics = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._owns_state:  # never remove the socket of another daemon that refused us
            remove_state(self.config.daemon.state_dir)
            self._owns_state = False

    def close_backend(self) -> None:
        """Release the machine and the trace file (after the loop thread ended)."""
        if self._backend_closed:
            return
        self._backend_closed = True
        self.backend.close()
        self.trace.close()

    def _log_start(self) -> None:
        scan = self.config.scan
        selection = [f"pids {list(scan.pids)}"] if scan.pids else []
        selection += [f"cgroups {list(scan.cgroups)}"] if scan.cgroups else []
        selection += [f"commands {list(scan.comm_patterns)}"] if scan.comm_patterns else []
        log.info(
            "kscand %s starting (pid %d) on the %s machine; scanning %s",
            __version__,
            os.getpid(),
            self.backend.kind,
            "; ".join(selection) or "every user process",
        )
        log.info(
            "access source: %s (%s)", self.backend.access_source, self.backend.access_source_reason
        )
        log.info("control socket %s", socket_path(self.config.daemon.state_dir))
        if self.metrics_url is not None:
            log.info("metrics endpoint %s", self.metrics_url)
        if self.config.process_rules:
            log.info("[[process]] rules: %d (first match sets a new process's scale)",
                     len(self.config.process_rules))
        log.info(
            "tunables: %s",
            " ".join(f"{k}={v}" for k, v in self.engine.tunables.as_dict().items()),
        )
        if self.config.daemon.trace:
            log.info(
                "trace events (JSON lines, level %s) to %s",
                self.config.daemon.trace_level, self.config.daemon.trace,
            )

    # -- the loop (its own thread) -----------------------------------------

    def run_loop(self) -> int:
        """Step and sleep until a stop request; returns the exit status."""
        block_daemon_signals()
        try:
            while not self.stopping():
                self._apply_requests()
                self._step()
                if self.stopping():
                    break
                self._publish_if_due()
                self._sleep()
        except Exception:  # a bug in the engine or a backend: say so and let systemd restart
            log.exception("kscand loop failed")
            self.exit_status = EXIT_FAILURE
        log.info(
            "stopping (%s) after %d steps", self._stop_reason or "error",
            self.counters.counts["steps"],
        )
        self._publish("stopped")
        return self.exit_status

    def _step(self) -> None:
        try:
            self._run_step()
        finally:
            self._steps_done += 1

    def _run_step(self) -> None:
        start_ns = time.monotonic_ns()
        try:
            self.engine.step()
        except StepAbandoned:
            self.counters.counts["abandoned_steps"] += 1
            return
        except KscandError as err:
            self._step_failed(err)
            return
        self.counters.consecutive_failures = 0
        elapsed_ns = time.monotonic_ns() - start_ns
        self.step_durations.observe_ns(elapsed_ns)
        self._prune_exited()
        self.counters.counts["steps"] += 1
        self.counters.step_ns_last = elapsed_ns
        self.counters.step_ns_max = max(self.counters.step_ns_max, elapsed_ns)
        if elapsed_ns > LONG_STEP_NS:
            self.counters.counts["long_steps"] += 1
            log.warning(
                "a step took %.1f s: lower mms_to_scan, scan_size_bytes or migrate_queue_max "
                "to keep steps short",
                elapsed_ns / 1e9,
            )

    def _prune_exited(self) -> None:
        """Forget the per-process counters of processes that left the mm list.

        The totals keep what they did; without this a long-running daemon under
        process churn would keep a counter table for every process it ever saw.
        Checked after each step, pruned when the table is twice the list.
        """
        per_proc = self.engine.stats.per_proc
        if len(per_proc) <= 2 * len(self.engine.mm_list) + PRUNE_SLACK:
            return
        listed = {slot.proc for slot in self.engine.mm_list}
        for proc in [p for p in per_proc if p not in listed]:
            del per_proc[proc]
        self.counters.counts["pruned_process_counters"] += 1

    def _step_failed(self, err: KscandError) -> None:
        self.counters.counts["step_errors"] += 1
        self.counters.consecutive_failures += 1
        log.error("step failed: %s", err)
        if self.counters.consecutive_failures >= MAX_FAILED_STEPS:
            log.error("%d steps in a row failed; giving up", MAX_FAILED_STEPS)
            self.exit_status = EXIT_FAILURE
            self.request_stop("repeated step failures")

    def _sleep(self) -> None:
        """Sleep scan_sleep_ms, waking for requests; the deadline follows tunable changes."""
        start_ns = time.monotonic_ns()
        while not self.stopping():
            now_ns = time.monotonic_ns()
            remaining_ns = start_ns + self.engine.tunables.scan_sleep_ms * 1_000_000 - now_ns
            if remaining_ns <= 0:
                break
            state_due_ns = (
                self._state_written_ns + self.config.daemon.status_interval_ms * 1_000_000 - now_ns
            )
            self._wake.wait(max(0, min(remaining_ns, state_due_ns)) / 1e9)
            self._wake.clear()
            self._apply_requests()
            self._publish_if_due()
        if self.backend.after_sleep is not None:
            self.backend.after_sleep(time.monotonic_ns() - start_ns)

    def _apply_requests(self) -> None:
        """Apply a pending reload, pending tunables and calls (loop thread only)."""
        with self._lock:
            calls, self._loop_calls = self._loop_calls, []
        for fn, future in calls:
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except Exception as err:  # the caller gets it (one line) over the socket
                future.set_exception(err)
        if self._reload_requested:
            self._reload_requested = False
            self._reload()
        with self._lock:
            desired = self._desired_tunables
        if desired != self.engine.tunables:
            self._apply_tunables(desired, "control socket")

    def _apply_tunables(self, new: Tunables, source: str) -> None:
        diff = tunables_diff(self.engine.tunables, new)
        self.engine.set_tunables(new)
        self.config = dataclasses.replace(self.config, tunables=new)
        self.counters.counts["tunable_changes"] += 1
        log.info("tunables from %s: %s", source, diff or "unchanged")
        self._snapshot_wanted = True

    def _reload(self) -> None:
        """SIGHUP: re-read the config file; a bad one is logged and the running one kept."""
        if self.config_path is None:
            log.warning("SIGHUP: started without --config, nothing to reload")
            return
        try:
            new = load_config(self.config_path)
            if self._overrides is not None:
                new = self._overrides(new)
            self._topology = self.engine.machine.topology()
            check_target_node(new.tunables, self._topology)
        except ConfigError as err:
            self.counters.counts["reload_errors"] += 1
            log.error("reload failed, keeping the running config: %s", err)
            return
        self.counters.counts["reloads"] += 1
        needs_restart = [
            name
            for name, old_value, new_value in (
                ("[scan]", self.config.scan, new.scan),
                ("[topology]", self.config.topology, new.topology),
                ("daemon.trace", self.config.daemon.trace, new.daemon.trace),
                ("daemon.state_dir", self.config.daemon.state_dir, new.daemon.state_dir),
                ("daemon.metrics", self.config.daemon.metrics, new.daemon.metrics),
            )
            if old_value != new_value
        ]
        if needs_restart:
            log.warning(
                "reload: %s changed; that takes effect after a restart", ", ".join(needs_restart)
            )
        daemon = dataclasses.replace(
            self.config.daemon,
            log_level=new.daemon.log_level,
            status_interval_ms=new.daemon.status_interval_ms,
            trace_level=new.daemon.trace_level,
        )
        self.trace.set_level(new.daemon.trace_level)
        if new.process_rules != self.config.process_rules:
            self.scale_policy.set_rules(new.process_rules)
            log.info(
                "reload: %d [[process]] rules; they apply to processes that appear from now "
                "on (kscand scale PID N changes a running one)", len(new.process_rules),
            )
        self.config = dataclasses.replace(
            self.config, daemon=daemon, process_rules=new.process_rules
        )
        logging.getLogger("kscand").setLevel(
            (self._log_level_override or new.daemon.log_level).upper()
        )
        with self._lock:
            self._desired_tunables = new.tunables
        if new.tunables != self.engine.tunables:
            self._apply_tunables(new.tunables, str(self.config_path))
        else:
            log.info("reloaded %s: tunables unchanged", self.config_path)

    # -- status ----------------------------------------------------------------

    def _publish_if_due(self) -> None:
        now_ns = time.monotonic_ns()
        state_due = now_ns - self._state_written_ns >= self.config.daemon.status_interval_ms * 1e6
        if self._snapshot_wanted or state_due:
            self._publish("running")
        if state_due:
            self._refresh_topology()
            self._write_state_file()

    def _publish(self, state: str) -> None:
        snapshot = self._build_snapshot(state)
        with self._lock:
            self._snapshot = snapshot
            self._snapshot_ns = time.monotonic_ns()
            self._snapshot_steps = self._steps_done
            self._snapshot_wanted = False
            self._snapshot_cond.notify_all()

    def _refresh_topology(self) -> None:
        """Re-read the node tiers for target_node checks (memory hotplug)."""
        try:
            topology = self.engine.machine.topology()
        except KscandError:
            return
        with self._lock:
            self._topology = topology

    def _write_state_file(self) -> None:
        with self._lock:
            snapshot = dict(self._snapshot)
        try:
            write_state_file(self.config.daemon.state_dir, snapshot)
        except OSError as err:
            self.counters.counts["state_write_errors"] += 1
            if self._state_write_error != str(err):  # say it once, not every interval
                log.warning("cannot write the state file: %s", err)
            self._state_write_error = str(err)
        else:
            if self._state_write_error:
                log.info("the state file is written again")
            self._state_write_error = ""
        self._state_written_ns = time.monotonic_ns()

    def _comm(self, proc: ProcessId) -> str:
        """proc's command name, read once per process (loop thread only)."""
        info = self.scale_policy.describe(proc)
        return info.comm if info is not None else ""

    def _build_snapshot(self, state: str) -> dict[str, Any]:
        """Everything `kscand status` shows, as plain JSON data (loop thread only)."""
        engine = self.engine
        counters = self.counters
        slots = list(engine.mm_list)
        self.scale_policy.forget_except({slot.proc for slot in slots})
        processes = [
            {
                "pid": slot.proc.pid,
                "start_time": slot.proc.start_time,
                "comm": self._comm(slot.proc),
                "resume_vaddr": slot.resume_vaddr,
                "full_scans": slot.full_scans,
                "scale": slot.scale,
                "scan_period_ms": round(slot.scan_period_ms, 1),
                "scan_size_bytes": slot.scan_size_bytes,
                "target_nid": slot.target_nid,
                "queued_folios": engine.migrator.queued(slot.proc),
                "counters": dict(sorted(engine.stats.of(slot.proc).items())),
            }
            for slot in slots
        ]
        return {
            "pid": os.getpid(),
            "version": __version__,
            "state": state,
            "machine": self.backend.kind,
            "access_source": self.backend.access_source,
            "access_source_reason": self.backend.access_source_reason,
            "access_source_counters": self.backend.access_counters(),
            "config_path": str(self.config_path) if self.config_path else None,
            "metrics_url": self.metrics_url,
            "started_at": self._started_wall,
            "written_at": time.time(),
            "uptime_s": round((time.monotonic_ns() - self._started_mono_ns) / 1e9, 3),
            "daemon": {
                **{k: counters.counts[k] for k in _DAEMON_COUNTER_NAMES},
                "step_ms_last": round(counters.step_ns_last / 1e6, 3),
                "step_ms_max": round(counters.step_ns_max / 1e6, 3),
                "control_refused": self._server.nr_refused if self._server else 0,
                "trace_events": self.trace.nr_events,
                "trace_errors": self.trace.nr_errors,
            },
            "queue": {
                "queued_folios": engine.migrator.nr_queued,
                "migrate_queue_max": engine.tunables.migrate_queue_max,
            },
            "tunables": engine.tunables.as_dict(),
            "totals": reported_totals(engine.stats.snapshot()),
            "processes": processes,
        }


# Counters the engine counts outside SERIES_COUNTERS that readers of the status rely on:
# present from the first status on, zero until counted (a reader never meets a KeyError).
ALWAYS_REPORTED_TOTALS = ("nr_kscand_mm_enter", "nr_kscand_mm_exit")


def reported_totals(totals: dict[str, int]) -> dict[str, int]:
    """The engine's totals with every ALWAYS_REPORTED_TOTALS name present."""
    out = {name: 0 for name in ALWAYS_REPORTED_TOTALS}
    out.update(totals)
    return dict(sorted(out.items()))


_DAEMON_COUNTER_NAMES = (
    "steps",
    "long_steps",
    "abandoned_steps",
    "step_errors",
    "reloads",
    "reload_errors",
    "tunable_changes",
    "state_write_errors",
)


def run_foreground(daemon: Daemon, early_hangups: Callable[[], int] | None = None) -> int:
    """Run the daemon until SIGTERM/SIGINT (main thread only); returns the exit status.

    The handlers only set flags and wake the loop; SIGHUP asks for a reload.
    early_hangups says how many SIGHUPs came before these handlers (kscand run
    records them from its first line): they become one reload request.

    The backend is closed only after the loop thread has ended: it may be in a
    read of the backend's files or a move_pages(2) call on them. A loop still in
    one after STOP_GRACE_S + BACKEND_CLOSE_WAIT_S leaves the backend open; the
    process exit releases it.
    """
    names = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "SIGINT"}

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        daemon.request_stop(names.get(signal.Signals(signum), str(signum)))

    def on_hup(_signum: int, _frame: FrameType | None) -> None:
        daemon.request_reload()

    # Handlers first: once the socket answers, a client may send SIGTERM at once
    # (a stop requested before the loop starts makes it return at its first check).
    previous = {
        signal.SIGTERM: signal.signal(signal.SIGTERM, on_stop),
        signal.SIGINT: signal.signal(signal.SIGINT, on_stop),
        signal.SIGHUP: signal.signal(signal.SIGHUP, on_hup),
    }
    if early_hangups is not None and early_hangups():
        log.info("SIGHUP during start-up: re-reading the config")
        daemon.request_reload()
    status: list[int] = []
    loop = threading.Thread(
        target=lambda: status.append(daemon.run_loop()), name="kscand", daemon=True
    )
    result: int | None = None
    try:
        daemon.start()
        loop.start()
        while loop.is_alive() and not daemon.stopping():
            loop.join(timeout=0.25)
        loop.join(timeout=STOP_GRACE_S)
        if loop.is_alive():
            # One page-table read or move_pages(2) call outlasted the grace period
            # (seen under QEMU TCG, where a 128 MiB range takes seconds). The stop
            # was asked for, so it is honoured: each page is either moved or not,
            # and the exit status says a stop, not a failure.
            log.warning("the loop did not stop within %.1f s; exiting anyway", STOP_GRACE_S)
            result = EXIT_OK if daemon.stopping() else EXIT_FAILURE
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        daemon.close_services()
        if loop.is_alive():
            loop.join(timeout=BACKEND_CLOSE_WAIT_S)
        if loop.is_alive():
            log.warning("the loop is still in a read or move; leaving the backend to the exit")
        else:
            daemon.close_backend()
    if result is not None:
        return result
    return status[0] if status else EXIT_FAILURE
