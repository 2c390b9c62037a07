"""The gates a slow-tier folio passes before it may be queued for promotion, beside
its heat: the re-probe's evidence, enough consecutive accessed scans, and the
ping-pong guard. Pure functions of a process's per-page registers (kscand.core.mmlist).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kscand.core.hotness import valid_mask
from kscand.core.mmlist import MmSlot
from kscand.core.scanplan import hot_mask
from kscand.machine import BoolArray

PING_PONG_WINDOW_S = 60.0  # a page moved more than twice within this is a ping-pong
# A folio found accessed in each of its last this many scans, each over a whole scan
# interval, has the evidence promote_on_reprobe asks for though no re-probe saw it: a
# page touched about once a second is found by a 100 ms re-probe one time in ten, and
# waited ten passes (a recorded redis, whose replayed rates are at most 1/s, reached 90 %
# of the oracle at 12.5 s, at 7.0 s with this). Measured at 35f6df7+: many-small 71.3 ->
# 74.8 % acc-weighted (seed 7: 70.3 -> 75.0), moving-hotset 71.2 -> 72.6 %, redis-recorded
# 37.2 -> 40.8 %, no scenario lower; at 4, many-small fell to 64.7 %.
REPEATED_SCANS = 3

Offsets = npt.NDArray[np.intp]


def short_evidence(slot: MmSlot, chunk_base: int, offsets: Offsets) -> BoolArray:
    """Folios a re-probe found accessed (within the re-probe delay of a clear), or found
    accessed in each of their last REPEATED_SCANS whole scan intervals.

    promote_on_reprobe: a scan period of seconds cannot tell a page touched every
    10 s from one touched 10 times a second, and promoting the former into free room
    costs two moves when exchange gives the room back, then pins it (the ping-pong
    guard) if it turns hot: on moving-hotset 83 % of what the scan's evidence
    promoted was cold, 2.5 M candidates were pinned, and the top tier's share fell
    from 93 % to 63 % as the hot set moved; with the re-probe's evidence, 71 %
    acc-weighted at a quarter of the moves.
    """
    seen = slot.seen_chunk(chunk_base)[offsets]
    short = slot.short_chunk(chunk_base)[offsets]
    out: BoolArray = (short & valid_mask(seen)) != 0
    if REPEATED_SCANS:
        # The first scan's bit covers everything since the page was populated.
        history = slot.history_chunk(chunk_base)[offsets]
        out |= hot_mask(history, REPEATED_SCANS) & (seen > REPEATED_SCANS)
    return out


def too_early(
    slot: MmSlot, chunk_base: int, offsets: Offsets, young_scans: int
) -> BoolArray | None:
    """Folios not yet found accessed in young_scans consecutive scans (None: no such
    rule). A re-probe does not count: on DAMON it reads the same regions again."""
    if young_scans <= 1:
        return None
    history = slot.history_chunk(chunk_base)[offsets]
    return ~hot_mask(history, young_scans)


def pinned(slot: MmSlot, chunk_base: int, offsets: Offsets, now_s: float) -> BoolArray | None:
    """Folios moved twice in the last PING_PONG_WINDOW_S: a third move would ping-pong."""
    moves = slot.moves.get(chunk_base)
    if moves is None:
        return None
    return np.asarray(now_s - moves[1, offsets] < PING_PONG_WINDOW_S)
