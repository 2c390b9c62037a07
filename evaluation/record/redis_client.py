"""A skewed key-value client for redis-server, raw RESP over a TCP socket (stdlib only).

--phase load (against a native redis-server, before the recording): SET every
key of the key space once (pipelined), SAVE (the RDB file the recorded server
starts from, so the recording does not pay for --keys SET commands under
lackey), SHUTDOWN NOSAVE.
--phase run (against the server under lackey, which loaded that RDB file): PING
until the load is done, then mark: SIGUSR1 to the aggregator (--mark-pid-file),
the recording starts; --ops requests, GET with probability --get-share else SET, keys
drawn from a Zipf(--skew) popularity over the key space; popularity rank is a
seeded random permutation of the keys, so hot keys are spread over the space
and not clustered by insertion order. Pipelined --depth requests per round trip.
Mark again (stop), then SHUTDOWN NOSAVE.

    python3 redis_client.py --phase load --port 6399 --keys 100000
    python3 redis_client.py --phase run --port 6399 --keys 100000 --ops 60000 --mark-pid-file F
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import signal
import socket
import sys
import time
from pathlib import Path


def resp(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for p in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(p), p))
    return b"".join(out)


class Conn:
    def __init__(self, port: int, timeout_s: float) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def _line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def reply(self) -> bytes | None:
        line = self._line()
        if line[:1] in (b"+", b":"):
            return line[1:]
        if line[:1] == b"-":
            raise RuntimeError(f"server error: {line[1:].decode(errors='replace')}")
        if line[:1] == b"$":
            n = int(line[1:])
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self._fill()
            data, self.buf = self.buf[:n], self.buf[n + 2 :]
            return data
        raise RuntimeError(f"unexpected reply {line[:40]!r}")

    def pipeline(self, cmds: list[bytes]) -> list[bytes | None]:
        self.sock.sendall(b"".join(cmds))
        return [self.reply() for _ in cmds]


def connect(port: int, wait_s: float) -> Conn:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Conn(port, timeout_s=600.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def zipf_cum_weights(n: int, skew: float) -> list[float]:
    return list(itertools.accumulate(1.0 / (r ** skew) for r in range(1, n + 1)))


SETTLE_S = 0.5  # after the server answered: let the aggregator drain the log


def ping_until_loaded(conn: Conn, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn.pipeline([resp(b"PING")])
            return
        except RuntimeError as err:  # -LOADING while the RDB file loads
            if "LOADING" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def mark(pid_file: Path | None) -> None:
    time.sleep(SETTLE_S)
    if pid_file is None:
        return
    os.kill(int(pid_file.read_text().strip()), signal.SIGUSR1)


def value(rng: random.Random, lo: int, hi: int) -> bytes:
    return rng.randbytes(rng.randint(lo, hi) // 2).hex().encode()


def shutdown(conn: Conn) -> None:
    try:
        conn.sock.sendall(resp(b"SHUTDOWN", b"NOSAVE"))
        conn.sock.recv(1024)
    except OSError:
        pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phase", choices=("load", "run"), required=True)
    ap.add_argument("--port", type=int, default=6399)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--ops", type=int, default=60_000)
    ap.add_argument("--get-share", type=float, default=0.9)
    ap.add_argument("--skew", type=float, default=0.99)
    ap.add_argument("--value-min", type=int, default=64)
    ap.add_argument("--value-max", type=int, default=512)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--mark-pid-file", type=Path)
    ap.add_argument("--wait-s", type=float, default=600.0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    conn = connect(args.port, args.wait_s)
    keys = [b"key:%08d" % i for i in range(args.keys)]
    t0 = time.monotonic()
    if args.phase == "load":
        for lo in range(0, args.keys, args.depth * 8):
            batch = keys[lo : lo + args.depth * 8]
            conn.pipeline(
                [resp(b"SET", k, value(rng, args.value_min, args.value_max)) for k in batch]
            )
        conn.pipeline([resp(b"SAVE")])
        shutdown(conn)
        print(f"redis_client: loaded {args.keys} keys and saved in "
              f"{time.monotonic() - t0:.1f} s", file=sys.stderr)
        return 0
    ping_until_loaded(conn, args.wait_s)
    t_load = time.monotonic() - t0
    rng = random.Random(args.seed + 1)
    mark(args.mark_pid_file)
    by_rank = keys[:]
    rng.shuffle(by_rank)
    cum = zipf_cum_weights(args.keys, args.skew)
    picks = rng.choices(by_rank, cum_weights=cum, k=args.ops)
    gets = hits = 0
    t0 = time.monotonic()
    for lo in range(0, args.ops, args.depth):
        cmds = []
        for k in picks[lo : lo + args.depth]:
            if rng.random() < args.get_share:
                cmds.append(resp(b"GET", k))
                gets += 1
            else:
                cmds.append(resp(b"SET", k, value(rng, args.value_min, args.value_max)))
        hits += sum(1 for r in conn.pipeline(cmds) if r is not None and r != b"OK")
    conn.pipeline([resp(b"PING")])
    t_run = time.monotonic() - t0
    mark(args.mark_pid_file)
    shutdown(conn)
    print(
        f"redis_client: keys={args.keys} rdb_load_s={t_load:.1f} ops={args.ops} gets={gets} "
        f"get_hits={hits} run_s={t_run:.1f}",
        file=sys.stderr,
    )
    return 0 if hits == gets else 1


if __name__ == "__main__":
    sys.exit(main())
