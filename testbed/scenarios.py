"""The end-to-end scenarios the guest tests judge (tests/guest/test_guest_*.py): kscand
and workloads on the two-tier guest, what they did written to OUT/result.json.

- promote: a 256 MiB workload on the slow node 1 with a hot 10 %, and a second one that
  exits while it is scanned.
- full: a filler that kscand does not scan leaves node 0 nearly full; promotions must be
  refused and counted.
- exchange: a cold filler that kscand does scan fills node 0 first; kscand must demote
  its pages to make room for the workload's hot set.

Each one runs until the main workload has had a number of complete scans (or what it
waits for happened first), with a generous upper bound in time: under TCG on a loaded
host a step of the daemon took 14-18 s with the DAMON source, so a fixed window judged
a daemon that had hardly scanned. Time 0 is the moment the main workload is ready.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.actors import WORKLOAD_COMM, Daemon, Tunables, Workload, WorkloadSpec
from testbed.guestio import (
    POLL_S,
    DamonRegionLog,
    Result,
    first_time_at,
    node_free_mib,
    node_meminfo_mib,
    numa_balancing,
    recorded,
    wait_s,
)

# Tunables of the end-to-end tests: new processes are scanned at once and every
# 200 ms (x1: default_scale 1) instead of after 2 s and every 2 s x 1.78. DAMON's
# snapshot of a process is refreshed once a second (DamonSettings.refresh_ms) and
# each snapshot is reported once, so a DAMON scan period under 1 s would read
# "not accessed" between refreshes and no page would ever be accessed in two
# consecutive scans: 1.5 s for DAMON. And DAMON reports regions, whose edges
# straddle the hot run's for a snapshot or two as they split and merge: with the
# series' hot_history_depth 2, 0.9-12 % of the cold pages were promoted (5 runs,
# the worst on a loaded host); requiring 3 consecutive accessed snapshots kept
# 99.6-100 % of them in place. kscand's default does that now on DAMON
# (promote_young_scans = 0 -> kscand.live.damon.DAMON_YOUNG_SCANS): the
# hot_history_depth = 3 set here before only applied with rank_hotness = false, and
# with first evidence 5.3 % of the cold pages were promoted (CI, 2026-12-02).
FAST_TUNABLES: dict[str, Tunables] = {
    "page_idle": {
        "scan_delay_ms": 0,
        "mm_scan_period_ms": 200,
        "scan_period_min_ms": 200,
        "scan_period_max_ms": 1000,
        "default_scale": 1,
    },
    "damon": {
        "scan_delay_ms": 0,
        "mm_scan_period_ms": 1500,
        "scan_period_min_ms": 1500,
        "scan_period_max_ms": 3000,
        "default_scale": 1,
    },
}
# What the exchange scenario adds to FAST_TUNABLES: the engine of 2026-12-01 demotes
# only with demote_watermark_pct > 0 (src/kscand/core/demoter.py). THE SWITCH: once the engine
# exchanges by default when the top tier is short, make this {} and the exchange test
# asserts kscand's default behaviour.
EXCHANGE_TUNABLES: Tunables = {}  # kscand's defaults: exchange is on when node 0 is short
HOT_SHARE = 0.9
FILLER_COMM = f"{WORKLOAD_COMM}-fill"  # scanned: kscand's comm_patterns is kscand-wl*


def main_layout(source: str) -> str:
    """page_idle sees each page: hot pages scattered at random. DAMON sees regions (kscand
    asks for at most 200 per process) whose edges straddle hot and cold pages: one
    contiguous hot run, two edges (with 4 runs up to 6 % of the cold pages went along)."""
    return "scattered" if source == "page_idle" else "contiguous"


@dataclass
class ScanLog:
    """The main workload's complete scans over time, from the daemon's state file."""

    daemon: Daemon
    pid: int
    ready_wall: float
    samples: list[tuple[float, int]]

    def poll(self) -> tuple[dict[str, Any], int]:
        """(the daemon's state, main's complete scans) now; records a sample on change."""
        state = self.daemon.state() or {}
        scans = self.daemon.full_scans(self.pid, state)
        if not self.samples or self.samples[-1][1] != scans:
            self.samples.append((round(time.time() - self.ready_wall, 1), scans))
        return state, scans


@dataclass(frozen=True)
class PromoteLimits:
    """How long the promote scenario runs (TCG: generous)."""

    judge_scans: int = 10  # complete scans of main after which it is judged
    # On DAMON a scan is a look only where a snapshot came since the last one (a batch
    # with none is AccessUnknown), and a page needs 3 looks in a row (DAMON_YOUNG_SCANS).
    # With a host core busy, steps took 3-14 s and the hot set reached node 0 after the
    # 10th scan (83.6 s; 97 batches unknown): DAMON is judged after twice as many.
    damon_judge_scans: int = 20
    max_s: float = 600.0  # upper bound from ready, for scans that never complete
    settle_s: float = 6.0  # keeps running after 90 %, so a late wrong move would show
    # The exiting workload exits this long after the daemon first lists it (it must have
    # seen it: under load a step took 40 s, and an exiter with a fixed 8 s life was gone
    # before the daemon ever looked, so no exit was counted); it waits at most
    # exiter_seen_max_s for that.
    exiter_life_s: float = 2.0
    exiter_seen_max_s: float = 300.0


def run_promote(
    source: str, out: Path, limits: PromoteLimits | None = None, tunables: Tunables | None = None
) -> None:
    """kscand (fast tunables) on a 256 MiB workload with a shared buffer, plus one
    workload that exits while being scanned; until 90 % of the hot pages are on node 0
    and the daemon counted the exit, or main had judge_scans complete scans."""
    limits = limits or PromoteLimits()
    tunables = {**FAST_TUNABLES[source], **(tunables or {})}
    with recorded("promote", out) as result, numa_balancing(0, result):
        result.data.update(source=source, tunables=tunables, limits=limits.__dict__)
        daemon = Daemon(source, tunables, out)
        spec = WorkloadSpec(name="main", layout=main_layout(source), shared_mib=8, flush_tlb=True)
        main = Workload(spec, out)
        exiter: Workload | None = None
        try:
            result.data["main"] = main.wait_ready()
            daemon.wait_up()
            exiter = Workload(
                WorkloadSpec(name="exiter", size_mib=64, hot_pct=100, layout="contiguous",
                             comm=f"{WORKLOAD_COMM}-exit", exit_file=True, flush_tlb=True),
                out,
            )  # fmt: skip
            result.data["exiter"] = exiter.wait_ready()
            _poll_promotion(main, exiter, daemon, limits, result)
            result.data["exiter"]["exit_status"] = exiter.proc.poll()
            result.data["daemon_alive_at_end"] = daemon.alive()
            result.data["status"] = daemon.fresh_state()
        finally:
            result.data["main_timeline"] = main.timeline()
            result.data["main_exit_status"] = main.stop()
            if exiter is not None and exiter.proc.poll() is None:
                exiter.proc.kill()
                exiter.proc.wait()
            daemon.stop()
            result.data["daemon"] = daemon.summary()


def _poll_promotion(
    main: Workload, exiter: Workload, daemon: Daemon, limits: PromoteLimits, result: Result
) -> None:
    """Wait for 90 % of main's hot pages on node 0 and for the daemon to count the
    exiter's exit, or for judge_scans complete scans of main (then the test judges)."""
    ready_wall = float(main.info["ready_wall"])
    scans = ScanLog(daemon, main.pid, ready_wall, [])
    judge_scans = limits.damon_judge_scans if daemon.source == "damon" else limits.judge_scans
    reached_s: float | None = None
    alive_after_exit: list[bool] = []
    exiter_ready_wall = float(exiter.info["ready_wall"])
    seen_wall: float | None = None  # when the daemon first listed the exiter
    lo, hi = (int(a) for a in main.info["buffer"])
    regions = DamonRegionLog(main.pid, lo, hi, enabled=daemon.source == "damon")
    while time.time() - ready_wall < limits.max_s:
        regions.poll(time.time() - ready_wall)
        state, nr_scans = scans.poll()
        if reached_s is None:
            reached_s = first_time_at(main.timeline(), "hot", 0, HOT_SHARE)
            if reached_s is not None:
                result.data["scans_at_90"] = nr_scans
        now = time.time()
        if seen_wall is None and daemon.lists(exiter.pid, state):
            seen_wall = now
            result.data["exiter_seen_s"] = round(now - ready_wall, 1)
        waited_out = now - exiter_ready_wall >= limits.exiter_seen_max_s
        if (seen_wall is not None and now - seen_wall >= limits.exiter_life_s) or waited_out:
            exiter.exit_abruptly()
        if exiter.proc.poll() is not None:
            alive_after_exit.append(daemon.alive())
        exit_counted = daemon.total("nr_kscand_mm_exit", state) >= 1
        if exit_counted and "exit_counted_s" not in result.data:
            result.data["exit_counted_s"] = round(time.time() - ready_wall, 1)
        if not daemon.alive():
            result.errors.append(f"kscand exited early ({daemon.proc.returncode})")
            break
        if (
            exit_counted
            and len(alive_after_exit) >= 3
            and (reached_s is not None or nr_scans >= judge_scans)
        ):
            break
        wait_s(POLL_S)
    if reached_s is not None:
        wait_s(limits.settle_s)
    result.data.update(reached_90_s=reached_s, main_scans=scans.samples,
                       daemon_alive_after_exiter=alive_after_exit)  # fmt: skip
    if regions.samples:
        result.data["damon_regions"] = regions.samples


