"""Turn lackey_agg's page bins into a kscand trace (`time_s,pid,address,count` CSV).

lackey_agg (evaluation/record/lackey_agg.c) bins every data access (lackey's L, S
and M lines) of a recording by (window, page). This step keeps the program's data
pages and drops the rest, each drop a named reason:

- `file`: pages of file-backed mappings (the binary's and the libraries' text,
  rodata and initialised data), by the /proc/PID/maps snapshots lackey_agg took;
- `stack`: the main thread's stack (the mapping holding the first data access of
  the run: ld.so's first push, on the stack valgrind set up for the client);
- `special`: [vvar], [vdso], [vsyscall] and other kernel-named mappings.

Kept: `anon` (anonymous mappings: malloc/jemalloc arenas, mmap'd buffers, other
threads' stacks), `heap` ([heap], brk) and `unmapped` (in no snapshot: a mapping
created and removed between two snapshots; anonymous in practice, counted apart).
A page takes the kind of the latest snapshot that maps it.

Virtual time: data access n of the recording happens at n / accesses_per_s; a
record is stamped at its window's middle, so `time_s // window_s` finds the
window again whatever the rounding.

    python3 trace_from_bins.py --bins B --stats S --maps M --out trace.csv \
        --summary summary.json --pid 1001 --accesses-per-s 1e8
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

PAGE_SHIFT = 12
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

KINDS = ("anon", "heap", "unmapped", "file", "stack", "special")
KEPT_KINDS = frozenset(("anon", "heap", "unmapped"))
KIND_CODE = {k: i for i, k in enumerate(KINDS)}

_MAPS_LINE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+)\s+(\S+)\s+\S+\s+\S+\s+\d+\s*(.*)$")


class RecordError(Exception):
    """Bad or missing recording input (one line for the caller to print)."""


@dataclass(frozen=True)
class Snapshot:
    """One /proc/PID/maps snapshot: [start, end) page ranges and each one's kind code."""

    start_page: I64
    end_page: I64
    kind: npt.NDArray[np.int8]


@dataclass(frozen=True)
class Bins:
    window: I64
    page: I64
    count: I64


def read_bins(path: Path) -> Bins:
    raw = np.fromfile(path, dtype="<u8")
    if raw.size % 3:
        raise RecordError(f"{path}: {raw.size * 8} bytes is not a whole number of 24-byte records")
    rec = raw.reshape(-1, 3).astype(np.int64)
    return Bins(rec[:, 0].copy(), rec[:, 1].copy(), rec[:, 2].copy())


