"""Regenerate docs/evaluation.md: run every `kscand compare` it shows, then fill the template.

    .venv/bin/python evaluation/make_docs.py            # every entry (about 15 min on 2 cores)
    .venv/bin/python evaluation/make_docs.py --only hotset,gups-hotset
    .venv/bin/python evaluation/make_docs.py --render   # no runs: refill from the reports

Each entry runs exactly the command the document shows next to its table, with
its report (report.json, report.html, PNGs) in docs/evaluation/NAME/. The
template is evaluation/evaluation.md.in; its placeholders:
{{cmd:NAME}} the command, {{table:NAME}} the comparison table, {{grid:NAME}} a
scan_size x scan_period grid of a sweep, {{img:NAME/PLOT}} a plot,
{{v:NAME:LABEL:FIELD}} one number of one run, {{first:NAME:LABEL}} when a run
first promoted, {{commit}} where the numbers come from.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from kscand.evaluation.compare import Comparison, RunResult  # noqa: E402
from kscand.evaluation.costs import CostModel  # noqa: E402
from kscand.evaluation.report import markdown_table  # noqa: E402

TEMPLATE = ROOT / "evaluation" / "evaluation.md.in"
OUTPUT = ROOT / "docs" / "evaluation.md"
REPORTS = "docs/evaluation"
SWEEP = ["--policies", "kscand,oracle", "--sweep", "scan_size=default,256MiB,1GiB,4GiB",
         "--sweep", "scan_period=default,600,2000,5000"]

# name -> (scenario, extra arguments)
ENTRIES: dict[str, tuple[str, list[str]]] = {
    "hotset": ("scenarios/hotset.toml", []),
    "flat-random": ("scenarios/flat-random.toml", []),
    "zipf-0.6": ("evaluation/scenarios/zipf-0.6.toml", []),
    "zipf-0.9": ("evaluation/scenarios/zipf-0.9.toml", []),
    "zipf-1.2": ("evaluation/scenarios/zipf-1.2.toml", []),
    "zipf-kv": ("scenarios/zipf-kv.toml", []),
    "gups-hotset": ("evaluation/scenarios/gups-hotset.toml", []),
    "moving-hotset": ("scenarios/moving-hotset.toml", []),
    "many-small": ("evaluation/scenarios/many-small.toml", []),
    "graph-powerlaw": ("evaluation/scenarios/graph-powerlaw.toml", []),
    "trace-phases": ("evaluation/scenarios/trace-phases.toml", []),
    "large-256g": ("evaluation/scenarios/large-256g.toml", ["--duration", "100"]),
    "redis-zipf": ("evaluation/scenarios/redis-zipf.toml", []),
    "sqlite-kv": ("evaluation/scenarios/sqlite-kv.toml", []),
    "igraph-pagerank": ("evaluation/scenarios/igraph-pagerank.toml", []),
    "redis-recorded": ("evaluation/scenarios/redis-recorded.toml", []),
    "sweep-hotset": ("scenarios/hotset.toml", SWEEP),
    "sweep-zipf-0.9": ("evaluation/scenarios/zipf-0.9.toml", SWEEP),
    "sweep-many-small": ("evaluation/scenarios/many-small.toml", SWEEP),
}


def command(name: str) -> list[str]:
    scenario, extra = ENTRIES[name]
    return ["kscand", "compare", scenario, *extra, "--report", f"{REPORTS}/{name}"]


def run(name: str, jobs: int) -> None:
    argv = [sys.executable, "-m", "kscand", *command(name)[1:], "--jobs", str(jobs), "--quiet"]
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{name}: {done.stderr.strip() or done.stdout.strip()}")
    print(f"{name}: {time.perf_counter() - start:.0f} s", file=sys.stderr)


def load(name: str) -> dict[str, Any]:
    path = ROOT / REPORTS / name / "report.json"
    if not path.exists():
        raise SystemExit(f"{name}: no {path.relative_to(ROOT)} (run without --render first)")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def comparison_of(data: dict[str, Any]) -> Comparison:
    runs = []
    for r in data["runs"]:
        fields = {k: v for k, v in r.items() if k not in ("of_oracle", "mean_of_oracle")}
        runs.append(RunResult(**fields))
    return Comparison(data["scenario"], data["description"], data["seed"], data["duration_s"],
                      [], CostModel(**data["cost_model_ns"]), runs, data["wall_s"],
                      data.get("commit", ""))


def grid(data: dict[str, Any]) -> str:
    """A scan_size x scan_period table of a sweep: mean share of the oracle, t50, t90, CPU."""
    cells: dict[tuple[str, str], str] = {}
    sizes: list[str] = []
    periods: list[str] = []
    for r in data["runs"]:
        over = dict(r["overrides"])
        if "scan_size" not in over:
            continue
        size, period = over["scan_size"], over["scan_period"]
        sizes += [size] if size not in sizes else []
        periods += [period] if period not in periods else []
        t50, t90 = ("never" if t is None else f"{t:.1f}s" for t in (r["t50_s"], r["t90_s"]))
        cpu = 100 * r["cpu"]["total_ns"] / (data["duration_s"] * 1e9)
        cells[size, period] = f"{100 * r['mean_of_oracle']:.1f}% / {t50}, {t90} / {cpu:.2f}%"
    head = "| scan_size \\ scan_period | " + " | ".join(
        "adaptive (default)" if p == "default" else f"{p} ms" for p in periods) + " |"
    lines = [head, "|---|" + "---|" * len(periods)]
    for size in sizes:
        label = "adaptive (default)" if size == "default" else size
        lines.append(f"| {label} | " + " | ".join(cells[size, p] for p in periods) + " |")
    return "\n".join(lines) + "\n"


def value(data: dict[str, Any], label: str, field: str) -> str:
    run = next((r for r in data["runs"] if r["label"] == label), None)
    if run is None:
        raise SystemExit(f"{data['scenario']}: no run {label!r}")
    v: Any = run
    parts = field.split(".")
    for i, part in enumerate(parts):
        # A counter never incremented is absent from a report's counters: 0.
        v = v.get(part, 0) if i and parts[0] == "counters" else v[part]
    if v is None:
        return "never"
    if field.endswith("_s"):
        return f"{v:.1f} s"
    if "share" in field or "oracle" in field:
        return f"{100 * v:.1f} %"
    if field.endswith("_pages"):
        return f"{v * 4096 / (1 << 30):.2f} GiB"
    if field.endswith("_ns"):
        return f"{v / 1e6:,.0f} ms"
    if field.endswith("_ratio"):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:,.3g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def first_promotion(data: dict[str, Any], label: str) -> str:
    """The first sample time at which the run had promoted anything."""
    run = next((r for r in data["runs"] if r["label"] == label), None)
    if run is None:
        raise SystemExit(f"{data['scenario']}: no run {label!r}")
    times = [p["t_s"] for p in run["timeline"] if p["promoted_pages"] > 0]
    return f"{times[0]:.0f} s" if times else "never"


def render(commit: str) -> None:
    text = TEMPLATE.read_text()

    def fill(match: re.Match[str]) -> str:
        kind, arg = match.group(1), match.group(2)
        if kind == "cmd":
            return " ".join(shlex.quote(a) for a in command(arg))
        if kind == "table":
            return markdown_table(comparison_of(load(arg)))
        if kind == "grid":
            return grid(load(arg))
        if kind == "img":
            name, plot = arg.split("/")
            return f"![{name} {plot}](evaluation/{name}/{plot}.png)"
        if kind == "v":
            name, label, field = arg.split(":")
            return value(load(name), label, field)
        if kind == "first":
            name, label = arg.split(":")
            return first_promotion(load(name), label)
        if kind == "commit":
            return commit or "unknown"
        raise SystemExit(f"unknown placeholder {match.group(0)}")

    OUTPUT.write_text(re.sub(r"\{\{(\w+):?([^}]*)\}\}", fill, text))


def report_commits() -> str:
    """The source commits the reports were made at (`git describe` of each run)."""
    commits = sorted({load(name).get("commit") or "unknown" for name in ENTRIES
                      if (ROOT / REPORTS / name / "report.json").exists()})
    return ", ".join(commits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated entry names")
    parser.add_argument("--render", action="store_true", help="no runs, only refill")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    names = [n for n in args.only.split(",") if n] or list(ENTRIES)
    for name in names:
        if name not in ENTRIES:
            raise SystemExit(f"unknown entry {name!r} (known: {', '.join(ENTRIES)})")
    if not args.render:
        for name in names:
            run(name, args.jobs)
    render(report_commits())


if __name__ == "__main__":
    main()
