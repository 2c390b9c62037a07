"""MmList: the slot under the cursor exits and that exit compacts the ring.

The engine scans cursor(), then calls advance(). If the scanned slot's exit
compacts the ring, the dead slot must still be the one advance() moves past
(khugepaged moves its cursor before freeing the slot, mm/khugepaged.c
collect_mm_slot()); otherwise the next live slot is rotated to the back
without being scanned.
"""

from __future__ import annotations

from kscand.core.mmlist import MmList
from kscand.machine import ProcessId

P = [ProcessId(1000 + i, i + 1) for i in range(100)]


def test_exit_of_the_cursor_slot_that_compacts_keeps_the_next_slot_next() -> None:
    mm = MmList()
    mm.sync(P)
    for _ in range(10):  # the cursor reaches P[10]
        mm.advance()
    cursor = mm.cursor()
    assert cursor is not None and cursor.proc == P[10]
    alive = set(P) - set(P[12:94])  # 82 exits elsewhere: 82 dead, 18 live, no compaction yet
    mm.sync(alive)
    assert mm.cursor() is cursor
    # P[10] exits while being scanned (the engine's _release): this exit compacts the ring.
    mm.exit(P[10])
    mm.advance()  # the engine moves past the slot it scanned
    nxt = mm.cursor()
    assert nxt is not None and nxt.proc == P[11]  # not P[94]: P[11] was never scanned
    order = []
    for _ in range(len(mm)):
        slot = mm.cursor()
        assert slot is not None
        order.append(slot.proc)
        mm.advance()
    assert order == [P[11], *P[94:], *P[:10]]  # every live slot once, in ring order


def test_exit_of_the_cursor_slot_without_compaction() -> None:
    mm = MmList()
    mm.sync(P[:5])
    mm.advance()
    mm.exit(P[1])
    mm.advance()
    slot = mm.cursor()
    assert slot is not None and slot.proc == P[2]
