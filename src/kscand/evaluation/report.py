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

# The columns; COLUMN_DEFINITIONS says what each holds (the CLI's caption, report.html's
# and evaluation.md's definitions come from it).
COLUMNS = (
    "run", "top tier (end)", "top tier (acc-wt)", "% of static best", "% of oracle", "t90",
    "latency (acc-wt)", "latency (time-avg)", "promoted", "demoted", "traffic / min",
    "ping-pong", "acc / promo", "cold at promo", "cold at end", "outside oracle", "CPU %",
)
COLUMN_DEFINITIONS = (
    ("top tier (end)", "share of accesses served by top-tier nodes at the last sample"),
    ("top tier (acc-wt)", "that share averaged over the run with each sample interval weighted "
     "by the accesses it served (acc-wt)"),
    ("% of static best", "acc-wt share / the static best's: the best static placement in "
     "hindsight (the movable pages with the most accesses over the run that fit the top tier, "
     "placed at t=0, never moved): a bound a policy can reach"),
    ("% of oracle", "acc-wt share / the oracle's (the hottest movable pages at every sample; "
     "clairvoyant when rates change: it knows the next window)"),
    ("t90", "first sample at 90 % of the oracle's share"),
    ("latency (acc-wt)", "mean access latency, access-weighted (bound rows: their top-tier share "
     "at the top tier's node latency, the rest at the slow tier's)"),
    ("latency (time-avg)", "the same averaged over samples by time"),
    ("promoted, demoted", "memory moved slow->top / top->slow (measured by the simulated "
     "machine for every policy; static best row: the minimum, see traffic / min)"),
    ("traffic / min", "(promoted + demoted) / the minimum the static best needs: its top-set "
     "pages not initially on the top tier, plus the demotions that make room for them"),
    ("ping-pong", "memory moved more than twice within 60 s, and (in brackets) its moves' share "
     "of all moves"),
    ("acc / promo", "accesses promoted pages served from the top tier (after promotion, while "
     "there) per promoted page"),
    ("cold at promo", "share of the promoted pages outside their workload's hot set when moved"),
    ("cold at end", "share of the promoted pages on the top tier at the end outside the hot set "
     "then"),
    ("outside oracle", "share of the promoted pages on the top tier at the end colder than the "
     "oracle's coldest"),
    ("CPU %", "cost-model CPU time as a share of one core, and who pays (app or daemon)"),
)
SWEEP_PLOT = "sweep.png"


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f}s"


def _ms(ns: float) -> str:
    return f"{ns / 1e6:,.0f} ms" if ns >= 1e6 else f"{ns / 1e3:,.0f} us"


def _count(pages: int) -> str:
    return format_bytes(pages * PAGE_SIZE)


def _ratio_x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _accesses(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f} M" if value >= 1e6 else f"{value:,.0f}"


def row_of(run: RunResult, duration_s: float) -> list[str]:
    """One table row (strings) per run, in COLUMNS order."""
    head = [run.label, _pct(run.final_top_share), _pct(run.aw_top_share),
            _pct(run.of_static_best), _pct(run.aw_of_oracle)]
    latency = [f"{run.aw_latency_ns:.0f} ns", f"{run.mean_latency_ns:.0f} ns"]
    if run.ledger is None or run.cpu is None:
        dash = "-"
        minimum = run.min_traffic
        if minimum is None:
            traffic = [dash, dash, dash]
        else:
            traffic = [_count(minimum["promote_pages"]), _count(minimum["demote_pages"]), "1.00x"]
        return [*head, _secs(run.t90_s), *latency, *traffic, dash, dash, dash, dash, dash, dash]
    ledger, cpu = run.ledger, run.cpu
    promoted = ledger["promoted_pages"]

    def of_promoted(pages: int) -> str:
        return _pct(pages / promoted) if promoted else "-"

    moved = ledger.get("moved_pages", 0)
    pp_pages, pp_moves = ledger.get("ping_pong_pages", 0), ledger.get("ping_pong_moves", 0)
    ping = f"{_count(pp_pages)} ({_pct(pp_moves / moved)})" if pp_pages else "0"
    payer = f" {run.payer}" if cpu["total_ns"] else ""
    return [
        *head,
        _secs(run.t90_s),
        *latency,
        _count(promoted),
        _count(ledger["demoted_pages"]),
        _ratio_x(run.traffic_ratio),
        ping,
        _accesses(run.accesses_per_promotion),
        of_promoted(ledger["cold_at_promotion_pages"]),
        of_promoted(ledger["cold_at_end_pages"]),
        of_promoted(ledger["outside_oracle_at_end_pages"]),
        f"{100 * cpu['total_ns'] / (duration_s * 1e9):.2f}%{payer}",
    ]


def caption() -> str:
    """The column definitions, one line each (the CLI table's and report.html's caption)."""
    return "\n".join(f"{name}: {text}" for name, text in COLUMN_DEFINITIONS)


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
        style = {"oracle": {"linestyle": "--", "color": "black"},
                 "static-best": {"linestyle": ":", "color": "black"}}.get(run.policy, {})
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
    """Per swept run: acc-wt share of the oracle (bars) and CPU % of one core (line)."""
    runs = [r for r in comparison.runs if r.overrides]
    fig, ax = pyplot.subplots(figsize=(max(8.0, 0.45 * len(runs) + 2), 4.5))
    names = [n.split(".")[-1] for n, _ in runs[0].overrides] if runs else []
    policies = {r.policy for r in runs}
    labels = [("" if len(policies) == 1 else r.policy + " ") + "/".join(v for _, v in r.overrides)
              for r in runs]
    x = list(range(len(runs)))
    ax.bar(x, [100 * r.aw_of_oracle for r in runs], color="tab:blue")
    ax.set_ylabel("top-tier share (acc-wt), % of the oracle", color="tab:blue")
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
    definitions = "".join(f"<tr><th>{esc(name)}</th><td>{esc(text)}</td></tr>"
                          for name, text in COLUMN_DEFINITIONS)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>kscand compare: {esc(comparison.scenario)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>{esc(comparison.scenario)}</h1>
<p>{esc(comparison.description)}</p>
<p>seed {comparison.seed}, {comparison.duration_s:g} s virtual, {comparison.wall_s:.1f} s wall
{(" &middot; commit " + esc(comparison.commit)) if comparison.commit else ""}</p>
<table><caption>acc-wt: each sample interval weighted by the accesses it served; the bounds:
the best static placement in hindsight and the per-sample oracle</caption>
<tr>{head}</tr>{rows}</table>
<table><caption>What the columns hold</caption>{definitions}</table>
<p>Cost model (ns): {esc(costs)}. Raw data: <a href="report.json">report.json</a>.</p>
{figures}
</body></html>
"""
