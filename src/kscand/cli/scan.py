"""`kscand scan --pid PID`: a read-only scan of one process; shows what kscand would promote."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from kscand.cli import SUMMARIES
from kscand.cli.jsonout import add_json_argument, to_stdout, write_json
from kscand.cli.pathargs import path_str_arg, png_arg
from kscand.cli.tables import pages_size, print_table, text
from kscand.config import ACCESS_SOURCES
from kscand.errors import ConfigError, ProcessGone
from kscand.machine import PAGE_SHIFT, PAGE_SIZE
from kscand.units import format_bytes

if TYPE_CHECKING:
    from kscand.inspect.oneshot import Candidates, ScanReport

MAX_PASSES = 100
CANDIDATE_ROWS = 20  # candidate address ranges listed; the rest are summed up


def add_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "scan",
        help=SUMMARIES["scan"],
        description="Run kscand's scanner over one process for a few passes, without moving "
        "anything: pages per node, accessed/hot/cold per node, and the candidates that would "
        "be promoted.",
    )
    parser.add_argument("--pid", type=int, required=True, help="process to scan")
    parser.add_argument("--passes", type=int, default=3,
                        help="scan passes (hot = accessed in 2 consecutive passes; default 3)")
    parser.add_argument("--interval-ms", type=int, default=1000,
                        help="pause between passes in milliseconds (default 1000)")
    parser.add_argument("--heatmap", type=png_arg, default=None, metavar="FILE.png",
                        help="also draw accessed pages per pass (needs matplotlib: kscand[plot])")
    parser.add_argument("--access-source", choices=ACCESS_SOURCES,
                        default="auto", help="where Accessed bits come from (default auto)")
    parser.add_argument("--procfs", default="/proc", type=path_str_arg,
                        help="procfs root (default /proc)")
    parser.add_argument("--sysfs", default="/sys", type=path_str_arg,
                        help="sysfs root (default /sys)")
    add_json_argument(parser, "the per-node pages, every candidate range and the skips")


def main(args: argparse.Namespace) -> int:
    if not 1 <= args.passes <= MAX_PASSES:
        raise ConfigError(f"--passes: must be 1..{MAX_PASSES}, got {args.passes}")
    if args.interval_ms < 0:
        raise ConfigError(f"--interval-ms: must not be negative, got {args.interval_ms}")
    if args.heatmap is not None and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--heatmap needs matplotlib: pip install 'kscand[plot]'")

    from kscand.cli.oneprocess import open_one_process, user_process
    from kscand.inspect.oneshot import scan_process

    with open_one_process(args.procfs, args.sysfs, args.pid, args.access_source) as machine:
        proc, stat = user_process(machine, args.pid)
        gone = ProcessGone(f"pid {args.pid} ({stat.comm}) exited during the scan")
        try:
            report = scan_process(machine, proc, passes=args.passes,
                                  interval_ns=args.interval_ms * 1_000_000)
        except ProcessGone:
            raise gone from None
        # A process killed mid-scan may leave no error behind (an exiting process's
        # pagemap reads as empty): re-check it before reporting its pages.
        if not machine.is_alive(proc):
            raise gone
    console = Console()
    if not to_stdout(args.json):
        print_report(console, report, stat.comm, args.passes, args.interval_ms)
    if args.heatmap is not None:
        draw_heatmap(report, args.heatmap, f"pid {args.pid} ({stat.comm})")
    write_json(args.json, scan_json(report, stat.comm, args.interval_ms, args.heatmap))
    if args.heatmap is not None and not to_stdout(args.json):
        console.print(f"heatmap written to {text(args.heatmap)}", highlight=False)
    return 0


def scan_json(report: ScanReport, comm: str, interval_ms: int,
              heatmap: Path | None) -> dict[str, Any]:
    """--json: the last pass per node in base pages, every candidate range (the table
    lists CANDIDATE_ROWS), the skips."""
    last = report.last
    nodes = []
    for node in report.topology.nodes:
        nid = node.nid
        row: dict[str, Any] = {"nid": nid, "top_tier": node.top_tier,
                               "present_pages": last.resident_by_nid[nid],
                               "eligible_pages": last.eligible_by_nid[nid]}
        if report.access_available:
            accessed, hot = last.accessed_by_nid[nid], last.hot_by_nid[nid]
            row |= {"accessed_pages": accessed, "hot_pages": hot, "cold_pages": accessed - hot,
                    "idle_pages": last.eligible_by_nid[nid] - accessed}
        nodes.append(row)
    cands = report.candidates
    return {
        "pid": report.proc.pid,
        "comm": comm,
        "passes": len(report.passes),
        "interval_ms": interval_ms,
        "access_source": report.access_source,
        "access_available": report.access_available,
        "access_reason": report.access_reason,
        "page_size_bytes": PAGE_SIZE,
        "nodes": nodes,
        "target_nid": report.target_nid,
        "candidate_folios": int(cands.vaddr.size),
        "candidate_pages": cands.nr_base_pages,
        "candidate_ranges": [{"start": start, "end": end, "nid": nid, "pages": nr_pages}
                             for start, end, nid, nr_pages in candidate_ranges(cands)],
        "skips": dict(report.skips),
        "heatmap": None if heatmap is None else str(heatmap),
    }


def _pages(nr_pages: int) -> str:
    return f"{nr_pages:,} ({format_bytes(nr_pages * PAGE_SIZE)})" if nr_pages else "0"


def print_report(
    console: Console, report: ScanReport, comm: str, passes: int, interval_ms: int
) -> None:
    """The per-node table, the candidates and the scan's skip counters."""
    done = len(report.passes)
    console.print(
        f"[bold]pid {report.proc.pid}[/] ({text(comm)}): {done} pass(es)"
        + (f", {interval_ms} ms apart" if done > 1 else "")
        + f"; access source [bold]{text(report.access_source)}[/]",
        highlight=False,
    )
    if not report.access_available:
        console.print(f"[yellow]no Accessed bits:[/] {text(report.access_reason)}; "
                      "showing residency only", highlight=False)
    last = report.last
    table = Table(title="memory per node in the scanned VMAs, last pass", title_justify="left")
    columns = ["node", "tier", "present", "eligible"]
    if report.access_available:
        columns += ["accessed", "hot", "cold", "idle"]
    for name in columns:
        table.add_column(name, justify="left" if name == "tier" else "right")
    for node in report.topology.nodes:
        nid = node.nid
        row = [str(nid), "top" if node.top_tier else "slow",
               pages_size(last.resident_by_nid[nid]), pages_size(last.eligible_by_nid[nid])]
        if report.access_available:
            accessed, hot = last.accessed_by_nid[nid], last.hot_by_nid[nid]
            row += [pages_size(n) for n in (accessed, hot, accessed - hot,
                                            last.eligible_by_nid[nid] - accessed)]
        table.add_row(*row)
    print_table(console, table)
    if report.access_available:
        _print_candidates(console, report)
    skips = ", ".join(f"{name}={count:,}" for name, count in report.skips.items())
    if skips:
        console.print(f"skipped (last pass): {skips}")


