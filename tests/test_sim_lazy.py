"""Processes advanced lazily (kscand.sim.lifetimes): the same run as the walk over every
process on each access that the simulator did before, draw for draw."""

from __future__ import annotations

from collections import Counter
from typing import Any

from simkit import machine_and_engine, scenario

from kscand.machine import ProcessId
from kscand.sim.lifetimes import ExitQueue
from kscand.sim.machine import SimMachine
from kscand.sim.metrics import Sampler
from kscand.sim.run import run_scenario
from kscand.sim.scenario import Scenario


class EagerSimMachine(SimMachine):
    """The reference: every process checked for its exit on every access (the
    simulator before ExitQueue), then the pending starts."""

    def _advance(self) -> None:
        now_s = self.clock.now_s
        for pid, sim_proc in list(self.procs.items()):
            if sim_proc.exit_s is not None and sim_proc.exit_s <= now_s:
                self._exit(pid)
        while self._pending_pos < len(self._pending):
            start_s, spec_idx, replica = self._pending[self._pending_pos]
            if start_s > now_s:
                break
            self._pending_pos += 1
            self._start(self.scenario.processes[spec_idx], replica)


def _mixed() -> Scenario:
    """Long-lived and short-lived processes, staggered starts, exits due together (one
    advance exits several), THP and plain VMAs, rates that change every second, and few
    pids (pids are reused)."""
    hotset = {"kind": "hotset", "hot_fraction": 0.1, "hot_share": 0.9, "rate_per_s": 1e6}
    return scenario(
        [
            {"name": "app", "placement": "slow", "workload": hotset,
             "vmas": [{"kind": "anon", "size": "64MiB"},
                      {"kind": "anon-thp", "size": "32MiB",
                       "workload": {"kind": "zipf", "skew": 0.99, "rate_per_s": 1e6}}]},
            {"name": "job", "count": 9, "placement": "slow", "start_s": 0.5, "stagger_s": 0.3,
             "lifetime_s": 1.2, "workload": hotset, "vmas": [{"kind": "anon", "size": "16MiB"}]},
            {"name": "mover", "placement": "slow",
             "workload": {"kind": "moving-hotset", "hot_fraction": 0.1, "hot_share": 0.9,
                          "period_s": 1.0, "shift_fraction": 0.1, "rate_per_s": 1e6},
             "vmas": [{"kind": "anon", "size": "32MiB"}]},
            {"name": "batch", "count": 3, "placement": "fast", "start_s": 1.0, "exit_s": 3.0,
             "workload": {"kind": "uniform", "rate_per_s": 1e5},
             "vmas": [{"kind": "anon", "size": "8MiB"}]},
        ],
        tunables={"scan_sleep_ms": 20},
        sim={"pid_max": 310},
    )


def _comparable(machine: SimMachine, hindsight: bool) -> dict[str, Any]:
    report = run_scenario(machine.scenario, machine=machine, hindsight=hindsight)
    out = report.to_json()
    out.pop("wall_s"), out.pop("peak_rss_mib")
    if report.static_best is not None:
        out["static_best"] = report.static_best.top_rate_per_s
    out["exited"] = [p.proc for p in machine.exited]
    out["alive"] = [p.proc for p in machine.alive()]
    out["used_pages"] = machine.used_pages.tolist()
    return out


def test_lazy_exits_give_the_eager_run() -> None:
    lazy = _comparable(SimMachine(_mixed()), hindsight=True)
    eager = _comparable(EagerSimMachine(_mixed()), hindsight=True)
    assert lazy["timeline"] == eager["timeline"]  # shares, latency, rate, promoted
    assert lazy["access_weighted"] == eager["access_weighted"]
    assert lazy == eager
    # The scenario does what it is for: exits, several at once, and pids reused.
    assert lazy["nr_exits"] == 12 and lazy["counters"]["nr_kscand_migrated"] > 0
    pids = Counter(proc.pid for proc in lazy["exited"] + lazy["alive"])
    assert max(pids.values()) > 1


def test_a_killed_process_is_not_exited_twice() -> None:
    machine = SimMachine(_mixed())
    machine.clock.sleep_ns(1_100_000_000)  # the batch jobs have started
    machine.processes()
    batch = [p for p in machine.alive() if p.name.startswith("batch")]
    assert len(batch) == 3 and machine.is_alive(batch[0].proc)
    machine.kill(batch[0].proc)
    machine.clock.sleep_ns(2_000_000_000)  # t = 3.1 s: the other two are due
    machine.processes()
    assert not any(p.name.startswith("batch") for p in machine.alive())
    assert [p.name for p in machine.exited].count(batch[0].name) == 1
    # The three batch jobs, and the three jobs due by 1.1 s, started then (at the first
    # advance past their start), lifetime 1.2 s.
    assert machine.nr_exits == 3 + 3


def test_exit_queue_pops_due_processes_in_start_order() -> None:
    machine = SimMachine(_mixed())
    queue = ExitQueue()
    procs = {}
    for i, exit_s in enumerate([3.0, 1.0, 3.0, None, 2.0]):
        sim_proc = machine.alive()[0]
        clone = type(sim_proc)(ProcessId(400 + i, i), f"p{i}", sim_proc.vmas, exit_s)
        procs[400 + i] = clone
        queue.started(clone)
    assert len(queue) == 4  # the one without an exit time never exits
    assert queue.due(0.5, procs) == []
    del procs[401]  # gone otherwise (killed): dropped when its time comes
    assert queue.due(1.5, procs) == []
    assert [p.name for p in queue.due(3.0, procs)] == ["p0", "p2", "p4"]
    assert len(queue) == 0


def test_cached_samples_equal_fresh_ones() -> None:
    """The sampler recomputes only the processes whose pages moved or whose rates changed:
    every sample equals one taken by a new sampler, which computes every process."""
    machine, engine = machine_and_engine(_mixed())
    sampler = Sampler(machine)
    nr_reused = 0
    t_s = 0.0
    while t_s < 5.0:
        for _ in range(10):
            engine.step()
            machine.clock.sleep_ns(engine.tunables.scan_sleep_ms * 1_000_000)
        t_s = machine.clock.now_s
        machine.processes()
        before = dict(sampler._rates)
        cached = sampler.sample(t_s)
        nr_reused += sum(before.get(p, (None, None))[1] is sampler._rates[p][1]
                         for p in machine.alive())
        assert cached == Sampler(machine).sample(t_s)
    assert nr_reused > 0 and engine.stats.total["nr_kscand_migrated"] > 0
