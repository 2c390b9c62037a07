"""Simulator benchmark: the scan path against a minimal numpy kernel, a full run, and the
cost of many processes; every figure a ratio measured side by side in this run.

Run: .venv/bin/python bench/bench_sim.py [--duration-s 120] [--procs 1000 10000]

- scan path: simulated PTEs scanned per CPU second by the engine's scan passes
  (throttling off), and the same number of PTEs through reference_kernel(), the
  least numpy work per PTE the scan path does (read flags and nids, test-and-clear
  an Accessed bitmap, push a uint8 history, select candidates): the ratio is the
  scan path's speed as a fraction of the approach's limit (1.0 = at it). The
  reference runs before and after the scan path; their mean is the measure.
- full run: a duration_s virtual run with the default tunables; its CPU seconds
  against the reference's for the PTEs the run scanned (x times the kernel's work).
- processes: 3 s virtual with 1,000 and with 10,000 small processes (1 MiB each,
  a top tier half their size): the CPU ratio, against the target of 15x (linear
  would be 10x). After the peak RSS line: its RSS is the many processes' own.
CPU time is the measure (a shared, noisy machine; the simulator is one thread).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import resource
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kscand.core.engine import Kscand
from kscand.machine import PAGE_SHIFT, PageFlag
from kscand.sim.machine import SimMachine
from kscand.sim.run import run_scenario
from kscand.sim.scenario import Scenario, load_scenario, scenario_from_mapping

HERE = Path(__file__).resolve().parent
SCALE_TARGET = 15.0  # 10x the processes may cost at most this many times the CPU (issue 14)
SCALE_DURATION_S = 3.0
REFERENCE_BATCH_PAGES = 1 << 15  # pages per read: the engine's history chunk (128 MiB)
REFERENCE_HOT_FRACTION = 0.1  # pages the reference's "workload" sets Accessed between scans
REFERENCE_THRESHOLD = 2  # history value a candidate needs (two recent scans accessed)


def scan_rate(scenario_path: Path, nr_rounds: int) -> tuple[float, float, int]:
    """(PTEs per CPU s, PTEs per wall s, PTEs) of the engine's scan passes.

    One warm-up round first (history arrays allocated, the hot set promoted),
    then nr_rounds rounds of scan passes only: the scan path, not migration.
    """
    scenario = load_scenario(scenario_path)
    # Throttling off (every process due at every pass): this measures the scan path.
    tunables = scenario.tunables.replace(
        scan_delay_ms=0, mm_scan_period_ms=1, scan_period_min_ms=1, scan_period_max_ms=1,
        default_scale=1, scan_size_min_bytes=scenario.tunables.scan_size_bytes,
        scan_size_max_bytes=scenario.tunables.scan_size_bytes,
    )
    machine = SimMachine(scenario)
    engine = Kscand(machine, tunables)
    passes_per_round = sum(
        v.size_bytes for p in scenario.processes for v in p.vmas
    ) // tunables.scan_size_bytes
    pause_ns = tunables.scan_sleep_ms * 1_000_000  # virtual: costs no wall time
    for _ in range(passes_per_round):
        engine.step()
        machine.clock.sleep_ns(pause_ns)
    start_ptes = engine.stats.total["nr_kscand_ptes_scanned"]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(nr_rounds * passes_per_round):
        engine.scan_pass()
        machine.clock.sleep_ns(pause_ns)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ptes = engine.stats.total["nr_kscand_ptes_scanned"] - start_ptes
    return ptes / cpu, ptes / wall, ptes


def reference_kernel(flags: npt.NDArray[np.uint32], nids: npt.NDArray[np.int8],
                     accessed: npt.NDArray[np.bool_], hot: npt.NDArray[np.bool_],
                     history: npt.NDArray[np.uint8], toptier: npt.NDArray[np.bool_],
                     sl: slice) -> int:
    """One batch of the scan path's per-PTE work, nothing else: the workload sets the hot
    pages' Accessed bits, then read flags and nids, keep the eligible pages, test and
    clear their Accessed bits, push them into the uint8 history, select the slow-tier
    pages accessed on the last REFERENCE_THRESHOLD scans. Returns the candidates."""
    accessed[sl] |= hot[sl]
    page_flags, nid = flags[sl], nids[sl]
    eligible = (page_flags & np.uint32(PageFlag.PRESENT | PageFlag.LRU)) == np.uint32(
        PageFlag.PRESENT | PageFlag.LRU)
    young = accessed[sl] & eligible
    accessed[sl] = False
    pushed = (history[sl] << np.uint8(1)) | young.view(np.uint8)
    history[sl] = pushed
    mask = np.uint8((1 << REFERENCE_THRESHOLD) - 1)
    want = young & ~toptier[nid.astype(np.intp) + 1] & ((pushed & mask) == mask)
    return int(np.flatnonzero(want).shape[0])


def reference_rate(nr_pages: int, nr_ptes: int) -> float:
    """PTEs per CPU s of reference_kernel over a nr_pages page table, nr_ptes PTEs in all
    (whole passes of REFERENCE_BATCH_PAGES batches, like the scan path's ranges)."""
    rng = np.random.default_rng(1)
    flags = np.full(nr_pages, PageFlag.PRESENT | PageFlag.LRU | PageFlag.ANON, dtype=np.uint32)
    nids = np.ones(nr_pages, dtype=np.int8)  # on the slow node
    nids[: nr_pages // 8] = 0
    hot = rng.random(nr_pages, dtype=np.float32) < REFERENCE_HOT_FRACTION
    accessed = np.zeros(nr_pages, dtype=np.bool_)
    history = np.zeros(nr_pages, dtype=np.uint8)
    toptier = np.array([False, True, False])  # indexed by nid + 1: node 0 is top tier
    done = nr_candidates = 0
    cpu0 = time.process_time()
    while done < nr_ptes:
        for start in range(0, nr_pages, REFERENCE_BATCH_PAGES):
            sl = slice(start, min(nr_pages, start + REFERENCE_BATCH_PAGES))
            nr_candidates += reference_kernel(flags, nids, accessed, hot, history, toptier, sl)
            done += sl.stop - sl.start
            if done >= nr_ptes:
                break
    cpu = time.process_time() - cpu0
    assert nr_candidates > 0  # the kernel selected something: it did the whole work
    return done / cpu


def small_processes(nr_procs: int) -> Scenario:
    """nr_procs processes of 1 MiB (a 10 % hot set) on the slow node, a top tier holding
    half of them: the same per-process picture whatever nr_procs."""
    return scenario_from_mapping({
        "name": f"small-{nr_procs}", "seed": 1, "duration_s": SCALE_DURATION_S,
        "sample_interval_s": 0.5,
        "nodes": [
            {"nid": 0, "capacity": f"{nr_procs // 2}MiB", "cpus": True, "tier": 4,
             "latency_ns": 80},
            {"nid": 1, "capacity": f"{2 * nr_procs}MiB", "cpus": False, "tier": 67,
             "latency_ns": 300},
        ],
        "processes": [{
            "name": "svc", "count": nr_procs, "placement": "slow",
            "workload": {"kind": "hotset", "hot_fraction": 0.1, "hot_share": 0.9,
                         "rate_per_s": 2e5},
            "vmas": [{"kind": "anon", "size": "1MiB"}],
        }],
    })


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_cpu_s(scenario: Scenario) -> float:
    cpu0 = time.process_time()
    run_scenario(scenario)
    return time.process_time() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--scenario", type=Path, default=HERE / "sim-64g.toml")
    parser.add_argument("--procs", type=int, nargs=2, default=(1000, 10000),
                        metavar=("FEW", "MANY"), help="process counts of the scaling line")
    args = parser.parse_args()

    scenario = load_scenario(args.scenario)
    nr_pages = sum(v.size_bytes for p in scenario.processes for v in p.vmas) >> PAGE_SHIFT
    nr_ptes = 2 * nr_pages  # the scan path's two rounds
    ref_before = reference_rate(nr_pages, nr_ptes)
    cpu_rate, wall_rate, scanned = scan_rate(args.scenario, nr_rounds=2)
    scan_rss_mib = peak_rss_mib()
    gc.collect()  # the scan path's machine and engine (they reference each other) go
    ref_after = reference_rate(nr_pages, scanned)
    ref_rate = (ref_before + ref_after) / 2
    print(f"scan path : {cpu_rate / 1e6:.1f} M PTEs per CPU s, {wall_rate / 1e6:.1f} M per wall"
          f" s; numpy reference {ref_rate / 1e6:.1f} M per CPU s (before {ref_before / 1e6:.1f},"
          f" after {ref_after / 1e6:.1f}): ratio {cpu_rate / ref_rate:.3f}")

    full = dataclasses.replace(scenario, duration_s=args.duration_s)
    cpu0 = time.process_time()
    report = run_scenario(full)
    cpu = time.process_time() - cpu0
    ptes = report.counters["nr_kscand_ptes_scanned"]
    print(f"full run  : {full.duration_s:.0f} s virtual in {report.wall_s:.1f} s wall, {cpu:.1f} s"
          f" CPU for {ptes / 1e6:.0f} M PTEs = {cpu * ref_rate / ptes:.1f}x the reference's CPU"
          f" for them; t90 {report.t90_s} s, final top-tier share"
          f" {report.final.top_share:.3f} (oracle {report.final.oracle_share:.3f})")

    print(f"peak RSS  : {peak_rss_mib():.0f} MiB after the full run, {scan_rss_mib:.0f} MiB"
          " after the scan path")

    few, many = args.procs
    cpu_few = run_cpu_s(small_processes(few))
    cpu_many = run_cpu_s(small_processes(many))
    ratio = cpu_many / cpu_few
    print(f"processes : {SCALE_DURATION_S:g} s virtual, {few:,} small processes {cpu_few:.1f} s"
          f" CPU, {many:,} {cpu_many:.1f} s CPU: {ratio:.1f}x for {many / few:g}x the processes"
          f" (target <= {SCALE_TARGET * many / few / 10:g}x, ratio to target"
          f" {SCALE_TARGET * many / few / 10 / ratio:.2f})")


if __name__ == "__main__":
    main()
