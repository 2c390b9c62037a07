"""`make vm-compare`: kscand against the kernel's own tiering in one QEMU guest.

One boot of the "idle" kernel (page_idle, DAMON vaddr/paddr, NUMA balancing, memory
tiers) runs the same workload (tests/guest/workload.py: 256 MiB bound to the slow
node 1, a hot 10 % in 4 contiguous runs touched in a loop) once per mechanism, each for
--duration-s after the workload is ready. --scenario exchange (the default): before
each run a cold filler fills node 0 but 40 MiB (testbed/scenarios.py's filler), so the
hot set reaches node 0 only if something demotes cold pages; --scenario promote: node 0
has room.

  none              nothing moves (the baseline)
  kscand-page_idle  `kscand run`, access_source = "page_idle", default tunables (exchange:
                    plus testbed/scenarios.py's EXCHANGE_TUNABLES)
  kscand-damon      `kscand run`, access_source = "damon", the same tunables
  numab             kernel.numa_balancing = 2 (memory tiering mode), default knobs, no
                    demotion (demotion_enabled = 0)
  numab-demote      the same with /sys/kernel/mm/numa/demotion_enabled = 1: kswapd demotes
                    node 0's inactive pages to node 1 under its watermark
  damos             a kdamond (paddr, node 1's range) with a migrate_hot scheme to node 0:
                    regions accessed in >= 1 of 20 samples per 100 ms aggregation
  damos-strict      the same with >= 5 of 20 samples for >= 10 aggregations (1 s)
  damos-tier        damo's mem_tier.sh pair as 6.12 has it: migrate_cold node 0 -> 1 and
                    migrate_hot node 1 -> 0, 200 MiB/s quotas, young filters, no quota
                    goals (node_mem_*_bp are 6.16+; see testbed/mechanisms.py)

Per mechanism: seconds until 50 % / 90 % of the hot pages are on node 0, pages
migrated (/proc/vmstat pgmigrate_success), cold pages wrongly promoted, CPU
seconds of the mechanism (kscand's process, plus the kdamonds for DAMON; the
kdamond for DAMOS; NUMA balancing's work is charged to the workload: its system
time and the hint-fault count are columns). Writes OUT/report.md, OUT/summary.json
and OUT/residency.png (matplotlib: the `plot` extra), and prints the table.

    python -m testbed.compare --out out/vm-compare [--duration-s 120] [--layout chunks:4]
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from testbed.compare_guest import COMPARE_SCENARIOS
from testbed.guest import Guest, GuestUnavailable, Topology, missing_prerequisites
from testbed.guestio import first_time_at, hot_fraction_on
from testbed.mechanisms import MECHANISMS
from testbed.scenarios import EXCHANGE_TUNABLES, FAST_TUNABLES

BOOT_SLACK_S = 300.0  # boot, imports and teardown on top of the runs (TCG)
# The filler, the mechanism and the workload (numpy import), the stops: 5-6 min per run
# on top of its duration on a 2-core host at load average 13 (2026-12-02, exchange).
PER_RUN_SLACK_S = 480.0


@dataclass(frozen=True)
class Row:
    """One mechanism's numbers (None: never reached / not measured)."""

    mechanism: str
    t50_s: float | None
    t90_s: float | None
    hot_on_top_end_pct: float
    pages_migrated: int
    cold_promoted: int
    cold_promoted_pct: float
    mechanism_cpu_s: float
    workload_sys_s: float
    hint_faults: int
    errors: tuple[str, ...] = ()
    filler_on_slow: int | None = None  # exchange: the cold filler's pages on node 1 at the end


def row_from_result(result: dict[str, Any]) -> Row:
    """The table row of one compare result.json."""
    timeline = result.get("timeline", [])
    last = timeline[-1] if timeline else {}
    cold = last.get("cold", {})
    cold_total = sum(cold.values())
    cpu = result.get("cpu", {})
    vm = result.get("vmstat_delta", {})
    return Row(
        mechanism=str(result.get("mechanism")),
        t50_s=first_time_at(timeline, "hot", 0, 0.5),
        t90_s=first_time_at(timeline, "hot", 0, 0.9),
        hot_on_top_end_pct=round(100 * hot_fraction_on(last, "hot", 0), 1) if last else 0.0,
        pages_migrated=int(vm.get("pgmigrate_success", 0)),
        cold_promoted=int(cold.get("node0", 0)),
        cold_promoted_pct=round(100 * cold.get("node0", 0) / cold_total, 2) if cold_total else 0.0,
        mechanism_cpu_s=round(float(cpu.get("mechanism_s", 0.0)), 2),
        workload_sys_s=round(float(cpu.get("workload_sys_s", 0.0)), 2),
        hint_faults=int(vm.get("numa_hint_faults", 0)),
        errors=tuple(result.get("errors", [])),
        filler_on_slow=filler_on_slow(result),
    )


def filler_on_slow(result: dict[str, Any]) -> int | None:
    """The filler's pages on node 1 in its last report (None without a filler)."""
    filler = result.get("filler_timeline")
    if not filler:
        return None
    return int(filler[-1].get("cold", {}).get("node1", 0))


