"""The list of address spaces to scan and the scan cursor (kscand_scan in the series).

Slots are keyed by process identity. The cursor is the front of a ring: the
slot being scanned, with its resume address. A process that exits is marked
dead and unlinked from the index at once; its slot leaves the ring the next
time the cursor reaches it, so a slot is never freed under the scanner.
A pass costs what is due, not what is listed: due times are kept in a heap and
the pass jumps from one due slot to the next in ring order.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.machine import PAGE_SHIFT, ProcessId

# Access history is kept per fixed, aligned chunk of virtual address space.
HISTORY_CHUNK_SHIFT = 27  # 128 MiB
HISTORY_CHUNK_BYTES = 1 << HISTORY_CHUNK_SHIFT
HISTORY_CHUNK_PAGES = HISTORY_CHUNK_BYTES >> PAGE_SHIFT


def _chunk(chunks: dict[int, npt.NDArray[np.uint8]], chunk_base: int) -> npt.NDArray[np.uint8]:
    """The per-page uint8 array of one history chunk, created zeroed on first use."""
    chunk = chunks.get(chunk_base)
    if chunk is None:
        chunk = np.zeros(HISTORY_CHUNK_PAGES, dtype=np.uint8)
        chunks[chunk_base] = chunk
    return chunk


@dataclass(eq=False)
class MmSlot:
    """Per-process scan state: resume address, access history, per-node accessed counts."""

    proc: ProcessId
    resume_vaddr: int = 0
    dead: bool = False
    full_scans: int = 0  # complete walks of the address space
    # Throttling (kscand.core.throttle): this process's own period and size, when
    # it is next due, and the useful slow-tier pages of its last two scans.
    scan_period_ms: float = 0.0
    scan_size_bytes: int = 0
    next_scan_ns: int = 0
    prev_useful: int = 0  # X: the previous scan's smoothed count
    useful: int = 0  # Y: smoothed, Y_old / 16 + this scan's
    useful_this_scan: int = 0  # accessed slow-tier pages found by the current visit
    scale: int = 8  # the prctl analog, 0..10; 0 = never scan
    # Migration-failure feedback, decayed every FAILURE_DECAY_EVERY migrations.
    migrate_succeeded: int = 0
    migrate_failed: int = 0
    target_nid: int | None = None  # the target-node heuristic's choice
    # Shift registers of Accessed bits, newest in bit 0: uint8 per base page,
    # one array per HISTORY_CHUNK_BYTES-aligned chunk that had eligible pages.
    history: dict[int, npt.NDArray[np.uint8]] = field(default_factory=dict)
    # Accessed base pages per node (index nid) seen in the current / last scan
    # visit: the target-node heuristic reads it.
    accessed_by_nid: npt.NDArray[np.int64] = field(
        default_factory=lambda: np.zeros(0, dtype=np.int64)
    )

    # Scans each page was seen in (saturating at 255).
    seen: dict[int, npt.NDArray[np.uint8]] = field(default_factory=dict)
    # Re-probe shift registers (kscand.core.hotness): one bit per scan, the page's
    # Accessed bit reprobe_delay_ms after the scan cleared it (0 when idle).
    short: dict[int, npt.NDArray[np.uint8]] = field(default_factory=dict)
    # The last two move times of each page (virtual or monotonic seconds,
    # -inf when never moved), only for chunks where a page moved: row 0 the
    # latest, row 1 the one before (the ping-pong guard reads them).
    moves: dict[int, npt.NDArray[np.float32]] = field(default_factory=dict)
    # A pass is one walk of the whole address space; the interval between the
    # starts of two passes is the interval between two scans of each page.
    pass_start_ns: int | None = None
    pass_interval_s: float = 0.0  # 0: not measured yet (the period stands in)
    useful_this_pass: int = 0  # accessed slow-tier pages found over the current pass
    # The heat histograms (kscand.core.placement) this process contributes to the
    # engine's totals, and the one its current pass is building.
    heat_contrib: dict[tuple[int, bool], npt.NDArray[np.int64]] = field(default_factory=dict)
    heat_cur: dict[tuple[int, bool], npt.NDArray[np.int64]] = field(default_factory=dict)
    # MmList's bookkeeping: the slot's place in the ring, its order of entry, the
    # next_scan_ns its due-heap entry stands for (None: none), whether it is due.
    ring_key: int = field(default=-1, repr=False)
    enter_seq: int = field(default=-1, repr=False)
    queued_ns: int | None = field(default=None, repr=False)
    in_due: bool = field(default=False, repr=False)

    def seen_chunk(self, chunk_base: int) -> npt.NDArray[np.uint8]:
        """The seen-count array of the chunk at chunk_base (created zeroed)."""
        return _chunk(self.seen, chunk_base)

    def short_chunk(self, chunk_base: int) -> npt.NDArray[np.uint8]:
        """The re-probe history array of the chunk at chunk_base (created zeroed)."""
        return _chunk(self.short, chunk_base)

    def moves_chunk(self, chunk_base: int) -> npt.NDArray[np.float32]:
        """The (2, pages) last-move times of the chunk at chunk_base (created -inf)."""
        chunk = self.moves.get(chunk_base)
        if chunk is None:
            chunk = np.full((2, HISTORY_CHUNK_PAGES), -np.inf, dtype=np.float32)
            self.moves[chunk_base] = chunk
        return chunk

    def begin_scan(self) -> None:
        """Start a scan visit: forget the previous visit's per-node accessed counts."""
        self.accessed_by_nid = np.zeros(0, dtype=np.int64)
        self.useful_this_scan = 0

    def note_accessed(
        self, nids: npt.NDArray[np.int32], nr_pages: npt.NDArray[np.int64] | None
    ) -> None:
        """Add accessed folios (their nids; sizes, None = base pages) to this visit's counts."""
        if not nids.size:
            return
        counts = np.bincount(nids, weights=nr_pages).astype(np.int64)
        if counts.size > self.accessed_by_nid.size:
            counts[: self.accessed_by_nid.size] += self.accessed_by_nid
            self.accessed_by_nid = counts
        else:
            self.accessed_by_nid[: counts.size] += counts

    def history_chunk(self, chunk_base: int) -> npt.NDArray[np.uint8]:
        """The history array of the chunk starting at chunk_base (created zeroed)."""
        return _chunk(self.history, chunk_base)


