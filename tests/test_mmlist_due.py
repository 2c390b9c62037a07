"""MmList's due heap: a pass jumps to the due slots in ring order, as the walk did.

The reference below is the ring walk the engine did before the due heap (a deque
rotated one slot per look, every listed slot looked at once per pass, the due
test at the time of the look). Both are driven through the same random passes:
scans that move the clock (slots further on fall due meanwhile), scans whose
process exits, scale changes, entries and exits between passes, pass limits.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable

from kscand.core.mmlist import MmList, MmSlot
from kscand.machine import ProcessId


class WalkRing:
    """The former MmList's ring: a deque, dead slots dropped when the cursor reaches them."""

    def __init__(self) -> None:
        self.by_proc: dict[ProcessId, MmSlot] = {}
        self.ring: deque[MmSlot] = deque()
        self.nr_dead = 0
        self.cursor_slot: MmSlot | None = None

    def sync(self, procs: list[ProcessId], new_slot: Callable[[ProcessId], MmSlot]) -> None:
        alive = set(procs)
        for proc in [p for p in self.by_proc if p not in alive]:
            self.exit(proc)
        for proc in sorted(p for p in alive if p not in self.by_proc):
            slot = new_slot(proc)
            self.by_proc[proc] = slot
            self.ring.append(slot)

    def exit(self, proc: ProcessId) -> None:
        slot = self.by_proc.pop(proc)
        slot.dead = True
        self.nr_dead += 1
        if self.nr_dead > len(self.by_proc) + 64:
            self.ring = deque(s for s in self.ring if not s.dead)
            self.nr_dead = 0

    def cursor(self) -> MmSlot | None:
        while self.ring and self.ring[0].dead:
            self.ring.popleft()
            self.nr_dead -= 1
        self.cursor_slot = self.ring[0] if self.ring else None
        return self.cursor_slot

    def advance(self) -> None:
        if not self.ring:
            return
        if self.cursor_slot is not None and self.ring[0] is not self.cursor_slot:
            self.cursor_slot = None
            return
        self.cursor_slot = None
        slot = self.ring.popleft()
        if slot.dead:
            self.nr_dead -= 1
        else:
            self.ring.append(slot)


class Clock:
    def __init__(self) -> None:
        self.now_ns = 0


def scan(slot: MmSlot, clock: Clock, seed: int, pass_nr: int) -> bool:
    """A scan's effects, the same for both rings: the clock moves, the next due time is
    set; returns whether the process exited under the scanner."""
    rng = random.Random(f"{seed}:{pass_nr}:{slot.proc.pid}")
    clock.now_ns += rng.randrange(0, 40)
    if rng.random() < 0.08:
        return True
    slot.next_scan_ns = clock.now_ns + rng.randrange(1, 300)
    return False


def walk_pass(ring: WalkRing, clock: Clock, limit: int, seed: int, pass_nr: int
              ) -> tuple[list[int], list[int]]:
    scanned, skipped = [], []
    visited = 0
    for _ in range(len(ring.by_proc)):
        if visited >= limit:
            break
        slot = ring.cursor()
        if slot is None:
            break
        if slot.scale == 0:
            skipped.append(slot.proc.pid)
        elif clock.now_ns >= slot.next_scan_ns:
            scanned.append(slot.proc.pid)
            if scan(slot, clock, seed, pass_nr):
                ring.exit(slot.proc)
            visited += 1
        ring.advance()
    return scanned, sorted(skipped)


def due_pass(mm: MmList, clock: Clock, limit: int, seed: int, pass_nr: int
             ) -> tuple[list[int], list[int]]:
    scanned: list[int] = []
    mm.start_pass()
    while len(scanned) < limit:
        slot = mm.next_due(clock.now_ns)
        if slot is None:
            break
        scanned.append(slot.proc.pid)
        if scan(slot, clock, seed, pass_nr):
            mm.exit(slot.proc)
        mm.advance()
    return scanned, sorted(s.proc.pid for s in mm.end_pass())


def run_both(seed: int, nr_passes: int = 60) -> int:
    """Drive both rings through the same passes; returns the number of scans compared."""
    rng = random.Random(seed)
    walk, due = WalkRing(), MmList()
    walk_clock, due_clock = Clock(), Clock()
    next_pid = 1
    alive: list[ProcessId] = []
    nr_scans = 0

    def new_slot(clock: Clock) -> Callable[[ProcessId], MmSlot]:
        def make(proc: ProcessId) -> MmSlot:
            r = random.Random(f"{seed}:new:{proc.pid}")
            return MmSlot(proc, next_scan_ns=clock.now_ns + r.randrange(0, 200),
                          scale=0 if r.random() < 0.1 else 8)
        return make

    for pass_nr in range(nr_passes):
        alive = [p for p in alive if p in walk.by_proc]  # exits under the scanner
        assert set(alive) == set(due._by_proc)
        alive = [p for p in alive if rng.random() > 0.1]
        for _ in range(rng.randrange(0, 12)):
            alive.append(ProcessId(next_pid, next_pid))
            next_pid += 1
        rng.shuffle(alive)
        walk.sync(alive, new_slot(walk_clock))
        due.sync(alive, new_slot(due_clock))
        for proc in alive:
            if rng.random() < 0.05:  # the prctl analog, from a control request
                scale = rng.choice([0, 0, 3, 8])
                walk.by_proc[proc].scale = scale
                slot = due.get(proc)
                assert slot is not None
                due.set_scale(slot, scale)
        limit = rng.choice([1, 2, 3, 5, 1000])
        expected = walk_pass(walk, walk_clock, limit, seed, pass_nr)
        got = due_pass(due, due_clock, limit, seed, pass_nr)
        assert got == expected, f"seed {seed} pass {pass_nr} limit {limit}"
        assert walk_clock.now_ns == due_clock.now_ns
        cursor = walk.cursor()
        due_cursor = due.cursor()
        assert (cursor and cursor.proc) == (due_cursor and due_cursor.proc)
        nr_scans += len(expected[0])
        tick = rng.randrange(0, 120)
        walk_clock.now_ns += tick
        due_clock.now_ns += tick
    return nr_scans