@dataclass(frozen=True)
class FullLimits:
    """The node-0-full scenario: how much room the filler leaves and how long to watch."""

    # Node 0's free memory the filler (MPOL_BIND node 0) leaves when it starts: with
    # less it is OOM-killed while populating. The daemon's and the workload's own
    # allocations then take node 0 down to its watermarks, under kscand's 2 % floor.
    leave_mib: int = 40
    min_scans: int = 4  # once refusals were counted, until main had this many scans
    judge_scans: int = 12  # without a refusal by then, stop (the test fails)
    max_s: float = 600.0


def run_full(
    source: str, out: Path, limits: FullLimits | None = None, tunables: Tunables | None = None
) -> None:
    """A filler bound to node 0 (not scanned) leaves it nearly full; then kscand and a
    256 MiB workload whose 25 MiB hot set does not fit in what is left."""
    limits = limits or FullLimits()
    tunables = {**FAST_TUNABLES[source], **(tunables or {})}
    with recorded("full", out) as result, numa_balancing(0, result):
        result.data.update(source=source, tunables=tunables, limits=limits.__dict__)
        filler = Workload(
            WorkloadSpec(name="filler", node=0, keep_bind=True, hold=True, hot_pct=0.0001,
                         fill_leave_mib=limits.leave_mib, comm="kscand-fill"),
            out,
        )  # fmt: skip
        daemon: Daemon | None = None
        main: Workload | None = None
        free: list[tuple[float, float]] = []
        regions: DamonRegionLog | None = None
        try:
            result.data["filler"] = filler.wait_ready()
            result.data["node0_free_mib_after_filler"] = node_free_mib(0)
            daemon = Daemon(source, tunables, out)
            main = Workload(WorkloadSpec(name="main", layout="contiguous", flush_tlb=True), out)
            result.data["main"] = main.wait_ready()
            daemon.wait_up()
            ready_wall = float(main.info["ready_wall"])
            scans = ScanLog(daemon, main.pid, ready_wall, [])
            lo, hi = (int(a) for a in main.info["buffer"])
            regions = DamonRegionLog(main.pid, lo, hi, enabled=source == "damon")
            while time.time() - ready_wall < limits.max_s and daemon.alive():
                t_s = round(time.time() - ready_wall, 1)
                free.append((t_s, node_free_mib(0)))
                regions.poll(t_s)
                state, nr_scans = scans.poll()
                refused = daemon.total("drop_target_full", state) + daemon.total(
                    "nr_kscand_migrate_failed", state
                )
                if (refused and nr_scans >= limits.min_scans) or nr_scans >= limits.judge_scans:
                    break
                wait_s(POLL_S)
            result.data["main_scans"] = scans.samples
            result.data["daemon_alive_at_end"] = daemon.alive()
            result.data["filler_alive_at_end"] = filler.proc.poll() is None
            result.data["status"] = daemon.fresh_state()
        finally:
            result.data["node0_free_mib"] = free
            if regions is not None and regions.samples:
                result.data["damon_regions"] = regions.samples
            if main is not None:
                result.data["main_timeline"] = main.timeline()
                result.data["main_exit_status"] = main.stop()
            if daemon is not None:
                daemon.stop()
                result.data["daemon"] = daemon.summary()
            result.data["filler_exit_status"] = filler.stop()


