"""A fuzz harness over every file and socket input of kscand, under a memory limit.

    python tests/fuzz_harness.py [--examples N] [--memory-mib M] [--target NAME ...] [--seed S]

Targets (each a hypothesis property): the config file (load_config on a generated
file), the scenario file (load_scenario, then the up-front memory estimate decides
whether it may run), a trace file (the loader as it is: load_trace), control replies
(decode_reply + check_reply, then `kscand status`'s render of a status), and control
requests (what the daemon's socket thread parses). Every outcome must be a value or
the module's one-line error (ConfigError, KscandError); anything else is a finding.
The process limits its own address space first (resource.setrlimit RLIMIT_AS), so an
input that makes kscand allocate without bound is a MemoryError finding, not a
machine that swaps. `make test` runs it briefly (tests/test_fuzz_inputs.py),
`make fuzz` for longer.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

TARGETS = ("config", "scenario", "trace", "reply", "request")

# --- TOML text from known keys and hostile values -------------------------------------------

SCALARS = [
    "0", "-1", "1", "20", "4096", "9223372036854775807", "18446744073709551616",
    "1e308", "-1e308", "inf", "nan", "0.001", "1e-300", "true", "false",
    '""', '"[/]"', '"[red]x[/red]"', '"\\u0000"', '"64TiB"', '"1GiB"', '"x"',
    '"/sys/fs/cgroup/system.slice"', '"/dev/zero"', '"127.0.0.1:0"', '"::1"',
    "[]", "[1, 2]", '["a", "[/]"]', "{}", "{ a = 1 }", "[[[[[[[[1]]]]]]]]",
]

CONFIG_KEYS = {
    "daemon": ["log_level", "state_dir", "status_interval_ms", "metrics", "trace",
               "trace_level", "access_source", "x"],
    "scan": ["pids", "cgroups", "comm_patterns", "x"],
    "topology": ["top_tier_nodes", "slow_nodes", "x"],
    "tunables": ["scan_sleep_ms", "scan_size_bytes", "target_node", "mms_to_scan",
                 "migrate_queue_max", "promote_rate_limit_mbps", "scan_enabled", "x"],
}
PROCESS_RULE_KEYS = ["pid", "comm", "cgroup", "scale", "x"]

SCENARIO_TOP = ["name", "description", "seed", "duration_s", "sample_interval_s"]
NODE_KEYS = ["nid", "capacity", "cpus", "tier", "latency_ns"]
VMA_KEYS = ["kind", "size"]
WORKLOAD_KEYS = ["kind", "rate_per_s", "hot_fraction", "hot_share", "skew", "period_s",
                 "pages_per_s", "path", "window_s", "trace_pid"]
PROCESS_KEYS = ["name", "placement", "start_s", "exit_s", "count", "stagger_s",
                "lifetime_s", "scale"]


def _strategies() -> dict[str, Any]:
    from hypothesis import strategies as st

    value = st.sampled_from(SCALARS) | st.integers(-(1 << 70), 1 << 70).map(str) | st.floats(
        allow_nan=False, allow_infinity=False).map(repr) | st.text(max_size=10).map(json.dumps)

    def table(keys: list[str]) -> Any:
        return st.dictionaries(st.sampled_from(keys), value, max_size=len(keys))

    def lines(pairs: dict[str, str]) -> str:
        return "".join(f"{k} = {v}\n" for k, v in pairs.items())

    config = st.builds(
        lambda sections, rules: "".join(f"[{name}]\n{lines(body)}" for name, body in sections)
        + "".join(f"[[process]]\n{lines(rule)}" for rule in rules),
        st.lists(st.sampled_from(sorted(CONFIG_KEYS)).flatmap(
            lambda name: st.tuples(st.just(name), table(CONFIG_KEYS[name]))), max_size=4),
        st.lists(table(PROCESS_RULE_KEYS), max_size=3),
    )
    good_node = ('[[nodes]]\nnid = 0\ncapacity = "64MiB"\ncpus = true\ntier = 4\n'
                 '[[nodes]]\nnid = 1\ncapacity = "64MiB"\ncpus = false\ntier = 67\n')
    scenario = st.builds(
        lambda top, nodes, proc, vma, workload, tunables: (
            lines(top) + (good_node if nodes is None else f"[[nodes]]\n{lines(nodes)}")
            + f"[[processes]]\n{lines(proc)}"
            + f"[[processes.vmas]]\n{lines(vma)}"
            + (f"[processes.vmas.workload]\n{lines(workload)}" if workload else "")
            + (f"[tunables]\n{lines(tunables)}" if tunables else "")
        ),
        table(SCENARIO_TOP), st.none() | table(NODE_KEYS), table(PROCESS_KEYS),
        st.fixed_dictionaries({"size": st.sampled_from(['"4MiB"', '"64TiB"', '"2MiB"'])
                               | value}, optional={"kind": value}),
        table(WORKLOAD_KEYS), table(CONFIG_KEYS["tunables"]),
    )
    trace_line = st.builds(
        lambda t, pid, addr, count: f"{t},{pid},{addr}" + (f",{count}" if count else ""),
        st.sampled_from(["0", "1e12", "-1", "nan", "0.5", "1e308"]) | st.floats().map(repr),
        st.sampled_from(["1", "-1", "99999999999999999999", "x"]) | st.integers().map(str),
        st.sampled_from(["0x1000", "0xffffffffffffffffff", "4096", "-4096"])
        | st.integers(0, 1 << 70).map(hex),
        st.none() | st.sampled_from(["1", "0", "-1", "1e9", "99999999999999999999"]),
    )
    trace = st.lists(trace_line, max_size=20).map(lambda ls: "\n".join(["t,pid,addr", *ls]))
    json_value = st.recursive(
        st.none() | st.booleans() | st.integers(-(1 << 70), 1 << 70) | st.floats()
        | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=20,
    )
    status_keys = ["totals", "processes", "daemon", "queue", "tunables", "version", "pid",
                   "state", "machine", "access_source", "access_source_reason",
                   "access_source_counters", "uptime_s", "written_at"]
    status = st.dictionaries(st.sampled_from(status_keys), json_value, max_size=8)
    reply = st.one_of(
        st.binary(max_size=200),
        st.builds(lambda s: json.dumps({"ok": True, "status": s}).encode() + b"\n", status),
        st.builds(lambda d: json.dumps(d).encode() + b"\n",
                  st.dictionaries(st.sampled_from(["ok", "status", "tunables", "fields",
                                                   "processes", "pid", "error",
                                                   "error_kind"]), json_value, max_size=5)),
        st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n + b"\n"),
    )
    return {"config": config, "scenario": scenario, "trace": trace, "reply": reply,
            "request": reply}


# --- the properties ---------------------------------------------------------------------------

def _write(directory: Path, name: str, data: str | bytes) -> Path:
    path = directory / name
    if isinstance(data, str):
        path.write_text(data, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(data)
    path.chmod(0o644)
    return path


def check_config(directory: Path, text: str) -> None:
    from kscand.config import load_config
    from kscand.errors import ConfigError

    with contextlib.suppress(ConfigError):
        load_config(_write(directory, "kscand.toml", text))


def check_scenario(directory: Path, text: str) -> None:
    from kscand.errors import ConfigError
    from kscand.sim.checks import SIM_MEMORY_LIMIT_BYTES, estimated_memory_bytes
    from kscand.sim.scenario import load_scenario

    try:
        scenario = load_scenario(_write(directory, "s.toml", text))
    except ConfigError:
        return
    assert estimated_memory_bytes(scenario) <= SIM_MEMORY_LIMIT_BYTES


def check_trace(directory: Path, text: str) -> None:
    from kscand.errors import ConfigError
    from kscand.sim import workloads

    os.environ["KSCAND_TRACE_CACHE"] = "off"  # every example parsed, none from the cache
    with contextlib.suppress(ConfigError):
        workloads.load_trace(str(_write(directory, "t.csv", text)))


def check_reply(_directory: Path, line: bytes) -> None:
    from rich.console import Console

    from kscand.cli.status import render
    from kscand.daemon.control import check_reply as check
    from kscand.daemon.control import decode_reply
    from kscand.errors import KscandError

    for cmd in ("status", "get", "set", "scale", "ping"):
        try:
            reply = check(cmd, decode_reply(line))
        except KscandError:
            continue
        if cmd == "status":
            render(Console(file=io.StringIO(), width=80), reply["status"], "socket", 20)


def check_request(_directory: Path, line: bytes) -> None:
    from kscand.daemon.control import answer

    def handler(request: dict[str, Any]) -> dict[str, Any]:
        return {"echo": request["cmd"]}

    reply = answer(handler, line[:65536])
    assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool)


CHECKS: dict[str, Callable[[Path, Any], None]] = {
    "config": check_config, "scenario": check_scenario, "trace": check_trace,
    "reply": check_reply, "request": check_request,
}


def _property(check: Callable[[Path, Any], None], strategy: Any, directory: Path,
              examples: int, seed: int | None) -> Callable[[], None]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as with_seed

    @settings(max_examples=examples, database=None, deadline=None,
              derandomize=seed is None, suppress_health_check=list(HealthCheck),
              print_blob=True)
    @given(strategy)
    def prop(data: Any) -> None:
        check(directory, data)

    out: Callable[[], None] = with_seed(seed)(prop) if seed is not None else prop
    return out


def run(targets: list[str], examples: int, seed: int | None) -> list[str]:
    """Run each target's property; the failures, as text."""
    strategies = _strategies()
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for name in targets:
            prop = _property(CHECKS[name], strategies[name], directory, examples, seed)
            try:
                prop()
            except Exception:  # a finding: report it, go on with the other targets
                failures.append(f"--- {name} ---\n{traceback.format_exc(limit=8)}")
            failed = bool(failures) and failures[-1].startswith(f"--- {name} ---")
            print(f"fuzz {name}: {examples} examples, {'FAILED' if failed else 'ok'}", flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--memory-mib", type=int, default=1536,
                        help="address-space limit of this process (RLIMIT_AS)")
    parser.add_argument("--target", action="append", choices=TARGETS)
    parser.add_argument("--seed", type=int, default=None,
                        help="random seed (default: derandomized, the same every run)")
    args = parser.parse_args(argv)
    limit = args.memory_mib << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    failures = run(args.target or list(TARGETS), args.examples, args.seed)
    for failure in failures:
        sys.stderr.write(failure + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    sys.exit(main())