def read_stats(path: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise RecordError(f"{path}:{lineno}: expected 'name value'")
        out[parts[0]] = int(parts[1])
    return out


def _kind_of_mapping(name: str) -> str:
    if name.startswith("/"):
        return "file"
    if name == "[heap]":
        return "heap"
    if name == "[stack]":
        return "stack"
    if name.startswith("["):
        return "special"
    return "anon"


def parse_maps(text: str) -> list[Snapshot]:
    """The snapshots of a lackey_agg --maps-out file, in the order they were taken."""
    snaps: list[Snapshot] = []
    rows: list[tuple[int, int, int]] = []

    def close() -> None:
        if rows:
            a = np.array(rows, dtype=np.int64)
            order = np.argsort(a[:, 0], kind="stable")
            a = a[order]
            snaps.append(Snapshot(a[:, 0].copy(), a[:, 1].copy(), a[:, 2].astype(np.int8)))
        rows.clear()

    for line in text.splitlines():
        if line.startswith("# snapshot"):
            close()
            continue
        m = _MAPS_LINE.match(line)
        if m is None:
            continue
        start, end = int(m.group(1), 16) >> PAGE_SHIFT, int(m.group(2), 16) >> PAGE_SHIFT
        rows.append((start, end, KIND_CODE[_kind_of_mapping(m.group(4).strip())]))
    close()
    return snaps


def classify(pages: I64, snaps: list[Snapshot], stack_addr: int) -> npt.NDArray[np.int8]:
    """Kind code per page: the latest snapshot mapping it wins; stack by stack_addr."""
    kind = np.full(pages.shape[0], KIND_CODE["unmapped"], dtype=np.int8)
    stack_page = stack_addr >> PAGE_SHIFT
    for snap in snaps:
        pos = np.searchsorted(snap.start_page, pages, side="right") - 1
        ok = pos >= 0
        ok[ok] = pages[ok] < snap.end_page[pos[ok]]
        k = snap.kind[np.maximum(pos, 0)].copy()
        hit = np.searchsorted(snap.start_page, stack_page, side="right") - 1
        if hit >= 0 and stack_page < snap.end_page[hit]:
            on_stack = ok & (pos == hit)
            k[on_stack] = KIND_CODE["stack"]
        kind[ok] = k[ok]
    return kind


def top_share(per_page: I64, fraction: float) -> float:
    """Share of all accesses on the hottest `fraction` of the pages (at least one)."""
    if not per_page.size:
        return 0.0
    ranked = np.sort(per_page)[::-1]
    n = max(1, round(fraction * ranked.shape[0]))
    return float(ranked[:n].sum() / ranked.sum())


def build_trace(
    bins: Bins, stats: dict[str, int], snaps: list[Snapshot], accesses_per_s: float,
) -> tuple[Bins, dict[str, object]]:
    """The kept bins and a summary (sizes, drops per reason, skew)."""
    if not bins.page.size:
        raise RecordError("the recording has no binned accesses (did the start mark arrive?)")
    uniq, inverse = np.unique(bins.page, return_inverse=True)
    kind_of_uniq = classify(uniq, snaps, stats.get("first_data_addr", 0))
    kind = kind_of_uniq[inverse]
    kept_codes = np.array([KIND_CODE[k] for k in KEPT_KINDS], dtype=np.int8)
    keep = np.isin(kind, kept_codes)
    by_kind: dict[str, dict[str, int]] = {}
    for name, code in KIND_CODE.items():
        sel = kind == code
        by_kind[name] = {
            "accesses": int(bins.count[sel].sum()),
            "pages": int(np.count_nonzero(kind_of_uniq == code)),
        }
    kept = Bins(bins.window[keep], bins.page[keep], bins.count[keep])
    if not kept.page.size:
        raise RecordError("every binned access was on a dropped page (file, stack, special)")
    kept_uniq, kept_inv = np.unique(kept.page, return_inverse=True)
    per_page = np.bincount(kept_inv, weights=kept.count).astype(np.int64)
    window_accesses = stats["window_accesses"]
    summary: dict[str, object] = {
        "accesses_per_s": accesses_per_s,
        "window_accesses": window_accesses,
        "window_s": window_accesses / accesses_per_s,
        "recorded_data_accesses": stats.get("recorded", 0),
        "trace_s": stats.get("recorded", 0) / accesses_per_s,
        "instructions": stats.get("instr", 0),
        "before_mark_data_accesses": stats.get("before_mark", 0),
        "after_stop_data_accesses": stats.get("after_stop", 0),
        "page_straddles": stats.get("page_straddles", 0),
        "malformed_lines": stats.get("malformed", 0),
        "maps_snapshots": len(snaps),
        "by_kind": by_kind,
        "rows": int(kept.page.shape[0]),
        "pages": int(kept_uniq.shape[0]),
        "accesses": int(kept.count.sum()),
        "windows": int(np.unique(kept.window).shape[0]),
        "span_pages": int(kept_uniq[-1] - kept_uniq[0] + 1),
        "top10_share": top_share(per_page, 0.10),
        "top25_share": top_share(per_page, 0.25),
    }
    return kept, summary


def format_csv(kept: Bins, pid: int, window_s: float) -> str:
    t = (kept.window.astype(np.float64) + 0.5) * window_s
    lines = ["time_s,pid,address,count"]
    lines += [
        f"{ts:.6f},{pid},{addr:#x},{c}"
        for ts, addr, c in zip(
            t.tolist(), (kept.page << PAGE_SHIFT).tolist(), kept.count.tolist(), strict=True
        )
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bins", type=Path, required=True)
    parser.add_argument("--stats", type=Path, required=True)
    parser.add_argument("--maps", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", type=Path)
    parser.add_argument("--pid", type=int, required=True, help="the pid written in the trace")
    parser.add_argument("--accesses-per-s", type=float, default=1e8)
    args = parser.parse_args(argv)
    try:
        if args.accesses_per_s <= 0:
            raise RecordError("--accesses-per-s must be > 0")
        stats = read_stats(args.stats)
        if "window_accesses" not in stats:
            raise RecordError(f"{args.stats}: no window_accesses line")
        bins = read_bins(args.bins)
        snaps = parse_maps(args.maps.read_text())
        kept, summary = build_trace(bins, stats, snaps, args.accesses_per_s)
        args.out.write_text(format_csv(kept, args.pid, float(str(summary["window_s"]))))
    except (OSError, RecordError, KeyError) as err:
        print(f"trace_from_bins: {err}", file=sys.stderr)
        return 2
    text = json.dumps(summary, indent=2, sort_keys=True) + "\n"
    if args.summary:
        args.summary.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