def candidate_ranges(cands: Candidates) -> list[tuple[int, int, int, int]]:
    """Contiguous candidate folios on one node as (start, end, nid, base pages)."""
    if not cands.vaddr.size:
        return []
    import numpy as np

    ends = cands.vaddr + (cands.nr_pages.astype(np.uint64) << np.uint64(PAGE_SHIFT))
    breaks = np.flatnonzero((cands.vaddr[1:] != ends[:-1]) | (cands.nid[1:] != cands.nid[:-1]))
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [cands.vaddr.size - 1]))
    pages = np.add.reduceat(cands.nr_pages, starts)
    return [(int(cands.vaddr[a]), int(ends[b]), int(cands.nid[a]), int(n))
            for a, b, n in zip(starts.tolist(), stops.tolist(), pages.tolist(), strict=True)]


def _print_candidates(console: Console, report: ScanReport) -> None:
    cands = report.candidates
    target = "none (no top-tier node)" if report.target_nid is None else f"node {report.target_nid}"
    if not cands.vaddr.size:
        console.print(f"no promotion candidates (hot pages on slow-tier nodes); target {target}")
        return
    ranges = candidate_ranges(cands)
    console.print(f"[bold]{_pages(cands.nr_base_pages)}[/] would be promoted to {target} "
                  f"({len(cands.vaddr):,} folio(s) in {len(ranges):,} range(s))")
    table = Table(title="promotion candidates", title_justify="left")
    for name in ("start", "end", "node", "size"):
        table.add_column(name, justify="right")
    for start, end, nid, nr_pages in ranges[:CANDIDATE_ROWS]:
        table.add_row(f"{start:#x}", f"{end:#x}", str(nid), pages_size(nr_pages))
    if len(ranges) > CANDIDATE_ROWS:
        rest = sum(r[3] for r in ranges[CANDIDATE_ROWS:])
        table.add_row("...", f"{len(ranges) - CANDIDATE_ROWS:,} more", "", pages_size(rest))
    print_table(console, table)


def draw_heatmap(report: ScanReport, path: Path, title: str) -> None:
    """Accessed fraction per pass over the scanned pages in address order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scanned = [np.concatenate(p.eligible_vaddr) if p.eligible_vaddr else np.zeros(0, np.uint64)
               for p in report.passes]
    order = np.unique(np.concatenate(scanned)) if scanned else np.zeros(0, np.uint64)
    nr_bins = max(1, min(512, order.size))
    grid = np.zeros((len(report.passes), nr_bins))
    for row, (record, seen) in enumerate(zip(report.passes, scanned, strict=True)):
        if not order.size or not record.accessed_vaddr:
            continue
        accessed = np.concatenate(record.accessed_vaddr)
        bins_seen = np.searchsorted(order, seen) * nr_bins // order.size
        bins_hit = np.searchsorted(order, accessed) * nr_bins // order.size
        seen_per_bin = np.bincount(bins_seen, minlength=nr_bins)
        hit_per_bin = np.bincount(bins_hit, minlength=nr_bins)
        grid[row] = np.divide(hit_per_bin, seen_per_bin, out=np.zeros(nr_bins),
                              where=seen_per_bin > 0)
    fig, ax = plt.subplots(figsize=(10, 1.5 + 0.4 * len(report.passes)))
    image = ax.imshow(grid, aspect="auto", interpolation="nearest", cmap="inferno", vmin=0,
                      vmax=1)
    ax.set_xlabel(f"scanned folios in address order ({order.size:,}, {nr_bins} bins)")
    ax.set_ylabel("pass")
    ax.set_yticks(range(len(report.passes)), [str(i + 1) for i in range(len(report.passes))])
    ax.set_title(f"{title}: accessed fraction per pass ({report.access_source})")
    fig.colorbar(image, ax=ax, label="accessed")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:
        raise ConfigError(f"--heatmap: cannot write {path}: {err.strerror}") from err
    finally:
        plt.close(fig)
