"""The comparison report: a table (rows for the CLI and for HTML/Markdown), PNG plots, JSON.

Plots need matplotlib (the optional extra `plot`); without it write_report()
raises Unsupported with one line saying how to install it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from kscand.errors import ConfigError, Unsupported
from kscand.evaluation.compare import Comparison, RunResult
from kscand.machine import PAGE_SIZE
from kscand.units import format_bytes

# top tier / of oracle: at the end; mean of oracle: time-averaged share / oracle's;
# cold: promoted pages outside the hot set at promotion / at the end; outside oracle: promoted
# pages on the top tier at the end that the oracle would not put there; CPU %: of one core.
COLUMNS = (
    "run", "top tier", "of oracle", "mean of oracle", "t50", "t90", "promoted",
    "cold at promo", "cold at end", "outside oracle", "CPU app", "CPU daemon", "CPU %",
    "latency",
)
PLOTS = {
    "share.png": "Share of accesses served by the top tier",
    "traffic.png": "Promotion traffic",
    "cpu.png": "CPU cost by component",
}
SWEEP_PLOT = "sweep.png"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.0f} ms" if ns >= 1e6 else f"{ns / 1e3:,.0f} us"


def row_of(run: RunResult, duration_s: float) -> list[str]:
    """One table row (strings) per run, in COLUMNS order."""
    if run.ledger is None or run.cpu is None:
        dash = "-"
        return [run.label, _pct(run.final_top_share), "100.0%", "100.0%", _secs(run.t50_s),
                _secs(run.t90_s), dash, dash, dash, dash, dash, dash, dash,
                f"{run.mean_latency_ns:.0f} ns"]
    ledger, cpu = run.ledger, run.cpu
    promoted = ledger["promoted_pages"]

    def share(pages: int) -> str:
        return f"{format_bytes(pages * PAGE_SIZE)} ({_pct(pages / promoted) if promoted else '-'})"

    return [
        run.label,
        _pct(run.final_top_share),
        _pct(run.of_oracle),
        _pct(run.mean_of_oracle),
        _secs(run.t50_s),
        _secs(run.t90_s),
        format_bytes(promoted * PAGE_SIZE),
        share(ledger["cold_at_promotion_pages"]),
        share(ledger["cold_at_end_pages"]),
        share(ledger["outside_oracle_at_end_pages"]),
        _ms(cpu["app_ns"]) if cpu["app_ns"] else "-",
        _ms(cpu["daemon_ns"]) if cpu["daemon_ns"] else "-",
        f"{100 * cpu['total_ns'] / (duration_s * 1e9):.2f}%",
        f"{run.mean_latency_ns:.0f} ns",
    ]


def markdown_table(comparison: Comparison) -> str:
    """The table as GitHub Markdown (for docs/evaluation.md)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for run in comparison.runs:
        cells = row_of(run, comparison.duration_s)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(comparison: Comparison, out_dir: Path, plots: bool = True) -> list[Path]:
    """Write report.json, report.html and (plots) the PNGs into out_dir; the paths written."""
    pyplot = _pyplot() if plots else None
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--report: cannot create {out_dir}: {err.strerror or err}") from err
    written = [out_dir / "report.json"]
    _write(written[0], json.dumps(comparison.to_json(), indent=1) + "\n")
    images: list[str] = []
    if pyplot is not None:
        for name, path in _plots(pyplot, comparison, out_dir):
            written.append(path)
            images.append(name)
    html_path = out_dir / "report.html"
    _write(html_path, _html(comparison, images))
    written.append(html_path)
    return written


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise ConfigError(f"--report: cannot write {path}: {err.strerror or err}") from err


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise Unsupported(
            "plots need matplotlib: pip install 'kscand[plot]' (or pass --no-plots)"
        ) from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def _plots(pyplot: Any, comparison: Comparison, out_dir: Path) -> list[tuple[str, Path]]:
    out = []
    for name, draw in (("share.png", _plot_share), ("traffic.png", _plot_traffic),
                       ("cpu.png", _plot_cpu)):
        fig = draw(pyplot, comparison)
        path = out_dir / name
        fig.savefig(path, dpi=96, bbox_inches="tight")
        pyplot.close(fig)
        out.append((name, path))
    if comparison.sweeps:
        fig = _plot_sweep(pyplot, comparison)
        path = out_dir / SWEEP_PLOT
        fig.savefig(path, dpi=96, bbox_inches="tight")
        pyplot.close(fig)
        out.append((SWEEP_PLOT, path))
    return out


def _title(comparison: Comparison, what: str) -> str:
    return f"{comparison.scenario} (seed {comparison.seed}): {what}"