@dataclass(frozen=True)
class ExchangeLimits:
    """The exchange scenario: the cold filler's leftover room and how long to watch."""

    leave_mib: int = 40  # node 0's free memory the filler leaves (see FullLimits)
    # The workload's hot share: 20 % (51 MiB) is 2.8 times the room left on a 512 MiB
    # node 0 at ready (18 MiB above kscand's 2 % floor, measured), so most of the hot
    # set comes up only if kscand demotes.
    hot_pct: float = 20.0
    # Complete scans of main after which it is judged. With one host core kept busy
    # kscand's steps took up to 50 s under TCG (20 of them in 538 s) and 80 % of the hot
    # set was on node 0 after 20 scans; idle, 90 % came after 14 scans (110 s). The
    # scenario stops at 90 %, so the longer bound costs only a loaded run.
    judge_scans: int = 40
    max_s: float = 1200.0
    settle_s: float = 6.0
    filler_report_s: float = 10.0  # the filler's own placement reports (~215k pages: ~2 s each)


def filler_spec(leave_mib: int, report_interval_s: float) -> WorkloadSpec:
    """A cold process that fills node 0 first: bound there, populated, then never touched;
    named so that kscand scans it (its idle top-tier pages are what it may demote)."""
    return WorkloadSpec(name="filler", node=0, keep_bind=True, hold=True, hot_pct=0.0001,
                        fill_leave_mib=leave_mib, comm=FILLER_COMM,
                        report_interval_s=report_interval_s)  # fmt: skip