def note_moves(
    slot: MmSlot, vaddrs: npt.NDArray[np.uint64], nr_pages: npt.NDArray[np.int64],
    now_s: float, window_s: float,
) -> int:
    """Record that the folios at vaddrs moved at now_s; returns the base pages among
    them that moved more than twice within window_s (a ping-pong)."""
    nr_ping_pong = 0
    chunk_of = vaddrs >> np.uint64(HISTORY_CHUNK_SHIFT)
    for chunk in np.unique(chunk_of).tolist():
        mine = chunk_of == chunk
        chunk_base = int(chunk) << HISTORY_CHUNK_SHIFT
        offsets = ((vaddrs[mine] - np.uint64(chunk_base)) >> np.uint64(PAGE_SHIFT)).astype(np.intp)
        moves = slot.moves_chunk(chunk_base)
        ping = now_s - moves[1, offsets] <= window_s
        # A moved page starts its evidence afresh where it landed: it is not judged
        # again (exchanged back) on what it did before the move.
        for registers in (slot.seen, slot.history, slot.short):
            chunk_regs = registers.get(chunk_base)
            if chunk_regs is not None:
                chunk_regs[offsets] = 0
        nr_ping_pong += int(nr_pages[mine][ping].sum())
        moves[1, offsets] = moves[0, offsets]
        moves[0, offsets] = now_s
    return nr_ping_pong


RING_KEY_SPACING = 1 << 20  # room between ring keys for processes entering later