def _cell(value: float | None, unit: str = "") -> str:
    if value is None:
        return "never"
    return f"{value:g}{unit}"


COLUMNS = (
    "mechanism", "50 % hot on node 0", "90 % hot on node 0", "hot on node 0 at end",
    "pages migrated", "cold pages promoted", "mechanism CPU", "workload system time",
    "NUMA hint faults", "filler pages demoted",
)  # fmt: skip


def markdown_table(rows: Sequence[Row]) -> str:
    """The comparison as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        cells = [
            r.mechanism, _cell(r.t50_s, " s"), _cell(r.t90_s, " s"), f"{r.hot_on_top_end_pct:g} %",
            f"{r.pages_migrated:,}", f"{r.cold_promoted:,} ({r.cold_promoted_pct:g} %)",
            f"{r.mechanism_cpu_s:g} s", f"{r.workload_sys_s:g} s", f"{r.hint_faults:,}",
            "-" if r.filler_on_slow is None else f"{r.filler_on_slow:,}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settle_time(timeline: Sequence[dict[str, Any]]) -> float:
    """Time of the last change of the hot and cold pages on node 0 (0 when none)."""
    last, settled = None, 0.0
    for line in timeline:
        now = (line.get("hot", {}).get("node0", 0), line.get("cold", {}).get("node0", 0))
        if last is not None and now != last:
            settled = float(line["t_s"])
        last = now
    return settled


def plot_residency(results: Sequence[dict[str, Any]], path: Path, title: str) -> str | None:
    """Hot pages on node 0 (and cold ones wrongly there) over time; None, or why not drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[plot]')"
    fig, (hot_ax, cold_ax) = plt.subplots(2, 1, figsize=(8, 7), sharex=True,
                                          gridspec_kw={"height_ratios": [3, 1]})
    for result in results:
        timeline = result.get("timeline", [])
        t = [line["t_s"] for line in timeline]
        hot = [100 * hot_fraction_on(line, "hot", 0) for line in timeline]
        cold = [100 * hot_fraction_on(line, "cold", 0) for line in timeline]
        (line,) = hot_ax.plot(t, hot, label=str(result.get("mechanism")))
        cold_ax.plot(t, cold, color=line.get_color())
    settled_s = max((settle_time(r.get("timeline", [])) for r in results), default=0.0)
    hot_ax.set_xlim(0, max(10.0, min(float(results[0].get("duration_s", 1e9)), 1.5 * settled_s)))
    hot_ax.set_ylabel("hot set on node 0 (%)")
    hot_ax.set_ylim(-2, 102)
    hot_ax.axhline(90, color="grey", linewidth=0.5, linestyle=":")
    hot_ax.legend(loc="lower right")
    hot_ax.set_title(title)
    cold_ax.set_ylabel("cold pages on\nnode 0 (%)")
    cold_ax.set_xlabel("seconds since the workload was ready on node 1")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def guest_commands(
    mechanisms: Sequence[str],
    duration_s: float,
    layout: str,
    size_mib: int,
    fast: bool,
    flush_tlb: bool = True,
    scenario: str = "promote",
    hot_pct: float = 10.0,
) -> list[str]:
    """One guest command per mechanism; outputs under $KSCAND_RWDIR/<mechanism>."""
    commands = []
    for name in mechanisms:
        argv = ["python", "-m", "testbed.inguest", "compare", "--mechanism", name,
                "--duration-s", f"{duration_s:g}", "--layout", layout,
                "--size-mib", str(size_mib), "--hot-pct", f"{hot_pct:g}"]  # fmt: skip
        argv += ["--fast"] if fast else []
        argv += ["--flush-tlb"] if flush_tlb else []
        argv += ["--scenario", scenario]
        commands.append(f'{shlex.join(argv)} --out "$KSCAND_RWDIR/{name}"')
    return commands


