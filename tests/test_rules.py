"""[[process]] rules: parsing, first-match semantics, and the scale they give in the daemon."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from daemon_fakes import FAST_TUNABLES, DaemonThread, FakeMachine, write_config
from simkit import slot_of

from kscand.cgroups import in_cgroup
from kscand.cli import main as cli_main
from kscand.config import ProcessRule, config_from_text
from kscand.daemon.rules import RuleScalePolicy, first_match
from kscand.errors import ConfigError, ProcessGone
from kscand.machine import ProcessId, ProcessInfo


def rules_of(text: str) -> tuple[ProcessRule, ...]:
    return config_from_text(text).process_rules


def test_process_rules_are_read_in_order() -> None:
    rules = rules_of(
        """
        [[process]]
        pid = 1234
        scale = 0
        [[process]]
        comm = "redis*"
        cgroup = "/system.slice/redis.service"
        scale = 2
        [[process]]
        cgroup = "/batch.slice/"
        scale = 10
        """
    )
    assert rules == (
        ProcessRule(scale=0, pid=1234),
        ProcessRule(scale=2, comm="redis*", cgroup="/system.slice/redis.service"),
        ProcessRule(scale=10, cgroup="/batch.slice"),
    )
    assert [r.needs_describe for r in rules] == [False, True, True]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[process]]\npid = 1\n", "process[0].scale: missing"),
        ("[[process]]\npid = 1\nscale = 11\n", "process[0].scale: 11 is out of range [0, 10]"),
        ("[[process]]\npid = 1\nscale = true\n", "process[0].scale: expected an integer"),
        ("[[process]]\nscale = 3\n", "process[0]: give at least one of pid, cgroup, comm"),
        ("[[process]]\npid = 1\nscale = 1\n[[process]]\nnmae = \"x\"\nscale = 1\n",
         "process[1].nmae: unknown field (known: cgroup, comm, pid, scale)"),
        ("[[process]]\npid = 0\nscale = 1\n", "process[0].pid: 0 is out of range"),
        ("[[process]]\ncgroup = \"system.slice\"\nscale = 1\n", "process[0].cgroup: a cgroup v2"),
        ("[[process]]\ncomm = \"a-very-long-command\"\nscale = 1\n", "process[0].comm:"),
        ("process = 3\n", "process: expected an array of tables"),
        ("process = [1]\n", "process[0]: expected a table"),
        ("[process]\npid = 1\nscale = 1\n", "process: expected an array of tables"),
    ],
)
def test_bad_rule_is_one_line_naming_it(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_text(text)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_too_many_rules_are_refused() -> None:
    text = "[[process]]\npid = 1\nscale = 1\n" * 1025
    with pytest.raises(ConfigError, match="process: 1025 rules, at most 1024"):
        config_from_text(text)


@pytest.mark.parametrize(
    ("cgroup", "selected", "expected"),
    [
        ("/system.slice/redis.service", "/system.slice", True),
        ("/system.slice/redis.service", "/system.slice/redis.service", True),
        ("/system.slice/redis.service", "/system.slice/redis", False),
        ("/system.slice", "/system.slice/redis.service", False),
        ("/anything", "/", True),
    ],
)
def test_cgroup_matches_itself_and_below(cgroup: str, selected: str, expected: bool) -> None:
    assert in_cgroup(cgroup, selected) is expected


def test_first_matching_rule_wins_and_every_field_must_match() -> None:
    rules = (
        ProcessRule(scale=0, pid=7, comm="nginx"),  # pid and comm: both must match
        ProcessRule(scale=1, comm="redis*"),
        ProcessRule(scale=2, cgroup="/db.slice"),
        ProcessRule(scale=3, pid=7),
    )
    redis = ProcessInfo("redis-server", "/db.slice/redis.service")
    assert first_match(rules, ProcessId(7, 1), redis) == rules[1]
    assert first_match(rules, ProcessId(7, 1), ProcessInfo("nginx", "/")) == rules[0]
    assert first_match(rules, ProcessId(8, 1), ProcessInfo("pg", "/db.slice/pg")) == rules[2]
    assert first_match(rules, ProcessId(7, 1), ProcessInfo("bash", "/user.slice")) == rules[3]
    assert first_match(rules, ProcessId(9, 1), ProcessInfo("bash", "/user.slice")) is None
    assert first_match(rules, ProcessId(9, 1), None) is None  # gone: comm/cgroup unknown


class CountingMachine(FakeMachine):
    def __init__(self, infos: dict[int, ProcessInfo], **kwargs: object) -> None:
        super().__init__(nr_procs=len(infos), **kwargs)  # type: ignore[arg-type]
        self.infos = infos
        self.nr_describe = 0

    def describe(self, proc: ProcessId) -> ProcessInfo:
        self.nr_describe += 1
        if proc not in self.nid:
            raise ProcessGone(str(proc))
        return self.infos[proc.pid]


def test_policy_reads_comm_only_when_a_rule_needs_it_and_falls_back() -> None:
    machine = CountingMachine({100: ProcessInfo("a", "/"), 101: ProcessInfo("b", "/")})
    procs = machine.processes()
    policy = RuleScalePolicy(machine, [ProcessRule(scale=4, pid=100)], fallback=lambda p: 9)
    assert [policy(p) for p in procs] == [4, 9]
    assert machine.nr_describe == 0
    policy.set_rules([ProcessRule(scale=2, comm="b")])
    assert [policy(p) for p in procs] == [9, 2]
    assert machine.nr_describe == 2
    assert policy(ProcessId(555, 1)) == 9  # gone while matched: no rule, no exception
    policy.forget_except({procs[0]})
    assert set(policy.names) == {procs[0]}


def test_daemon_applies_rules_and_status_shows_comm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    machine = CountingMachine({
        100: ProcessInfo("redis-server", "/system.slice/redis.service"),
        101: ProcessInfo("batch", "/batch.slice/job-1.scope"),
        102: ProcessInfo("other", "/user.slice"),
    }, nr_pages=16)
    config = config_from_text(
        f"[tunables]\n{FAST_TUNABLES}scan_sleep_ms = 10\n"
        "[[process]]\ncgroup = \"/batch.slice\"\nscale = 0\n"
        "[[process]]\ncomm = \"redis*\"\nscale = 3\n"
    ).with_state_dir(tmp_path / "s")
    run = DaemonThread(config, machine)
    try:
        run.wait_for(lambda: run.daemon.status()["totals"]["nr_kscand_migrated"] == 32)
        status = run.daemon.status()
        by_pid = {p["pid"]: p for p in status["processes"]}
        assert {pid: p["scale"] for pid, p in by_pid.items()} == {100: 3, 101: 0, 102: 1}
        assert {pid: p["comm"] for pid, p in by_pid.items()} == {
            100: "redis-server", 101: "batch", 102: "other"}
        assert by_pid[101]["counters"].get("nr_kscand_mm_scans", 0) == 0  # scale 0: never
        assert by_pid[101]["counters"]["scan_skip_scale0"] > 0
        assert by_pid[100]["counters"]["nr_kscand_migrated"] == 16
        assert machine.nr_describe == 3  # once per process, not per snapshot
        assert cli_main(["status", "--state-dir", str(tmp_path / "s")]) == 0
        out = capsys.readouterr().out
        assert "redis-server" in out and "command" in out
    finally:
        run.stop()


def test_reloaded_rules_apply_to_processes_that_appear_later(tmp_path: Path) -> None:
    path = write_config(tmp_path / "kscand.toml", f"[tunables]\n{FAST_TUNABLES}")
    config = config_from_text(path.read_text()).with_state_dir(tmp_path / "s")
    machine = FakeMachine(nr_procs=1, nr_pages=8)
    run = DaemonThread(config, machine, config_path=path)
    try:
        first = machine.processes()[0]
        run.wait_for(lambda: run.daemon.engine.mm_list.get(first) is not None)
        write_config(path, f"[tunables]\n{FAST_TUNABLES}[[process]]\ncomm = \"fake*\"\nscale = 5\n")
        run.daemon.request_reload()
        run.wait_for(lambda: run.daemon.counters.counts["reloads"] == 1)
        late = ProcessId(200, 2000)  # added by the loop thread, between two steps
        run.daemon.call_in_loop(lambda: machine.nid.__setitem__(late, np.ones(8, np.int32)))
        run.wait_for(lambda: run.daemon.engine.mm_list.get(late) is not None)
        assert slot_of(run.daemon.engine, late).scale == 5
        assert slot_of(run.daemon.engine, first).scale == 1
    finally:
        run.stop()
