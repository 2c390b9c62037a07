"""kscand end to end on a real two-tier kernel: one guest boot per kernel runs two scenarios
(testbed/inguest.py) and these tests judge what they wrote.

- idle kernel: access_source = "page_idle"; stock Debian 6.12: access_source = "damon".
- Tunables (FAST_TUNABLES in testbed/scenarios.py): scan_delay_ms = 0, a 200 ms scan
  period for page_idle (1.5 s for DAMON, whose snapshots refresh once a second),
  default_scale = 1; everything else is the default (on DAMON, whose regions blur the
  edges of the hot run, that is 3 consecutive accessed scans before a promotion:
  promote_young_scans; see the comment there).
- "promote": a 256 MiB workload bound to node 1 touches a hot 10 % in a loop (pages
  scattered at random for page_idle; one contiguous run for DAMON, whose regions cannot
  single out scattered pages and blur the edges of runs) and shares an 8 MiB MAP_SHARED
  buffer with a forked child; a second, 64 MiB workload exits abruptly 2 s after the
  daemon first lists it, while kscand scans it. Then SIGTERM.
- "full": a filler bound to node 0 (not scanned) leaves 40 MiB free there; then the same
  workload.
- Each scenario runs until what it waits for happened or the main workload had a number
  of complete scans (testbed/scenarios.py's PromoteLimits, FullLimits), with a generous
  upper bound in time: the tests judge kscand after scans, not after a wall-clock window
  (under load a DAMON step took 14-18 s).
- The workloads flush their TLB before each pass (workload.py's TlbFlusher): QEMU's
  TCG caches every translation of the hot set, so an Accessed bit page_idle or DAMON
  cleared (without a flush, as the kernel does) was not set again until something
  flushed that vCPU's TLB; DAMON, which needs an access within its 5 ms sample, once
  saw none of the hot set for 48 s. A real TLB reaches a few MiB of a 25 MiB hot set.
- Both run with kernel.numa_balancing = 0 (Debian's stock kernel boots with 1, whose
  NUMA hinting faults would move the hot set to node 0 by themselves); the tests check
  that every page on node 0 is one kscand migrated.

A failure prints the scenario's errors, the numbers, the daemon's counters and the
tail of its log.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from testbed.scenarios import FullLimits, PromoteLimits

from .conftest import BOOT_SLACK_S, SCENARIO_SLACK_S, require_guest
from .scenario import (
    CASE_IDS,
    CASES,
    Scenario,
    inguest_command,
    load_scenario,
    measured_before_status,
    share,
)

pytestmark = pytest.mark.guest

# >= 90 % on node 0 within this many scans of main, by access source (measured: see the
# scans_at_90 the scenario records; on DAMON a scan without a fresh snapshot is no look)
HOT_SCANS_MAX = {"page_idle": PromoteLimits().judge_scans,
                 "damon": PromoteLimits().damon_judge_scans}
HOT_SHARE_MIN = 0.90
COLD_STAY_MIN = 0.95
STOP_DEADLINE_S = 10.0  # SIGTERM to exit (the daemon waits for at most one batch)


@dataclass(frozen=True)
class Boot:
    kernel: str
    source: str
    promote: Scenario
    full: Scenario


@pytest.fixture(scope="module", params=CASES, ids=CASE_IDS)
def boot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Boot:
    """One guest boot per kernel: the promote scenario, then the full one."""
    kernel, source = request.param
    limit_s = BOOT_SLACK_S + PromoteLimits().max_s + FullLimits().max_s + 2 * SCENARIO_SLACK_S
    guest = require_guest(kernel, timeout_s=limit_s)
    rwdir = tmp_path_factory.mktemp(f"e2e-{kernel}")
    result = guest.run_commands(
        [inguest_command("promote", source), inguest_command("full", source)], rwdir
    )
    return Boot(kernel, source, load_scenario(result, "promote"), load_scenario(result, "full"))


# --- the scenario ran as meant --------------------------------------------------------------


def test_scenarios_ran_without_errors_on_the_forced_source(boot: Boot) -> None:
    for scenario in (boot.promote, boot.full):
        assert scenario["errors"] == [], scenario.explain()
        status = scenario.get("status") or {}
        assert status.get("access_source") == boot.source, scenario.explain()
        # QEMU's TCG breaks numpy's AVX2 argsort; testbed/guest.py turns it off.
        assert scenario["main"]["numpy_sorts_right"], scenario.explain()


def test_workload_starts_on_the_slow_node(boot: Boot) -> None:
    first = boot.promote.timeline[0]
    for group in ("hot", "cold", "shared"):
        assert share(first, group, 1) == 1.0, boot.promote.explain()


def test_kscand_is_the_only_mechanism_moving_pages(boot: Boot) -> None:
    """Debian's stock kernel boots with numa_balancing = 1, which promotes the hot set by
    itself on this guest: the scenarios turn it off, and every page of the workload on
    node 0 must be one kscand migrated."""
    for scenario in (boot.promote, boot.full):
        numab = scenario["numa_balancing"]
        assert numab["mode"] == 0 and numab["hint_faults"] == 0, scenario.explain()
        last = measured_before_status(scenario)
        on_node0 = sum(last.get(group, {}).get("node0", 0) for group in ("hot", "cold", "shared"))
        assert on_node0 <= scenario.totals.get("nr_kscand_migrated", 0), scenario.explain()


# --- promotion ----------------------------------------------------------------------------


def test_hot_pages_reach_the_top_tier_within_the_judged_scans(boot: Boot) -> None:
    scenario = boot.promote
    reached = scenario["reached_90_s"]
    assert reached is not None, (
        f"never {HOT_SHARE_MIN:.0%} on node 0 in {scenario.main_scans} complete scans of the "
        f"workload\n{scenario.explain()}"
    )
    assert scenario["scans_at_90"] <= HOT_SCANS_MAX[boot.source], scenario.explain()
    assert share(scenario.timeline[-1], "hot", 0) >= HOT_SHARE_MIN, scenario.explain()
    migrated = scenario.totals.get("nr_kscand_migrated", 0)
    assert migrated >= HOT_SHARE_MIN * scenario["main"]["nr_hot"], scenario.explain()


def test_cold_pages_stay_on_the_slow_node(boot: Boot) -> None:
    scenario = boot.promote
    for line in scenario.timeline:
        assert share(line, "cold", 1) >= COLD_STAY_MIN, f"{line}\n{scenario.explain()}"


def test_shared_pages_are_not_moved(boot: Boot) -> None:
    scenario = boot.promote
    assert scenario["main"]["nr_shared"] > 0
    for line in scenario.timeline:
        assert share(line, "shared", 1) == 1.0, f"{line}\n{scenario.explain()}"
    assert scenario.totals.get("page_shared", 0) > 0, scenario.explain()


def test_process_exiting_mid_scan_is_no_error(boot: Boot) -> None:
    scenario = boot.promote
    assert scenario["exiter"]["exit_status"] == 0, scenario.explain()  # it did exit, abruptly
    # It exits only once the daemon listed it (or after 300 s: then this fails).
    assert scenario.get("exiter_seen_s") is not None, scenario.explain()
    alive = scenario["daemon_alive_after_exiter"]
    assert len(alive) >= 3 and all(alive), scenario.explain()
    # The scenario waits (bounded) until the daemon counted the exit; absent: never counted.
    assert scenario.totals.get("nr_kscand_mm_exit", 0) >= 1, scenario.explain()
    assert scenario.daemon_counters.get("step_errors", 0) == 0, scenario.explain()
    assert scenario["daemon_alive_at_end"], scenario.explain()


def test_sigterm_stops_the_daemon_promptly(boot: Boot) -> None:
    for scenario in (boot.promote, boot.full):
        daemon = scenario["daemon"]
        assert daemon["exit_status"] == 0, scenario.explain()
        assert daemon["stop_s"] is not None and daemon["stop_s"] <= STOP_DEADLINE_S
        log = scenario.daemon_log()
        assert "stopping (SIGTERM)" in log, scenario.explain()
        assert "Traceback" not in log and " ERROR: " not in log, scenario.explain()


# --- node 0 nearly full -----------------------------------------------------------------------


def test_full_top_tier_counts_refusals_and_keeps_running(boot: Boot) -> None:
    scenario = boot.full
    assert scenario["filler"]["node"] == 0
    assert scenario["daemon_alive_at_end"] and scenario["filler_alive_at_end"], scenario.explain()
    totals = scenario.totals
    refused = totals.get("drop_target_full", 0) + totals.get("nr_kscand_migrate_failed", 0)
    assert refused > 0, (
        f"no refusal in {scenario.main_scans} complete scans of the workload (judged after "
        f"{FullLimits().judge_scans})\n{scenario.explain()}"
    )
    assert scenario.daemon_counters.get("step_errors", 0) == 0, scenario.explain()
