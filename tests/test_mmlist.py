"""The mm list and its cursor."""

from __future__ import annotations

from kscand.core.mmlist import MmList
from kscand.machine import ProcessId


def cursor_proc(mm: MmList) -> ProcessId | None:
    slot = mm.cursor()
    return None if slot is None else slot.proc


def pids(n: int) -> list[ProcessId]:
    return [ProcessId(100 + i, 1) for i in range(n)]


def test_cursor_rotates_and_skips_exited_slots() -> None:
    mm = MmList()
    a, b, c = pids(3)
    mm.sync([a, b, c])
    assert cursor_proc(mm) == a
    mm.advance()
    assert cursor_proc(mm) == b
    mm.exit(b)  # exits while under the cursor: marked dead, unlinked
    assert b not in mm and mm.get(b) is None
    assert cursor_proc(mm) == c  # the dead slot is dropped when reached, never returned
    mm.advance()
    assert cursor_proc(mm) == a


def test_sync_enters_and_exits() -> None:
    mm = MmList()
    a, b, c = pids(3)
    assert mm.sync([a, b]) == ([a, b], [])
    assert mm.sync([b, c]) == ([c], [a])
    assert len(mm) == 2
    reused = ProcessId(b.pid, b.start_time + 5)  # pid reuse: a different process
    entered, exited = mm.sync([reused, c])
    assert entered == [reused] and exited == [b]


def test_ring_stays_bounded_under_churn() -> None:
    mm = MmList()
    keep = ProcessId(1, 1)
    mm.enter(keep)
    for i in range(10_000):
        proc = ProcessId(1000 + i, i)
        mm.enter(proc)
        mm.exit(proc)
    assert len(mm._ring) <= len(mm) + 65 + 1
    assert cursor_proc(mm) == keep


def test_per_page_state_costs_what_the_readme_says() -> None:
    """README "Memory per scanned GiB": history, seen and short are one byte per page,
    moves eight (two float32 times), each in 128 MiB chunks."""
    from kscand.core.mmlist import HISTORY_CHUNK_BYTES, MmSlot

    slot = MmSlot(ProcessId(1, 1))
    per_gib = (1 << 30) // HISTORY_CHUNK_BYTES
    assert HISTORY_CHUNK_BYTES == 128 << 20
    sizes = {
        "history": slot.history_chunk(0).nbytes * per_gib,
        "seen": slot.seen_chunk(0).nbytes * per_gib,
        "short": slot.short_chunk(0).nbytes * per_gib,
        "moves": slot.moves_chunk(0).nbytes * per_gib,
    }
    assert sizes == {"history": 256 << 10, "seen": 256 << 10, "short": 256 << 10,
                     "moves": 2 << 20}
    assert 64 * (sizes["history"] + sizes["seen"] + sizes["short"]) == 48 << 20
    assert 64 * sum(sizes.values()) == 176 << 20
