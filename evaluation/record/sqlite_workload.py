"""The SQLite workload of record.sh: an indexed lookup/update mix with Zipf keys.

`build` prints the SQL that creates the database (run natively, before the
recording): table kv(id INTEGER PRIMARY KEY, k INTEGER, v TEXT) with --rows rows,
k = id * P mod rows (a bijection, so index order is not table order), v a
deterministic 64-255 character string, and an index kv_k on k.

`drive` feeds the sqlite3 CLI (running under lackey) through two FIFOs: it sets a
page cache larger than the database (no mmap), warms it with a count(*) over
the table's b-tree and one over the index's (each walks every page), waits for
the CLI to print MARK-START (the CLI is then idle), signals the aggregator (the
recording starts), sends --stmts statements in transactions of --txn:
`SELECT v FROM kv WHERE k = ?` with probability --get-share, else
`UPDATE kv SET v = ? WHERE k = ?` (a new value of similar length), keys
drawn from Zipf(--skew) over a seeded random permutation of the keys; then
waits for MARK-STOP and signals again (the recording stops).

    python3 sqlite_workload.py build --rows 200000 | sqlite3 kv.db
    python3 sqlite_workload.py drive --rows 200000 --stmts 6000 --stdin-fifo I \
        --stdout-fifo O --mark-pid-file F
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

KEY_MULTIPLIER = 2_654_435_761  # prime; must be coprime with --rows
CACHE_KIB = 262_144  # PRAGMA cache_size=-N: 256 MiB, more than the database
SETTLE_S = 0.5  # after the CLI answered a mark: let the aggregator drain the log


def multiplier(rows: int) -> int:
    if math.gcd(KEY_MULTIPLIER, rows) != 1:
        raise SystemExit(f"sqlite_workload: --rows must be coprime with {KEY_MULTIPLIER}")
    return KEY_MULTIPLIER


def build_sql(rows: int) -> str:
    p = multiplier(rows)
    return "\n".join([
        "PRAGMA page_size=4096;",
        "PRAGMA journal_mode=OFF;",
        "PRAGMA synchronous=OFF;",
        "CREATE TABLE kv(id INTEGER PRIMARY KEY, k INTEGER NOT NULL, v TEXT NOT NULL);",
        f"WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i + 1 < {rows})",
        f"INSERT INTO kv(id, k, v) SELECT i, (i * {p}) % {rows},",
        "  printf('%0*d', 64 + (i * 37) % 192, i) FROM s;",
        "CREATE INDEX kv_k ON kv(k);",
        "",
    ])


def zipf_cum_weights(n: int, skew: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (r ** skew) for r in range(1, n + 1)))


def workload_sql(args: argparse.Namespace) -> list[str]:
    rng = random.Random(args.seed)
    by_rank = list(range(args.rows))
    rng.shuffle(by_rank)
    picks = rng.choices(by_rank, cum_weights=zipf_cum_weights(args.rows, args.skew),
                        k=args.stmts)
    out: list[str] = []
    for lo in range(0, args.stmts, args.txn):
        out.append("BEGIN;")
        for k in picks[lo : lo + args.txn]:
            if rng.random() < args.get_share:
                out.append(f"SELECT v FROM kv WHERE k = {k};")
            else:
                width = 64 + rng.randrange(192)
                out.append(f"UPDATE kv SET v = printf('%0*d', {width}, {rng.randrange(10**9)})"
                           f" WHERE k = {k};")
        out.append("COMMIT;")
    return out


class Reader(threading.Thread):
    """Drains the CLI's stdout; remembers which marker lines it has seen."""

    def __init__(self, f: TextIO) -> None:
        super().__init__(daemon=True)
        self.f = f
        self.lines = 0
        self.seen: set[str] = set()
        self.cond = threading.Condition()

    def run(self) -> None:
        for line in self.f:
            self.lines += 1
            if line.startswith("MARK-"):
                with self.cond:
                    self.seen.add(line.strip())
                    self.cond.notify_all()
        with self.cond:
            self.seen.add("EOF")
            self.cond.notify_all()

    def wait_for(self, marker: str, timeout_s: float) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: marker in self.seen or "EOF" in self.seen,
                                      timeout_s):
                raise SystemExit(f"sqlite_workload: no {marker} within {timeout_s:.0f} s")
            if marker not in self.seen:
                raise SystemExit(f"sqlite_workload: the CLI ended before {marker}")


def mark(pid_file: Path | None) -> None:
    time.sleep(SETTLE_S)
    if pid_file is not None:
        os.kill(int(pid_file.read_text().strip()), signal.SIGUSR1)


def drive(args: argparse.Namespace) -> int:
    multiplier(args.rows)
    stmts = workload_sql(args)
    # Not one `with` for both: closing the CLI's stdout while the reader thread
    # blocks in read() on it would wait for that thread, and the thread for the
    # CLI, which waits for its stdin to end.
    cli_in = open(args.stdin_fifo, "w")  # noqa: SIM115
    cli_out = open(args.stdout_fifo)  # noqa: SIM115
    try:
        reader = Reader(cli_out)
        reader.start()
        cli_in.write("\n".join([
            "PRAGMA mmap_size=0;",
            f"PRAGMA cache_size=-{CACHE_KIB};",
            "PRAGMA synchronous=OFF;",
            # count(*) walks every page of a b-tree (sqlite3BtreeCount) without
            # decoding rows: NOT INDEXED the table's, else the smallest index's (kv_k)
            "SELECT count(*) FROM kv NOT INDEXED;",
            "SELECT count(*) FROM kv;",
            "SELECT 'MARK-START';",
            "",
        ]))
        cli_in.flush()
        t0 = time.monotonic()
        reader.wait_for("MARK-START", args.timeout_s)
        t_warm = time.monotonic() - t0
        mark(args.mark_pid_file)
        t0 = time.monotonic()
        cli_in.write("\n".join(stmts) + "\nSELECT 'MARK-STOP';\n")
        cli_in.flush()
        reader.wait_for("MARK-STOP", args.timeout_s)
        t_run = time.monotonic() - t0
        mark(args.mark_pid_file)
        cli_in.write(".quit\n")
    finally:
        cli_in.close()  # first: the CLI sees EOF, exits, and the reader sees EOF
    reader.join(timeout=args.timeout_s)
    cli_out.close()
    print(f"sqlite_workload: rows={args.rows} stmts={args.stmts} warm_s={t_warm:.1f} "
          f"run_s={t_run:.1f} output_lines={reader.lines}", file=sys.stderr)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--rows", type=int, default=200_000)
    d = sub.add_parser("drive")
    d.add_argument("--rows", type=int, default=200_000)
    d.add_argument("--stmts", type=int, default=20_000)
    d.add_argument("--txn", type=int, default=500)
    d.add_argument("--get-share", type=float, default=0.8)
    d.add_argument("--skew", type=float, default=0.99)
    d.add_argument("--seed", type=int, default=13)
    d.add_argument("--stdin-fifo", type=Path, required=True)
    d.add_argument("--stdout-fifo", type=Path, required=True)
    d.add_argument("--mark-pid-file", type=Path)
    d.add_argument("--timeout-s", type=float, default=1800.0)
    args = ap.parse_args()
    if args.cmd == "build":
        sys.stdout.write(build_sql(args.rows))
        return 0
    return drive(args)


if __name__ == "__main__":
    sys.exit(main())
