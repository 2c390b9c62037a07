"""The pages the simulated machine moved between the tiers: what every policy promoted.

Every policy's moves go through SimMachine.move_pages, so kscand, NUMA
balancing and DAMON are counted here by the same code, whatever counters each
keeps of its own (kscand's nr_kscand_migrated, NUMA balancing's
pgpromote_success, DAMOS's sz_applied). Like /proc/vmstat's pgpromote_success
and pgdemote_*, but for every mover. Base pages (a THP counts HPAGE_PMD_NR), per
process; a process's counts outlive it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kscand.machine import ProcessId


@dataclass
class TierMoves:
    """Pages moved from a slow-tier to a top-tier node (promoted) and back (demoted)."""

    promoted_pages: Counter[ProcessId] = field(default_factory=Counter)
    demoted_pages: Counter[ProcessId] = field(default_factory=Counter)

    def record(self, proc: ProcessId, old_nids: npt.NDArray[np.intp], new_nid: int,
               toptier: npt.NDArray[np.bool_]) -> None:
        """Pages of proc moved from old_nids to new_nid; toptier is indexed by nid + 1."""
        nr_from_top = int(np.count_nonzero(toptier[old_nids + 1]))
        if toptier[new_nid + 1]:
            self.promoted_pages[proc] += old_nids.shape[0] - nr_from_top
        else:
            self.demoted_pages[proc] += nr_from_top

    def promoted(self, proc: ProcessId | None = None) -> int:
        """Pages promoted, of proc or of every process."""
        return sum(self.promoted_pages.values()) if proc is None else self.promoted_pages[proc]

    def demoted(self, proc: ProcessId | None = None) -> int:
        """Pages demoted, of proc or of every process."""
        return sum(self.demoted_pages.values()) if proc is None else self.demoted_pages[proc]
