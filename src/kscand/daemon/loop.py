"""The Daemon: the engine, its loop thread, the control socket and the state file.

kscand.daemon explains the threads and how a stop interrupts a step. The loop
thread is the only one that touches the engine; other threads (signal handlers,
the control socket) only set flags, queue calls and read the published snapshot.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kscand import __version__
from kscand.backends import Backend
from kscand.config import Config, load_config
from kscand.core.engine import Kscand
from kscand.core.tunables import Tunables
from kscand.daemon.announce import log_start
from kscand.daemon.control import ControlServer
from kscand.daemon.loopcalls import LoopCalls
from kscand.daemon.metrics import (
    MOVE_BUCKETS_S,
    STEP_BUCKETS_S,
    DurationHistogram,
    require_prometheus_client,
)
from kscand.daemon.protocol import handle_request
from kscand.daemon.reload import plan_reload
from kscand.daemon.retune import apply_tunable_changes, check_target_node, tunables_diff
from kscand.daemon.rules import RuleScalePolicy
from kscand.daemon.signals import EXIT_FAILURE, EXIT_OK, block_daemon_signals
from kscand.daemon.snapshot import DaemonCounters, build_snapshot, daemon_section
from kscand.daemon.statedir import prepare_state_dir, remove_state, socket_path, write_state_file
from kscand.daemon.stopguard import StepAbandoned, StopGuard
from kscand.daemon.trace import open_trace
from kscand.errors import ConfigError, KscandError
from kscand.machine import ProcessId, Topology

if TYPE_CHECKING:  # imported only when the endpoint is on (prometheus_client is optional)
    from kscand.daemon.prometheus import MetricsServer

log = logging.getLogger("kscand")

LONG_STEP_NS = 1_000_000_000
MAX_FAILED_STEPS = 10  # consecutive steps failing with a KscandError before giving up
SNAPSHOT_WAIT_S = 0.5  # how long a status request waits for the loop (then: the last one)
LOOP_CALL_TIMEOUT_S = 2.0  # how long a control request waits for the loop to run it
PRUNE_SLACK = 64  # exited processes whose counters may linger before a prune


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
        guard = StopGuard(backend.machine, self.stopping, self.move_batch_durations)
        self.scale_policy = RuleScalePolicy(guard, config.process_rules, backend.scale_policy)
        self.engine = Kscand(
            guard, config.tunables, trace=self.trace, scale_policy=self.scale_policy,
            source_young_scans=backend.source_young_scans,
        )
        self._metrics: MetricsServer | None = None  # when daemon.metrics is set
        self.counters = DaemonCounters()
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
        self._loop_calls = LoopCalls(self._lock, self._wake)
        # Guarded by _lock:
        self._stop_reason: str | None = None
        self._reload_requested = False
        self._desired_tunables = config.tunables
        self._snapshot_wanted = False
        self._snapshot: dict[str, Any] = {}
        self._snapshot_ns = 0
        self._snapshot_steps = 0  # _steps_done when the snapshot was built
        self._steps_done = 0  # steps ended (completed, abandoned or failed)
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
        """The control-socket commands (runs in the control thread; kscand.daemon.protocol)."""
        return handle_request(self, request)

    def scale_in_loop(self, pid: int, scale: int) -> list[dict[str, Any]]:
        """Set the scale of the scanned process(es) with this pid, in the loop thread."""
        out: list[dict[str, Any]] = self.call_in_loop(lambda: self._set_scale(pid, scale))
        return out

    def call_in_loop(self, fn: Callable[[], Any], timeout_s: float = LOOP_CALL_TIMEOUT_S) -> Any:
        """Run fn in the loop thread between steps (the only thread that may touch the
        engine) and return its result; KscandError if the loop does not get to it in time."""
        return self._loop_calls.call(fn, timeout_s, self.stopping)

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
        log_start(self.config, self.backend, self.engine.tunables, self.metrics_url)
        self._publish("running")
        self._write_state_file()

    def _start_metrics(self) -> None:
        """The Prometheus endpoint (daemon.metrics / --metrics), in its own thread."""
        address = self.config.daemon.metrics
        if address is None:
            return
        from kscand.daemon.prometheus import KscandCollector, MetricsServer

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
        self._loop_calls.run_pending()
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
        plan = plan_reload(self.config, new)
        if plan.needs_restart:
            log.warning(
                "reload: %s changed; that takes effect after a restart",
                ", ".join(plan.needs_restart),
            )
        self.trace.set_level(new.daemon.trace_level)
        if plan.rules_changed:
            self.scale_policy.set_rules(new.process_rules)
            log.info(
                "reload: %d [[process]] rules; they apply to processes that appear from now "
                "on (kscand scale PID N changes a running one)", len(new.process_rules),
            )
        self.config = plan.config
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
        listed = {slot.proc for slot in self.engine.mm_list}
        self.scale_policy.forget_except(listed)  # the name cache, bounded by the mm list
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
        """Everything `kscand status` shows, as plain JSON data (kscand.daemon.snapshot)."""
        comms = {slot.proc: self._comm(slot.proc) for slot in self.engine.mm_list}
        header = {
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
        }
        daemon = daemon_section(self.counters, {
            "control_refused": self._server.nr_refused if self._server else 0,
            "trace_events": self.trace.nr_events,
            "trace_errors": self.trace.nr_errors,
        })
        return build_snapshot(header, daemon, self.engine, comms)