def test_due_passes_scan_in_the_order_of_the_ring_walk() -> None:
    nr_scans = sum(run_both(seed) for seed in range(40))
    assert nr_scans > 2_000  # the cases did scan, with exits, limits and scale 0 among them


def test_entries_land_at_the_back_with_keys_renumbered_when_a_gap_runs_out() -> None:
    walk, due = WalkRing(), MmList()
    procs = [ProcessId(i, i) for i in range(1, 4)]

    def make(proc: ProcessId) -> MmSlot:
        return MmSlot(proc, next_scan_ns=10**9)

    walk.sync(procs, make)
    due.sync(procs, make)
    for _ in range(2):  # the cursor in the middle of the key order
        walk.cursor()
        walk.advance()
        due.cursor()
        due.advance()
    for i in range(4, 70):  # one at a time into the same gap: it runs out, keys are renumbered
        procs.append(ProcessId(i, i))
        walk.sync(procs, make)
        due.sync(procs, make)
    order_walk, order_due = [], []
    for _ in range(len(procs)):
        a, b = walk.cursor(), due.cursor()
        assert a is not None and b is not None
        order_walk.append(a.proc.pid)
        order_due.append(b.proc.pid)
        walk.advance()
        due.advance()
    assert order_due == order_walk
    assert order_due[:5] == [3, 1, 2, 4, 5]  # 1 and 2 were passed: the new ones follow them
    third = due.get(procs[2])
    assert third is not None and third.ring_key == 0  # renumbered from the front


def slots(n: int, next_scan_ns: int = 0) -> tuple[MmList, list[MmSlot]]:
    mm = MmList()
    procs = [ProcessId(100 + i, 1) for i in range(n)]
    mm.sync(procs, lambda proc: MmSlot(proc, next_scan_ns=next_scan_ns))
    out = [mm.get(p) for p in procs]
    assert all(s is not None for s in out)
    return mm, [s for s in out if s is not None]


def one_pass(mm: MmList, now_ns: int) -> list[MmSlot]:
    mm.start_pass()
    found = []
    while (slot := mm.next_due(now_ns)) is not None:
        found.append(slot)
        mm.advance()
    mm.end_pass()
    return found


def test_a_slot_whose_period_changes_is_rescheduled() -> None:
    mm, (a, b) = slots(2)
    mm.start_pass()
    assert mm.next_due(0) is a
    a.next_scan_ns = 100  # the engine's _adapt: the next due time after a scan
    mm.advance()
    assert mm.next_due(0) is b
    b.next_scan_ns = 1_000
    mm.advance()
    mm.end_pass()
    assert one_pass(mm, 50) == []
    assert one_pass(mm, 100) == [a]  # a is due again: a scan moves it further
    assert one_pass(mm, 500) == [a]  # no rescan set a new time: still due
    mm.start_pass()
    assert mm.next_due(600) is a
    a.next_scan_ns = 5_000  # a longer period
    mm.advance()
    mm.end_pass()
    assert one_pass(mm, 1_000) == [b]
    assert one_pass(mm, 4_999) == [b]
    assert one_pass(mm, 5_000) == [b, a]  # that pass stopped after a: b is at the front


def test_scale_zero_leaves_the_due_times_and_rejoins_them() -> None:
    mm, (a, b) = slots(2)
    mm.set_scale(a, 0)
    mm.start_pass()
    assert mm.next_due(0) is b
    mm.advance()
    assert mm.next_due(0) is None
    assert mm.end_pass() == [a]  # looked at and skipped: scan_skip_scale0
    mm.set_scale(a, 8)
    assert one_pass(mm, 0) == [a, b]  # a complete pass left the front where it was: a


def test_exited_processes_leave_the_due_structure() -> None:
    mm, listed = slots(3)
    a, b, c = listed
    mm.exit(b.proc)
    assert one_pass(mm, 0) == [a, c]
    mm.start_pass()
    assert mm.next_due(0) is a
    mm.exit(a.proc)  # exits under the scanner (the engine's _release), while due
    mm.advance()
    assert mm.next_due(0) is c
    mm.advance()
    mm.end_pass()
    assert one_pass(mm, 10**6) == [c]
    assert mm._due == [c.ring_key] or mm._due == []
    # Churn with due times far ahead: neither the ring nor the heap keeps the exited.
    for i in range(5_000):
        proc = ProcessId(10_000 + i, i)
        mm.sync([c.proc, proc], lambda p: MmSlot(p, next_scan_ns=10**12))
    mm.sync([c.proc])
    assert len(mm) == 1 and len(mm._ring) <= 66 and len(mm._heap) <= 2 + 64 + 1
    assert one_pass(mm, 10**13) == [c]
