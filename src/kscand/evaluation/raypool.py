"""`kscand compare --ray`: the runs on a Ray cluster instead of the local worker pool.

Ray is the optional `ray` extra and is imported only here, only when asked for. Every
task is compare.run_one on the same RunTask the local pool gets, so the results are the
same as a local run's with the same seed (the runs are deterministic per seed). Progress
is per run: a run reports 100 % when its result is back.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from kscand.errors import ClusterError, ConfigError
from kscand.evaluation.compare import POLL_S, Progress, RunResult, RunTask, run_one

EXTRA_HINT = "pip install 'kscand[ray]'"
CONNECT_TIMEOUT_S = 10.0  # a TCP connect to the head, then ray.init, each at most this long
# Ray's own defaults start a dashboard and stream every worker's log to this terminal.
LOCAL_OPTIONS: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}

Runner = Callable[[RunTask], RunResult]


def import_ray() -> Any:
    """The ray module, or a one-line ConfigError naming the extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray: needs Ray: {EXTRA_HINT}") from None
    return ray


def head_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a "HOST:PORT" or "ray://HOST:PORT" address; None for Ray's own
    words ("auto", "local") that name no endpoint to check."""
    rest = address.removeprefix("ray://")
    if ":" not in rest:
        return None
    host, _, port = rest.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--ray: bad address {address!r} (HOST:PORT or ray://HOST:PORT)")
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """Fail in bounded time when nothing listens at the address (ray.init itself retries
    for minutes and floods stderr)."""
    endpoint = head_endpoint(address)
    if endpoint is None:
        return
    try:
        with socket.create_connection(endpoint, timeout=timeout_s):
            pass
    except OSError as err:
        raise ClusterError(f"--ray: cannot reach the Ray head at {address}: "
                           f"{err.strerror or err}") from None


def connect(address: str | None, timeout_s: float = CONNECT_TIMEOUT_S,
            **local_options: Any) -> Any:
    """Connect to the cluster at address, or start a local Ray (address None); an
    already initialised Ray is used as it is. The ray module."""
    ray = import_ray()
    if address is not None:
        check_reachable(address, timeout_s)
    if ray.is_initialized():
        return ray
    failure: list[BaseException] = []

    def init() -> None:
        try:
            if address is None:
                ray.init(**{**LOCAL_OPTIONS, **local_options})
            else:
                ray.init(address=address, log_to_driver=False)
        except Exception as err:  # reported below, in the caller's thread
            failure.append(err)

    # A local start takes seconds; a head that accepts TCP but is no Ray never answers.
    thread = threading.Thread(target=init, name="ray-init", daemon=True)
    thread.start()
    thread.join(timeout_s if address is not None else max(timeout_s, 60.0))
    where = address or "a local instance"
    if thread.is_alive():
        raise ClusterError(f"--ray: no answer from Ray at {where} within {timeout_s:g} s")
    if failure:
        raise ClusterError(f"--ray: cannot start or join Ray at {where}: {failure[0]}")
    return ray


def run_on_ray(ray: Any, tasks: list[RunTask], progress: Progress | None,
               runner: Runner = run_one) -> list[RunResult]:
    """Every task as one Ray task (never retried: a run that fails is reported); the
    results in the tasks' order."""
    remote = ray.remote(max_retries=0, num_cpus=1)(runner)
    pending = {remote.remote(task): task for task in tasks}
    results: dict[int, RunResult] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for ref in done:
                task = pending.pop(ref)
                results[task.index] = _result(ray, ref, task)
                if progress is not None:
                    progress(task.index, 1.0)
    except BaseException:
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    return [results[t.index] for t in tasks]


def _result(ray: Any, ref: Any, task: RunTask) -> RunResult:
    try:
        result: RunResult = ray.get(ref)
    except ray.exceptions.RayTaskError as err:  # the run raised in its worker
        cause = err.cause if err.cause is not None else err
        raise ClusterError(f"--ray: run {task.spec.label!r} failed: "
                           f"{type(cause).__name__}: {_first_line(cause)}") from None
    except ray.exceptions.RayError as err:  # the worker (or its node) died
        raise ClusterError(f"--ray: run {task.spec.label!r} lost its worker: "
                           f"{type(err).__name__}") from None
    return result


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0] if lines else ""


def ray_pool(address: str | None, **local_options: Any) -> Callable[
        [list[RunTask], Progress | None], list[RunResult]]:
    """compare()'s pool for --ray: connect now (before any run), run the tasks later."""
    ray = connect(address, **local_options)

    def pool(tasks: list[RunTask], progress: Progress | None) -> list[RunResult]:
        return run_on_ray(ray, tasks, progress)

    return pool