class MmList:
    """Slots of every process being scanned, the cursor over them, and when each is due.

    The ring is a circular order of slots, each with a ring key; the cursor is
    a key, its front the first slot at or after it (wrapping). Passing the
    cursor over a slot puts that slot at the back, so the circular order only
    changes when a process enters (just before the front: the back) or its dead
    slot leaves. Due times live in a heap (next_scan_ns); slots whose time has
    come move to a due set sorted by ring key, so a pass finds the next due slot
    in ring order without looking at the others: a heap pop and a bisect per slot
    due (the list inserts and deletes move pointers in C).
    """

    def __init__(self) -> None:
        self._by_proc: dict[ProcessId, MmSlot] = {}
        # What the last sync() was given, while nothing entered or exited since.
        self._synced: list[ProcessId] | None = None
        self._ring: list[int] = []  # ring keys, ascending, dead slots included
        self._at_key: dict[int, MmSlot] = {}
        self._cursor_key = 0
        self._nr_dead_in_ring = 0
        self._nr_entered = 0
        self._cursor_slot: MmSlot | None = None  # what cursor() or next_due() last returned
        self._heap: list[tuple[int, int, MmSlot]] = []  # (next_scan_ns, push order, slot)
        self._nr_pushed = 0
        self._due: list[int] = []  # ring keys of live slots due and not scanned, ascending
        self._scale0: dict[ProcessId, MmSlot] = {}  # never due, still looked at by a pass
        self._pass: _Pass | None = None

    def __len__(self) -> int:
        return len(self._by_proc)

    def __contains__(self, proc: object) -> bool:
        return proc in self._by_proc

    def __iter__(self) -> Iterator[MmSlot]:
        return iter(list(self._by_proc.values()))

    def get(self, proc: ProcessId) -> MmSlot | None:
        return self._by_proc.get(proc)

    def enter(self, proc: ProcessId) -> MmSlot:
        """Add a process (kscand_enter); it is scanned after the ones already listed."""
        slot = self._by_proc.get(proc)
        if slot is not None:
            return slot
        slot = MmSlot(proc)
        self._link([slot])
        return slot

    def exit(self, proc: ProcessId) -> MmSlot | None:
        """Remove a process (kscand_exit); safe while its slot is under the cursor."""
        slot = self._by_proc.pop(proc, None)
        if slot is None:
            return None
        self._synced = None
        slot.dead = True
        slot.history.clear()
        slot.seen.clear()
        slot.short.clear()
        slot.moves.clear()
        self._undue(slot)
        self._scale0.pop(proc, None)
        self._nr_dead_in_ring += 1
        # Keep the ring bounded under churn: compact it when dead slots dominate.
        if self._nr_dead_in_ring > len(self._by_proc) + 64:
            for key in [key for key in self._ring if self._at_key[key].dead]:
                del self._at_key[key]
            self._ring = [key for key in self._ring if key in self._at_key]
            self._nr_dead_in_ring = 0
        # The heap keeps an exited slot's entry until its time comes: bound it too.
        if len(self._heap) > 2 * len(self._by_proc) + 64:
            self._heap = [e for e in self._heap if not e[2].dead and e[2].queued_ns == e[0]]
            heapq.heapify(self._heap)
        return slot

    def sync(
        self,
        procs: Iterable[ProcessId],
        new_slot: Callable[[ProcessId], MmSlot] | None = None,
        on_exit: Callable[[MmSlot], None] | None = None,
    ) -> tuple[list[ProcessId], list[ProcessId]]:
        """Enter new processes and exit vanished ones; returns (entered, exited).

        new_slot, when given, builds the slot of a new process (initial state);
        on_exit sees each vanished process's slot before it is released.
        Exited in the order they entered, entered in ProcessId order; only the
        set differences are walked, not every process. When procs is the list the
        last sync was given, with the same ProcessId objects (the simulator keeps
        them), and nothing entered or exited since, nothing changed: a list
        comparison says so (identity, in C) without hashing each ProcessId (a
        Python-level __hash__, ~0.1 ms per 1,000).
        """
        procs = list(procs)
        if procs == self._synced:
            return [], []
        alive = set(procs)
        known = self._by_proc.keys()
        gone = known - alive
        exited = sorted(gone, key=lambda proc: self._by_proc[proc].enter_seq) if gone else []
        for proc in exited:
            if on_exit is not None:
                on_exit(self._by_proc[proc])
            self.exit(proc)
        new = alive - known
        entered = sorted(new) if new else []
        if entered:
            self._link([new_slot(p) if new_slot is not None else MmSlot(p) for p in entered])
        self._synced = procs
        return entered, exited

    # --- the ring -----------------------------------------------------------------------

    def _front_index(self) -> int:
        """Index in _ring of the front (the first key at or after the cursor, wrapping)."""
        idx = bisect.bisect_left(self._ring, self._cursor_key)
        return idx if idx < len(self._ring) else 0

    def _link(self, slots: list[MmSlot]) -> None:
        """Put new slots at the back of the ring (just before the front), in order."""
        self._synced = None
        for slot in slots:
            slot.enter_seq = self._nr_entered
            self._nr_entered += 1
            self._by_proc[slot.proc] = slot
        ring, m = self._ring, len(slots)
        idx = self._front_index() if ring else 0
        if idx > 0 and ring[idx] - ring[idx - 1] <= m:
            self._renumber()
            ring, idx = self._ring, 0
        if ring:  # the cursor on the front's key: the new keys go below it, at the back
            self._cursor_key = ring[idx]
        if idx == 0:  # the back is the end of the key order
            base = ring[-1] + RING_KEY_SPACING if ring else 0
            keys = [base + i * RING_KEY_SPACING for i in range(m)]
            ring.extend(keys)
        else:
            back, gap = ring[idx - 1], ring[idx] - ring[idx - 1]
            keys = [back + gap * (i + 1) // (m + 1) for i in range(m)]
            ring[idx:idx] = keys
        for key, slot in zip(keys, slots, strict=True):
            slot.ring_key = key
            self._at_key[key] = slot
            self.reschedule(slot)

    def _renumber(self) -> None:
        """New keys in ring order from the front, RING_KEY_SPACING apart (rare: a gap ran out)."""
        idx = self._front_index()
        order = [self._at_key[key] for key in self._ring[idx:] + self._ring[:idx]]
        self._ring = [i * RING_KEY_SPACING for i in range(len(order))]
        self._at_key = dict(zip(self._ring, order, strict=True))
        for key, slot in self._at_key.items():
            slot.ring_key = key
        self._cursor_key = 0
        self._due = sorted(slot.ring_key for slot in order if slot.in_due)

    def cursor(self) -> MmSlot | None:
        """The slot to scan next, dropping dead slots the cursor reaches."""
        self._cursor_slot = None
        while self._ring:
            idx = self._front_index()
            slot = self._at_key[self._ring[idx]]
            if not slot.dead:
                self._cursor_slot = slot
                break
            self._drop_key(idx)
        return self._cursor_slot

    def _drop_key(self, idx: int) -> None:
        del self._at_key[self._ring.pop(idx)]
        self._nr_dead_in_ring -= 1

    def advance(self) -> None:
        """Move the cursor past the current slot (to the back of the ring).

        When that slot was released and a compaction took it out of the ring
        meanwhile, the front is already the next slot: it stays there, to be
        scanned next (khugepaged moves its cursor before freeing, to the same end).
        The slot passed is rescheduled at its (new) next_scan_ns.
        """
        if not self._ring:
            return
        slot = self._cursor_slot
        self._cursor_slot = None
        if slot is None:
            slot = self._at_key[self._ring[self._front_index()]]
        self._cursor_key = slot.ring_key + 1
        if self._pass is not None:
            self._pass.pos = self._pass.offset(slot.ring_key) + 1
        if slot.dead:
            if self._at_key.get(slot.ring_key) is slot:
                self._drop_key(bisect.bisect_left(self._ring, slot.ring_key))
            return
        self._undue(slot)
        self.reschedule(slot)

    # --- due times ----------------------------------------------------------------------

    def reschedule(self, slot: MmSlot) -> None:
        """Queue a live slot at its next_scan_ns (after it changed); scale 0 is never due."""
        if slot.dead or slot.in_due:
            return
        if slot.scale == 0:
            self._scale0[slot.proc] = slot
            slot.queued_ns = None
            return
        self._scale0.pop(slot.proc, None)
        if slot.queued_ns == slot.next_scan_ns:
            return
        slot.queued_ns = slot.next_scan_ns
        heapq.heappush(self._heap, (slot.next_scan_ns, self._nr_pushed, slot))
        self._nr_pushed += 1

    def set_scale(self, slot: MmSlot, scale: int) -> None:
        """Change a slot's scale: to 0 it leaves the due times, from 0 it rejoins them."""
        slot.scale = scale
        if scale == 0:
            self._undue(slot)
        self.reschedule(slot)

    def _undue(self, slot: MmSlot) -> None:
        if slot.in_due:
            slot.in_due = False
            del self._due[bisect.bisect_left(self._due, slot.ring_key)]

    def _pull_due(self, now_ns: int) -> None:
        """Move the slots whose next_scan_ns has come from the heap to the due set."""
        heap = self._heap
        while heap and heap[0][0] <= now_ns:
            due_ns, _, slot = heapq.heappop(heap)
            if slot.dead or slot.scale == 0 or slot.queued_ns != due_ns:
                continue  # stale: rescheduled, exited or scale 0 since
            slot.queued_ns = None
            slot.in_due = True
            bisect.insort(self._due, slot.ring_key)

    def start_pass(self) -> None:
        """Begin a pass: one look at every listed slot, in ring order from the front."""
        self._pass = None
        if self.cursor() is None:
            return
        self._pass = _Pass(self._ring[self._front_index()], self._ring[-1] - self._ring[0] + 1)

    def next_due(self, now_ns: int) -> MmSlot | None:
        """The next slot due at now_ns that this pass has not passed, in ring order; the
        cursor moves to it (the slots before it are passed). None: the pass is complete."""
        walk = self._pass
        if walk is None:
            return None
        self._pull_due(now_ns)
        due = self._due
        idx = bisect.bisect_left(due, walk.origin + walk.pos)
        if idx == len(due):  # wrapped: keys below the origin
            idx = bisect.bisect_left(due, walk.origin + walk.pos - walk.span)
            if idx == len(due) or due[idx] >= walk.origin:
                walk.complete = True
                return None
        key = due[idx]
        self._cursor_key = key
        self._cursor_slot = self._at_key[key]
        return self._cursor_slot

    def end_pass(self) -> list[MmSlot]:
        """End the pass; returns the scale-0 slots it looked at (and skipped).

        A complete pass went once around: the cursor is back at its front.
        """
        walk, self._pass = self._pass, None
        self._cursor_slot = None
        if walk is None:
            return []
        if walk.complete:
            self._cursor_key = walk.origin
            return list(self._scale0.values())
        return [s for s in self._scale0.values() if walk.offset(s.ring_key) < walk.pos]


@dataclass
class _Pass:
    """A pass in progress: ring keys unrolled from its first slot (origin), span apart."""

    origin: int
    span: int
    pos: int = 0  # offsets below pos were passed
    complete: bool = False

    def offset(self, key: int) -> int:
        return (key - self.origin) % self.span
