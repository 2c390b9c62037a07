"""`kscand report heatmap TRACE`: a trace's accesses over address and time, per process.

Without --out, a terminal rendering (shading characters, at most 80 columns); with
--out FILE.png, a PNG (matplotlib: the `plot` extra). The binning:
kscand.inspect.heatmap.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from kscand.cli import SUMMARIES
from kscand.cli.pathargs import path_str_arg, png_arg
from kscand.cli.tables import text
from kscand.errors import ConfigError
from kscand.units import format_bytes

if TYPE_CHECKING:
    from kscand.inspect.heatmap import Heatmap

TERMINAL_COLUMNS = 80
TERMINAL_ADDRESS_BINS = 20
PNG_ADDRESS_BINS = 256
PNG_TIME_BINS = 300
MAX_BINS = 4096
SHADES = " ░▒▓█"  # none, then 4 levels of accesses per cell (log scale)
PNG_TICKS = 12


def add_parser(sub: Any) -> None:
    parser = sub.add_parser("report", help=SUMMARIES["report"],
                            description="Reports on access traces.")
    reports = parser.add_subparsers(dest="report", metavar="REPORT", parser_class=type(parser))
    reports.required = True
    heat = reports.add_parser(
        "heatmap", help="accesses over address and time, per process",
        description="Accesses of each process of a trace (kscand record's, or "
        "evaluation/traces/*.csv) over address (y: only the ranges it touched, gaps over "
        "2 MiB compressed) and time (x). A terminal rendering, or a PNG with --out.")
    heat.add_argument("trace", type=path_str_arg, metavar="TRACE",
                      help="trace file (time_s,pid,address[,count]; .gz too)")
    heat.add_argument("--pid", type=int, default=None,
                      help="only this process (default: the 8 with the most accesses)")
    heat.add_argument("--out", type=png_arg, default=None, metavar="FILE.png",
                      help="write a PNG (needs matplotlib: kscand[plot]) instead of printing")
    heat.add_argument("--address-bins", type=int, default=None, metavar="N",
                      help=f"rows (default {TERMINAL_ADDRESS_BINS} in the terminal, "
                      f"{PNG_ADDRESS_BINS} in a PNG)")
    heat.add_argument("--time-bins", type=int, default=None, metavar="N",
                      help=f"columns (default: what fits {TERMINAL_COLUMNS} columns in the "
                      f"terminal, {PNG_TIME_BINS} in a PNG)")


def _bins(value: int | None, name: str) -> int | None:
    if value is not None and not 1 <= value <= MAX_BINS:
        raise ConfigError(f"--{name}: must be 1..{MAX_BINS}, got {value}")
    return value


def main(args: argparse.Namespace) -> int:
    address_bins = _bins(args.address_bins, "address-bins")
    time_bins = _bins(args.time_bins, "time-bins")
    if args.out is not None and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--out needs matplotlib: pip install 'kscand[plot]'")

    from kscand.inspect.heatmap import trace_heatmaps
    from kscand.sim.tracefile import load_trace

    trace = load_trace(args.trace)
    png = args.out is not None
    if address_bins is None:
        address_bins = PNG_ADDRESS_BINS if png else TERMINAL_ADDRESS_BINS
    if time_bins is None:
        # the terminal: what is left of 80 columns after the widest address label
        time_bins = PNG_TIME_BINS if png else TERMINAL_COLUMNS - len(f"{1 << 63:#x}") - 2
    maps = trace_heatmaps(trace, args.pid, address_bins=address_bins, time_bins=time_bins)
    if not maps:
        raise ConfigError(f"{args.trace}: no records for pid {args.pid}")
    console = Console()
    if png:
        draw_png(maps, args.out, args.trace)
        console.print(f"heatmap written to {text(args.out)}", highlight=False)
        return 0
    for index, heatmap in enumerate(maps):
        if index:
            console.print()
        console.print(f"{text(args.trace)}: {title(heatmap)}", highlight=False)
        for line in render_lines(heatmap):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def title(heatmap: Heatmap) -> str:
    """pid, accesses, pages and ranges, time span."""
    segs = heatmap.segments
    return (f"pid {heatmap.pid}: {heatmap.total:,.0f} accesses in {heatmap.nr_records:,} "
            f"records over {heatmap.t_first_s:g}-{heatmap.t_last_s:g} s; "
            f"{format_bytes(segs.nr_pages << 12)} of address space in {segs.start.size:,} "
            f"range(s)")


def shade_levels(grid: Any) -> Any:
    """Each cell's shade index: 0 for no access, else 1..4 on a log scale from the
    quietest non-empty cell to the busiest. float64 (a, t) -> intp (a, t)."""
    import numpy as np

    busy = grid > 0
    if not busy.any():
        return np.zeros(grid.shape, dtype=np.intp)
    low, peak = float(grid[busy].min()), float(grid.max())
    top = len(SHADES) - 1
    if peak <= low:
        return np.where(busy, top, 0)
    frac = np.log(np.where(busy, grid, low) / low) / math.log(peak / low)
    level = 1 + np.minimum(np.floor(frac * top), top - 1).astype(np.intp)
    return np.where(busy, level, 0)


def render_lines(heatmap: Heatmap) -> list[str]:
    """The terminal rendering: the highest addresses on top, one row per address bin
    (its start address; '≈' where a compressed gap lies in it), one column per time bin,
    the time axis and a legend below."""
    levels = shade_levels(heatmap.grid)
    labels = [f"{int(a):#x}" for a in heatmap.bin_addresses().tolist()]
    width = max(len(label) for label in labels)
    gaps = heatmap.bin_gaps().tolist()
    lines = []
    for row in range(heatmap.nr_address_bins - 1, -1, -1):
        cells = "".join(SHADES[int(level)] for level in levels[row].tolist())
        lines.append(f"{labels[row]:>{width}} {'≈' if gaps[row] else '│'}{cells}")
    nr_time = heatmap.nr_time_bins
    lines.append(f"{'':>{width}} └{'─' * nr_time}")
    first, last = f"{heatmap.t_first_s:g} s", f"{heatmap.t_last_s:g} s"
    lines.append(f"{'':>{width}}  {first}{last:>{max(nr_time - len(first), len(last) + 1)}}")
    peak = float(heatmap.grid.max())
    lines.append("y: start address of each row (hex; ≈: a gap over 2 MiB compressed), x: time")
    busy = heatmap.grid[heatmap.grid > 0]
    low = float(busy.min()) if busy.size else 0.0
    lines.append(f"shade (log scale): {SHADES[1:]} from {low:,.0f} to {peak:,.0f} accesses "
                 "per cell")
    return lines


def draw_png(maps: list[Heatmap], path: Path, trace: str) -> None:
    """One panel per process: accesses per cell on a log color scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    fig, axes = plt.subplots(len(maps), 1, figsize=(10, 1 + 4 * len(maps)), squeeze=False)
    for ax, heatmap in zip(axes[:, 0], maps, strict=True):
        grid = np.ma.masked_less_equal(heatmap.grid, 0)
        peak = max(float(heatmap.grid.max()), 1.0)
        low = float(grid.min()) if grid.count() else 1.0
        image = ax.imshow(grid, origin="lower", aspect="auto", interpolation="nearest",
                          cmap="inferno", norm=LogNorm(vmin=min(low, peak), vmax=peak),
                          extent=(heatmap.t_first_s, heatmap.t_last_s, 0,
                                  heatmap.nr_address_bins))
        ticks = np.unique(np.linspace(0, heatmap.nr_address_bins - 1, PNG_TICKS).astype(int))
        addresses = heatmap.bin_addresses()
        ax.set_yticks(ticks + 0.5, [f"{int(addresses[t]):#x}" for t in ticks.tolist()])
        ax.set_xlabel("time (s)")
        ax.set_ylabel("address (gaps over 2 MiB compressed)")
        ax.set_title(title(heatmap), fontsize=9)
        fig.colorbar(image, ax=ax, label="accesses per cell")
    fig.suptitle(Path(trace).name)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=100)
    except OSError as err:
        raise ConfigError(f"--out: cannot write {path}: {err.strerror}") from err
    finally:
        plt.close(fig)
