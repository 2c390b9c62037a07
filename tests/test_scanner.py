"""The scan: resume address, budget, history, exit mid-scan."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from simkit import HOT, machine_and_engine, run_steps, scenario

from kscand.core.engine import Kscand
from kscand.core.mmlist import HISTORY_CHUNK_BYTES
from kscand.core.scanplan import (
    TAIL_ABSORB_DEN,
    TAIL_ABSORB_NUM,
    ScanEnd,
    hot_mask,
    next_stop,
    plan_scan,
    push_history,
)
from kscand.errors import ProcessGone
from kscand.machine import PAGE_SIZE, PMD_SIZE, PageBatch, ProcessId, Vma, VmFlag
from kscand.sim.machine import SimMachine

GiB = 1 << 30
RW = VmFlag.READ | VmFlag.WRITE


# --- pure arithmetic ---------------------------------------------------------------------

vma_layouts = st.lists(
    st.tuples(
        st.integers(0, 64),  # gap before, in pages
        st.integers(1, 200_000),  # size in pages
        st.booleans(),  # filtered (PROT_NONE)?
    ),
    min_size=1,
    max_size=8,
)


def build_vmas(layout: list[tuple[int, int, bool]]) -> list[Vma]:
    vmas, vaddr = [], 0x7F00_0000_0000
    for gap, size, filtered in layout:
        vaddr += gap * PAGE_SIZE
        vmas.append(Vma(vaddr, vaddr + size * PAGE_SIZE, VmFlag(0) if filtered else RW))
        vaddr += size * PAGE_SIZE
    return vmas


@settings(max_examples=300, deadline=None)
@given(vma_layouts, st.integers(1, 4096).map(lambda n: n * PMD_SIZE // 8))
def test_a_round_of_plans_covers_every_scanned_page_once(
    layout: list[tuple[int, int, bool]], budget_bytes: int,
) -> None:
    budget_bytes -= budget_bytes % PAGE_SIZE
    budget_bytes = max(budget_bytes, PAGE_SIZE)
    vmas = build_vmas(layout)
    walked = [(v.start, v.end) for v in vmas if v.flags]
    total = sum(e - s for s, e in walked)
    covered: list[tuple[int, int]] = []
    resume, wrapped, nr_scans = 0, False, 0
    while not wrapped:
        plan = plan_scan(vmas, resume, budget_bytes)
        spent = sum(e - s for s, e in plan.ranges)
        # Never more than the budget, rounded up to one PMD (a THP is not split), but
        # for the visit that takes a tail of at most half a budget with it.
        assert spent <= budget_bytes + PMD_SIZE or (
            plan.wrapped and spent <= budget_bytes * TAIL_ABSORB_NUM // TAIL_ABSORB_DEN
        )
        if not plan.wrapped:
            assert spent >= budget_bytes
        for start, end in plan.ranges:
            assert start < end
            assert start // HISTORY_CHUNK_BYTES == (end - 1) // HISTORY_CHUNK_BYTES
            assert any(s <= start and end <= e for s, e in walked)
        covered.extend(plan.ranges)
        resume, wrapped = plan.resume_vaddr, plan.wrapped
        nr_scans += 1
        assert nr_scans <= total // budget_bytes + 2
    covered.sort()
    for (_, e1), (s2, _) in itertools.pairwise(covered):
        assert e1 <= s2  # no page twice
    assert sum(e - s for s, e in covered) == total  # every page once


def test_a_tail_of_at_most_half_a_budget_is_covered_by_the_visit_before_it() -> None:
    # hotset's layout: 8 GiB, a filtered VMA, 80 MiB of small ones; 4 GiB visits.
    GiB, MiB = 1 << 30, 1 << 20
    big = Vma(GiB, 9 * GiB, RW)
    filtered = Vma(9 * GiB, 10 * GiB, VmFlag(0))
    tail = Vma(10 * GiB, 10 * GiB + 80 * MiB, RW)
    after = Vma(11 * GiB, 11 * GiB + 2 * MiB, VmFlag(0))  # filtered: passed, no budget
    vmas = [big, filtered, tail, after]
    first = plan_scan(vmas, 0, 4 * GiB)
    assert not first.wrapped and first.resume_vaddr == 5 * GiB
    second = plan_scan(vmas, first.resume_vaddr, 4 * GiB)
    assert second.wrapped and second.resume_vaddr == 0
    assert sum(e - s for s, e in second.ranges) == 4 * GiB + 80 * MiB
    # 5 GiB + 80 MiB left: within 1.5 budgets, one visit.
    assert plan_scan(vmas, 4 * GiB, 4 * GiB).wrapped
    # 7 GiB + 80 MiB left: the visit stops at its budget, as the series' does.
    fourth = plan_scan(vmas, 2 * GiB, 4 * GiB)
    assert not fourth.wrapped and fourth.resume_vaddr == 6 * GiB


@given(st.integers(0, 1 << 40).map(lambda v: v & ~(PAGE_SIZE - 1)),
       st.integers(1, 1 << 33), st.integers(1, 1 << 34))
def test_next_stop_is_bounded_and_aligned(start: int, length: int, budget: int) -> None:
    vma_end = start + length * PAGE_SIZE
    stop = next_stop(start, vma_end, budget)
    assert start < stop <= vma_end
    assert stop - start <= HISTORY_CHUNK_BYTES
    assert stop == vma_end or stop % PMD_SIZE == 0


def test_history_depth_two_needs_two_consecutive_accesses() -> None:
    h = np.zeros(4, dtype=np.uint8)
    h = push_history(h, np.array([1, 1, 0, 0], dtype=bool))
    assert hot_mask(h, 2).tolist() == [False, False, False, False]
    assert hot_mask(h, 1).tolist() == [True, True, False, False]
    h = push_history(h, np.array([1, 0, 1, 0], dtype=bool))
    assert hot_mask(h, 2).tolist() == [True, False, False, False]


# --- the scan on the simulated machine -----------------------------------------------------


class CountingMachine:
    """A SimMachine wrapper that counts Accessed-bit tests per address."""

    def __init__(self, inner: SimMachine) -> None:
        self.inner = inner
        self.tested: list[np.ndarray] = []
        self.kill_after_reads: int | None = None
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def read_range(self, proc: ProcessId, start: int, end: int) -> PageBatch:
        self.reads += 1
        if self.kill_after_reads is not None and self.reads > self.kill_after_reads:
            self.inner.kill(proc)
        return self.inner.read_range(proc, start, end)

    def test_and_clear_young(self, proc: ProcessId, pages: PageBatch) -> np.ndarray:
        self.tested.append(pages.vaddr.copy())
        return self.inner.test_and_clear_young(proc, pages)


def three_gib() -> tuple[SimMachine, Kscand]:
    sc = scenario(
        [{"name": "big", "placement": "slow", "workload": HOT,
          "vmas": [{"kind": "anon", "size": "3GiB"}]}],
        nodes=[
            {"nid": 0, "capacity": "1GiB", "cpus": True, "tier": 4},
            {"nid": 1, "capacity": "4GiB", "cpus": False, "tier": 67},
        ],
        tunables={"scan_size_bytes": "1GiB", "scan_size_min_bytes": "1GiB",
                  "scan_size_max_bytes": "1GiB", "migrate_queue_max": 1},
    )
    return machine_and_engine(sc)


def test_three_gib_process_is_covered_in_three_passes_of_one_gib() -> None:
    machine, engine = three_gib()
    counting = CountingMachine(machine)
    engine.machine = engine.scanner.machine = counting
    proc = machine.processes()[0]
    base = machine.vmas(proc)[0].start
    run_steps(machine, engine, 1)
    slot = engine.mm_list.get(proc)
    assert slot is not None and slot.resume_vaddr == base + GiB and slot.full_scans == 0
    run_steps(machine, engine, 1)
    assert slot.resume_vaddr == base + 2 * GiB
    run_steps(machine, engine, 1)
    assert slot.resume_vaddr == 0 and slot.full_scans == 1
    tested = np.concatenate(counting.tested)
    pages = (tested - np.uint64(base)) // np.uint64(PAGE_SIZE)
    assert np.array_equal(np.bincount(pages.astype(np.int64)), np.ones(3 * GiB // PAGE_SIZE))
    assert engine.stats.total["nr_kscand_ptes_scanned"] == 3 * GiB // PAGE_SIZE
    run_steps(machine, engine, 1)  # the next round starts over at the beginning
    assert slot.resume_vaddr == base + GiB


def test_process_exit_mid_scan_releases_the_slot_safely() -> None:
    machine, engine = three_gib()
    counting = CountingMachine(machine)
    counting.kill_after_reads = 2
    engine.machine = engine.scanner.machine = engine.migrator.machine = counting
    proc = machine.processes()[0]
    result = engine.step()
    assert result.nr_scanned_mms == 1
    assert engine.mm_list.get(proc) is None
    assert engine.mm_list.cursor() is None
    assert engine.migrator.nr_queued == 0
    assert engine.stats.of(proc)["scan_proc_gone"] == 1
    assert machine.move_log == [] or all(p != proc for p, v in machine.move_log if len(v))
    engine.step()  # nothing left, nothing raised
    try:
        machine.vmas(proc)
    except ProcessGone:
        pass
    else:
        raise AssertionError("killed process still has VMAs")


def test_scan_end_values() -> None:
    assert {e.value for e in ScanEnd} == {"budget", "wrapped", "gone", "denied"}