def run_exchange(
    source: str,
    out: Path,
    limits: ExchangeLimits | None = None,
    tunables: Tunables | None = None,
) -> None:
    """A cold filler fills node 0; kscand and a 256 MiB workload bound to node 1 whose
    25 MiB hot set does not fit in what is left: kscand must demote the filler to
    promote the hot set. Until 90 % of it is on node 0 or main had judge_scans scans."""
    limits = limits or ExchangeLimits()
    tunables = {**FAST_TUNABLES[source], **EXCHANGE_TUNABLES, **(tunables or {})}
    with recorded("exchange", out) as result, numa_balancing(0, result):
        result.data.update(source=source, tunables=tunables, limits=limits.__dict__,
                           exchange_tunables=EXCHANGE_TUNABLES)  # fmt: skip
        filler = Workload(filler_spec(limits.leave_mib, limits.filler_report_s), out)
        daemon: Daemon | None = None
        main: Workload | None = None
        free: list[tuple[float, float]] = []
        try:
            result.data["filler"] = filler.wait_ready()
            daemon = Daemon(source, tunables, out)
            spec = WorkloadSpec(name="main", layout=main_layout(source), flush_tlb=True,
                                hot_pct=limits.hot_pct)  # fmt: skip
            main = Workload(spec, out)
            result.data["main"] = main.wait_ready()
            result.data["node0_mib_at_ready"] = {
                "total": node_meminfo_mib(0, "MemTotal"),
                "free": node_free_mib(0),
            }
            daemon.wait_up()
            result.data["reached_90_s"] = _poll_exchange(main, daemon, limits, free, result)
            result.data["daemon_alive_at_end"] = daemon.alive()
            result.data["filler_alive_at_end"] = filler.proc.poll() is None
            result.data["status"] = daemon.fresh_state()
        finally:
            result.data["node0_free_mib"] = free
            if main is not None:
                result.data["main_timeline"] = main.timeline()
                result.data["main_exit_status"] = main.stop()
            if daemon is not None:
                daemon.stop()
                result.data["daemon"] = daemon.summary()
            result.data["filler_exit_status"] = filler.stop()
            result.data["filler_timeline"] = filler.timeline()


def _poll_exchange(
    main: Workload,
    daemon: Daemon,
    limits: ExchangeLimits,
    free: list[tuple[float, float]],
    result: Result,
) -> float | None:
    """Until 90 % of main's hot pages are on node 0 (then settle_s more) or judge_scans
    complete scans of main; the time of the 90 %."""
    ready_wall = float(main.info["ready_wall"])
    scans = ScanLog(daemon, main.pid, ready_wall, [])
    reached_s: float | None = None
    while time.time() - ready_wall < limits.max_s:
        free.append((round(time.time() - ready_wall, 1), node_free_mib(0)))
        _, nr_scans = scans.poll()
        if not daemon.alive():
            result.errors.append(f"kscand exited early ({daemon.proc.returncode})")
            break
        reached_s = first_time_at(main.timeline(), "hot", 0, HOT_SHARE)
        if reached_s is not None:
            result.data["scans_at_90"] = nr_scans
            wait_s(limits.settle_s)
            break
        if nr_scans >= limits.judge_scans:
            break
        wait_s(POLL_S)
    result.data["main_scans"] = scans.samples
    return reached_s