def write_report(
    out: Path, rows: Sequence[Row], meta: dict[str, Any], plot_note: str | None
) -> str:
    """report.md and summary.json in out; returns the Markdown."""
    tunables = "the end-to-end test tunables " + json.dumps(FAST_TUNABLES) if meta["fast"] else (
        "the default tunables"
    )
    exchange = meta.get("scenario") == "exchange"
    if exchange:
        tunables += " plus " + json.dumps(EXCHANGE_TUNABLES)
    setup = (
        "First a cold filler bound to node 0 populates all of its free memory but 40 MiB "
        "and stays idle. "
        if exchange
        else ""
    )
    lines = [
        f"# vm-compare ({meta['date']})",
        "",
        f"Kernel {meta['kernel']} in a QEMU TCG guest (2 vCPUs; node 0: "
        f"{meta.get('node0_mib', 1024)} MiB with the CPUs, node 1: 1 GiB CPU-less, HMAT "
        f"80/300 ns). {setup}Workload: {meta['size_mib']} MiB "
        f"bound to node 1, hot {meta.get('hot_pct', 10):g} % ({meta['layout']}) written in "
        "a loop; "
        f"{meta['duration_s']:g} s per mechanism from the moment it is ready"
        + ("; the workload flushes its TLB before each pass" if meta.get("flush_tlb") else "")
        + f". kscand with {tunables}.",
        "",
        markdown_table(rows),
        "",
        f"Command: `{meta['command']}`",
    ]
    if plot_note:
        lines += ["", f"No plot: {plot_note}"]
    errors = [f"- {r.mechanism}: {e}" for r in rows for e in r.errors]
    if errors:
        lines += ["", "Errors:", *errors]
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    summary = {"meta": meta, "rows": [asdict(r) for r in rows]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return text


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m testbed.compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("out/vm-compare"))
    parser.add_argument("--kernel", default="idle", choices=("idle",),
                        help="the kernel with every mechanism (page_idle needs it)")
    parser.add_argument("--duration-s", type=float, default=120.0)
    parser.add_argument("--scenario", choices=COMPARE_SCENARIOS, default="exchange",
                        help="exchange: a cold filler fills node 0 first; promote: node 0 has room")
    parser.add_argument("--layout", default="chunks:4", help="contiguous | chunks:K | scattered")
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--node0-mib", type=int, default=None,
                        help="node 0's memory (default: exchange 512, as its test: a smaller "
                             "filler to scan; promote 1024)")
    parser.add_argument("--hot-pct", type=float, default=None,
                        help="the workload's hot share (default: exchange 20, well over node "
                             "0's room; promote 10)")
    parser.add_argument("--mechanisms", default=",".join(MECHANISMS),
                        help=f"comma-separated, of {', '.join(MECHANISMS)}")
    parser.add_argument("--fast", action="store_true",
                        help="kscand with the end-to-end tests' tunables instead of the defaults")
    parser.add_argument("--no-flush-tlb", dest="flush_tlb", action="store_false",
                        help="the workload does not flush its TLB before each pass (runs before "
                             "2026-11-27): under TCG, Accessed bits then go unseen for long")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse_args(raw_argv)
    exchange = args.scenario == "exchange"
    args.node0_mib = args.node0_mib or (512 if exchange else 1024)
    args.hot_pct = args.hot_pct or (20.0 if exchange else 10.0)
    mechanisms = [m for m in args.mechanisms.split(",") if m]
    unknown = [m for m in mechanisms if m not in MECHANISMS]
    if unknown or not mechanisms:
        print(f"vm-compare: unknown mechanism {unknown}: one of {', '.join(MECHANISMS)}",
              file=sys.stderr)
        return 2
    if args.duration_s <= 0 or args.size_mib <= 0 or args.node0_mib < 256 or not (
        0 < args.hot_pct <= 100
    ):
        print("vm-compare: --duration-s and --size-mib must be positive, --node0-mib >= 256, "
              "--hot-pct in (0, 100]", file=sys.stderr)
        return 2
    if reasons := missing_prerequisites(args.kernel):
        print(f"vm-compare: {'; '.join(reasons)}", file=sys.stderr)
        return 2
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timeout_s = BOOT_SLACK_S + len(mechanisms) * (args.duration_s + PER_RUN_SLACK_S)
    topology = Topology(node0_mib=args.node0_mib)
    guest = Guest(kernel=args.kernel, timeout_s=timeout_s, topology=topology)
    commands = guest_commands(
        mechanisms, args.duration_s, args.layout, args.size_mib, args.fast, args.flush_tlb,
        args.scenario, args.hot_pct,
    )
    print(f"vm-compare: one {args.kernel} guest, {len(mechanisms)} runs of "
          f"{args.duration_s:g} s (TCG: expect ~{timeout_s / 60 * 0.6:.0f} min)", file=sys.stderr)
    try:
        booted = guest.run_commands(commands, out)
    except GuestUnavailable as err:
        print(f"vm-compare: {err}", file=sys.stderr)
        return 2
    results = []
    for name in mechanisms:
        path = out / name / "result.json"
        if not path.exists():
            print(f"vm-compare: {name} wrote no result\n{booted.describe()}", file=sys.stderr)
            return 1
        results.append(json.loads(path.read_text()))
    rows = [row_from_result(r) for r in results]
    kernel = str(results[0].get("kernel", args.kernel))
    meta = {
        "date": time.strftime("%Y-%m-%d"), "kernel": kernel, "duration_s": args.duration_s,
        "layout": args.layout, "size_mib": args.size_mib, "fast": args.fast,
        "flush_tlb": args.flush_tlb, "scenario": args.scenario, "node0_mib": args.node0_mib,
        "hot_pct": args.hot_pct,
        "mechanisms": mechanisms, "guest_elapsed_s": round(booted.elapsed_s, 1),
        "command": shlex.join(["python", "-m", "testbed.compare", *raw_argv]),
    }  # fmt: skip
    note = plot_residency(results, out / "residency.png",
                          f"hot-set residency on node 0 ({kernel}, {args.layout}, "
                          f"{args.scenario})")
    text = write_report(out, rows, meta, note)
    sys.stdout.write(text)
    print(f"vm-compare: {out}/report.md, summary.json"
          + ("" if note else ", residency.png"), file=sys.stderr)
    return 1 if any(r.errors for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
