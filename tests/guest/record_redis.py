"""Inside the guest: record Debian's redis-server under a skewed client with `kscand record`.

    PYTHONPATH=src python tests/guest/record_redis.py --out DIR [--keys N] [--duration-s S]

1. Bring up loopback; start redis-server (no persistence, port 6399, data in DIR/redis).
2. Load --keys keys (SET, pipelined; evaluation/record/redis_client.py's RESP client
   and value sizes).
3. Start `kscand record --pid <redis-server> --duration S --interval I --source page_idle
   --out DIR/redis.csv --json DIR/record.json`; while it runs, send --rate requests per
   second (paced, in pipelines of DEPTH): GET with probability 0.9 else SET, keys drawn
   from a Zipf(0.99) popularity over a seeded random permutation of the keys
   (redis_client.py's draw). Unpaced, the client under TCG touched ~85 % of the
   server's pages in every 1 s interval: no pattern left to see.
4. Stop the server; write DIR/result.json: the recorder's exit status and output, the
   requests sent, the server's memory.

Standard library only (the recorder runs as its own process with the venv's python).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PORT = 6399
DEPTH = 10  # requests per pipeline (paced: one pipeline every DEPTH / rate seconds)
LOAD_DEPTH = 256
DRAW_CHUNK = 4096  # requests drawn at a time (rng.choices over the cumulative weights)
READY_S = 120.0
RECORD_SLACK_S = 300.0  # the recorder's imports and passes under TCG, past --duration-s


def client_module() -> ModuleType:
    path = ROOT / "evaluation" / "record" / "redis_client.py"
    spec = importlib.util.spec_from_file_location("redis_client", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def start_server(data: Path) -> subprocess.Popen[bytes]:
    data.mkdir(parents=True, exist_ok=True)
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("redis-server is not installed (testbed/setup.sh installs it)")
    argv = [server, "--port", str(PORT), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(data), "--logfile", str(data / "redis.log"),
            "--protected-mode", "no"]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL)


def load(rc: ModuleType, conn: Any, keys: list[bytes], rng: random.Random) -> None:
    for lo in range(0, len(keys), LOAD_DEPTH):
        conn.pipeline([rc.resp(b"SET", k, rc.value(rng, 64, 512))
                       for k in keys[lo:lo + LOAD_DEPTH]])


def serve(rc: ModuleType, conn: Any, keys: list[bytes], recorder: subprocess.Popen[bytes],
          deadline: float, rate_per_s: float) -> dict[str, int]:
    """Zipf(0.99) GET/SET requests at rate_per_s until the recorder exits (or the
    deadline)."""
    rng = random.Random(14)
    by_rank = keys[:]
    rng.shuffle(by_rank)
    cum = rc.zipf_cum_weights(len(keys), 0.99)
    sent = gets = 0
    start = time.monotonic()
    while recorder.poll() is None and time.monotonic() < deadline:
        picks = rng.choices(by_rank, cum_weights=cum, k=DRAW_CHUNK)
        for lo in range(0, DRAW_CHUNK, DEPTH):
            cmds = []
            for key in picks[lo:lo + DEPTH]:
                if rng.random() < 0.9:
                    cmds.append(rc.resp(b"GET", key))
                    gets += 1
                else:
                    cmds.append(rc.resp(b"SET", key, rc.value(rng, 64, 512)))
            conn.pipeline(cmds)
            sent += len(cmds)
            time.sleep(max(0.0, start + sent / rate_per_s - time.monotonic()))
            if recorder.poll() is not None:
                break
    return {"requests": sent, "gets": gets}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--keys", type=int, default=50_000)
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--interval-s", type=float, default=1.0)
    ap.add_argument("--rate", type=float, default=300.0, help="requests per second")
    args = ap.parse_args()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False)
    rc = client_module()
    server = start_server(out / "redis")
    result: dict[str, Any] = {"server_pid": server.pid}
    try:
        conn = rc.connect(PORT, READY_S)
        rc.ping_until_loaded(conn, READY_S)
        keys = [b"key:%08d" % i for i in range(args.keys)]
        t0 = time.monotonic()
        load(rc, conn, keys, random.Random(13))
        result["load_s"] = round(time.monotonic() - t0, 1)
        argv = [sys.executable, "-m", "kscand", "record", "--pid", str(server.pid),
                "--duration", str(args.duration_s), "--interval", str(args.interval_s),
                "--source", "page_idle", "--out", str(out / "redis.csv"),
                "--json", str(out / "record.json")]
        with open(out / "record.out", "wb") as stdout, open(out / "record.err", "wb") as stderr:
            recorder = subprocess.Popen(argv, stdout=stdout, stderr=stderr)
            t0 = time.monotonic()
            result |= serve(rc, conn, keys, recorder,
                            time.monotonic() + args.duration_s + RECORD_SLACK_S, args.rate)
            result["serve_s"] = round(time.monotonic() - t0, 1)
            try:
                result["record_status"] = recorder.wait(timeout=RECORD_SLACK_S)
            except subprocess.TimeoutExpired:
                recorder.kill()
                result["record_status"] = None
        info = conn.pipeline([rc.resp(b"INFO", b"memory")])[0] or b""
        result["used_memory_rss"] = next(
            (int(line.split(b":")[1]) for line in info.splitlines()
             if line.startswith(b"used_memory_rss:")), None)
        rc.shutdown(conn)
    finally:
        if server.poll() is None:
            server.terminate()
        server.wait(timeout=60)
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