def _plot_share(pyplot: Any, comparison: Comparison) -> Any:
    fig, ax = pyplot.subplots(figsize=(8, 4.5))
    for run in comparison.runs:
        t = [p["t_s"] for p in run.timeline]
        style = {"linestyle": "--", "color": "black"} if run.policy == "oracle" else {}
        ax.plot(t, [100 * p["top_share"] for p in run.timeline], label=run.label, **style)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("accesses served by the top tier (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(comparison, "top-tier share"), fontsize=10)
    return fig


def _plot_traffic(pyplot: Any, comparison: Comparison) -> Any:
    fig, ax = pyplot.subplots(figsize=(8, 4.5))
    for run in comparison.runs:
        if run.ledger is None:
            continue
        t = [p["t_s"] for p in run.timeline]
        mib = [p["promoted_pages"] * PAGE_SIZE / (1 << 20) for p in run.timeline]
        ax.plot(t, mib, label=run.label)
    ax.set_xlabel("virtual time (s)")
    ax.set_ylabel("promoted so far (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(comparison, "promotion traffic (cumulative)"), fontsize=10)
    return fig


def _plot_cpu(pyplot: Any, comparison: Comparison) -> Any:
    runs = [r for r in comparison.runs if r.cpu is not None]
    fig, ax = pyplot.subplots(figsize=(8, 0.6 * max(3, len(runs)) + 1))
    parts = (("scan_ns", "PTE walks"), ("fault_ns", "hint faults"),
             ("sample_ns", "DAMON sampling"), ("migrate_ns", "migration"))
    left = [0.0] * len(runs)
    labels = [f"{r.label} ({r.payer})" for r in runs]
    for key, name in parts:
        widths = [(r.cpu or {}).get(key, 0.0) / 1e6 for r in runs]
        ax.barh(labels, widths, left=left, label=name)
        left = [a + b for a, b in zip(left, widths, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel(f"CPU time over {comparison.duration_s:g} s (ms; cost model in report.json)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(_title(comparison, "CPU cost (who pays in brackets)"), fontsize=10)
    return fig


def _plot_sweep(pyplot: Any, comparison: Comparison) -> Any:
    """Per swept run: mean share of the oracle (bars) and CPU % of one core (line)."""
    runs = [r for r in comparison.runs if r.overrides]
    fig, ax = pyplot.subplots(figsize=(max(8.0, 0.45 * len(runs) + 2), 4.5))
    names = [n.split(".")[-1] for n, _ in runs[0].overrides] if runs else []
    policies = {r.policy for r in runs}
    labels = [("" if len(policies) == 1 else r.policy + " ") + "/".join(v for _, v in r.overrides)
              for r in runs]
    x = list(range(len(runs)))
    ax.bar(x, [100 * r.mean_of_oracle for r in runs], color="tab:blue")
    ax.set_ylabel("mean top-tier share, % of the oracle", color="tab:blue")
    ax.set_ylim(0, 105)
    ax.set_xticks(x, labels, fontsize=8, rotation=45, ha="right")
    ax.set_xlabel(" / ".join(names))
    cpu_ax = ax.twinx()
    cpu_ax.plot(x, [100 * (r.cpu or {}).get("total_ns", 0.0) / (comparison.duration_s * 1e9)
                    for r in runs], "o-", color="tab:red")
    cpu_ax.set_ylabel("CPU % of one core", color="tab:red")
    cpu_ax.set_ylim(bottom=0)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(_title(comparison, f"sweep of {', '.join(sorted(policies))}"), fontsize=10)
    return fig


def _html(comparison: Comparison, images: list[str]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    rows = "".join(
        "<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row_of(r, comparison.duration_s))
        + "</tr>"
        for r in comparison.runs
    )
    figures = "".join(f'<figure><img src="{esc(name)}" alt="{esc(name)}"></figure>'
                      for name in images)
    costs = ", ".join(f"{k} = {v:g}" for k, v in comparison.costs.as_dict().items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kscand compare: {esc(comparison.scenario)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{esc(comparison.scenario)}</h1>
<p>{esc(comparison.description)}</p>
<p>seed {comparison.seed}, {comparison.duration_s:g} s virtual, {comparison.wall_s:.1f} s wall
{(" &middot; commit " + esc(comparison.commit)) if comparison.commit else ""}</p>
<table><tr>{head}</tr>{rows}</table>
<p>Cost model (ns): {esc(costs)}. "Cold": promoted pages outside their workload's hot set
at promotion time / at the end of the run. Raw data: <a href="report.json">report.json</a>.</p>
{figures}
</body></html>
"""
