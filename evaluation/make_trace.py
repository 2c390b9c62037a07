"""Write the example access trace of evaluation/scenarios/trace-phases.toml.

Format (the `trace` workload kind, see docs/evaluation.md): one record per line,
`time_s,pid,address,count` with an optional header line and '#' comments; address
in bytes (0x hex or decimal), count = the accesses the record stands for. A real
trace (e.g. `perf mem record` samples, or a PEBS/IBS sampler's output) has count 1
and one line per sample; this synthetic one aggregates per page and per second.

    .venv/bin/python evaluation/make_trace.py [--out evaluation/traces/phases.csv]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

PID = 4242
BASE = 0x7F3A_0000_0000  # the traced process's buffer
NR_PAGES = 16_384  # 64 MiB
HOT_PAGES = 512  # 2 MiB hot region per phase
PHASE_S = 10
DURATION_S = 30
HOT_RATE = 2_000.0  # accesses/s of a hot page
COLD_SAMPLES = 100  # cold pages sampled per second
COLD_COUNT = 3  # accesses each cold sample stands for


def records(seed: int = 7) -> list[str]:
    rng = np.random.default_rng(seed)
    starts = [1_000, 9_000, 13_000]  # hot region of each phase, in pages
    lines = ["time_s,pid,address,count"]
    for second in range(DURATION_S):
        hot = starts[second // PHASE_S] + np.arange(HOT_PAGES)
        counts = rng.poisson(HOT_RATE, HOT_PAGES)
        cold = rng.choice(NR_PAGES, COLD_SAMPLES, replace=False)
        t = second + rng.random(HOT_PAGES + COLD_SAMPLES) * 0.999
        pages = np.concatenate([hot, cold])
        count = np.concatenate([counts, np.full(COLD_SAMPLES, COLD_COUNT)])
        for k in np.argsort(t).tolist():
            lines.append(f"{t[k]:.4f},{PID},{BASE + int(pages[k]) * 4096:#x},{int(count[k])}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--out", type=Path, default=here / "traces" / "phases.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(records()) + "\n")


if __name__ == "__main__":
    main()
