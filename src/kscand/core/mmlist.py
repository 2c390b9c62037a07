"""The list of address spaces to scan and the scan cursor (kscand_scan in the series).

Slots are keyed by process identity. The cursor is the front of a deque: the
slot being scanned, with its resume address. A process that exits is marked
dead and unlinked from the index at once; its slot leaves the deque the next
time the cursor reaches it, so a slot is never freed under the scanner.
"""

from __future__ import annotations

from collections import deque
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


class MmList:
    """Slots of every process being scanned, and the cursor over them."""

    def __init__(self) -> None:
        self._by_proc: dict[ProcessId, MmSlot] = {}
        self._ring: deque[MmSlot] = deque()
        self._nr_dead_in_ring = 0
        self._cursor_slot: MmSlot | None = None  # what cursor() last returned

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
        self._by_proc[proc] = slot
        self._ring.append(slot)
        return slot

    def exit(self, proc: ProcessId) -> MmSlot | None:
        """Remove a process (kscand_exit); safe while its slot is under the cursor."""
        slot = self._by_proc.pop(proc, None)
        if slot is None:
            return None
        slot.dead = True
        slot.history.clear()
        slot.seen.clear()
        slot.short.clear()
        slot.moves.clear()
        self._nr_dead_in_ring += 1
        # Keep the ring bounded under churn: compact it when dead slots dominate.
        if self._nr_dead_in_ring > len(self._by_proc) + 64:
            self._ring = deque(s for s in self._ring if not s.dead)
            self._nr_dead_in_ring = 0
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
        """
        alive = set(procs)
        exited = [proc for proc in self._by_proc if proc not in alive]
        for proc in exited:
            if on_exit is not None:
                on_exit(self._by_proc[proc])
            self.exit(proc)
        entered = [proc for proc in sorted(alive) if proc not in self._by_proc]
        for proc in entered:
            slot = new_slot(proc) if new_slot is not None else MmSlot(proc)
            self._by_proc[proc] = slot
            self._ring.append(slot)
        return entered, exited

    def cursor(self) -> MmSlot | None:
        """The slot to scan next, dropping dead slots the cursor reaches."""
        while self._ring and self._ring[0].dead:
            self._ring.popleft()
            self._nr_dead_in_ring -= 1
        self._cursor_slot = self._ring[0] if self._ring else None
        return self._cursor_slot

    def advance(self) -> None:
        """Move the cursor past the current slot (to the back of the ring).

        When that slot was released and a compaction took it out of the ring
        meanwhile, the front is already the next slot: it stays there, to be
        scanned next (khugepaged moves its cursor before freeing, to the same end).
        """
        if not self._ring:
            return
        if self._cursor_slot is not None and self._ring[0] is not self._cursor_slot:
            self._cursor_slot = None
            return
        self._cursor_slot = None
        slot = self._ring.popleft()
        if slot.dead:
            self._nr_dead_in_ring -= 1
        else:
            self._ring.append(slot)
