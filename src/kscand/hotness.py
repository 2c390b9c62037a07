"""Hotness that ranks: a per-page access-rate estimate from Accessed-bit history.

An Accessed bit says "touched at least once since the last clear". Seen over
a known interval T, a page touched at a Poisson rate r is found accessed with
probability 1 - exp(-r T), so k accessed scans out of n give the estimate
r = -ln(1 - p) / T with p = (k + 1/2) / (n + 1) (the 1/2 keeps p off 0 and 1).

One interval cannot rank: with T = 2 s a page touched twice a second and one
touched a thousand times a second are both accessed in every scan. So each
page has two shift registers: the long one (one bit per scan, interval = the
process's scan period) and the short one (one bit per re-probe: a page found
accessed is tested again reprobe_delay_ms later, the Telescope-style short
look; a page not accessed in a scan gets a 0 there too). The estimate is the
larger of the two scales' (the short one only once it has seen an access).

The estimate is kept as a heat bin: HEAT_BINS_PER_OCTAVE bins per doubling of
the rate above HEAT_RATE_FLOOR_PER_S; bin 0 means "no evidence of access".
Per top-tier node, a histogram of the heat of the pages it holds and of the
slow-tier pages that would go there gives the threshold above which the pages
fit the node (MEMTIS's rule): promotion takes pages at or above it, exchange
demotes residents below it by a margin.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

NR_HEAT_BINS = 64
HEAT_BINS_PER_OCTAVE = 3
HEAT_RATE_FLOOR_PER_S = 1.0 / 128.0  # bin 1 holds everything accessed at most this often
HISTORY_BITS = 8

# Set bits of each uint8 value.
_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)

U8Array = npt.NDArray[np.uint8]
F64Array = npt.NDArray[np.float64]


def popcount8(values: U8Array) -> U8Array:
    """Set bits of each uint8. (n,) -> uint8 (n,)."""
    return _POPCOUNT[values]


def valid_mask(nr_valid: U8Array) -> U8Array:
    """The low nr_valid bits set (nr_valid 0..8). uint8 (n,) -> uint8 (n,)."""
    nbits = np.minimum(nr_valid, HISTORY_BITS).astype(np.uint16)
    return ((np.uint16(1) << nbits) - np.uint16(1)).astype(np.uint8)


def rate_per_s(nr_accessed: U8Array, nr_observed: U8Array, interval_s: float) -> F64Array:
    """Poisson rate estimate from k accessed of n observations over interval_s each."""
    k = nr_accessed.astype(np.float64)
    n = nr_observed.astype(np.float64)
    p = (k + 0.5) / (n + 1.0)
    return -np.log1p(-p) / max(interval_s, 1e-6)


def heat_bins(rates: F64Array) -> U8Array:
    """Heat bins of access rates: 1 at or under the floor, +HEAT_BINS_PER_OCTAVE per doubling."""
    ratio = np.maximum(rates, HEAT_RATE_FLOOR_PER_S) / HEAT_RATE_FLOOR_PER_S
    bins = 1 + np.floor(np.log2(ratio) * HEAT_BINS_PER_OCTAVE)
    return np.clip(bins, 1, NR_HEAT_BINS - 1).astype(np.uint8)


def rate_of_bin(heat: int) -> float:
    """The lowest rate (accesses/s) of a heat bin (0 for bin 0: no evidence)."""
    if heat <= 0:
        return 0.0
    return HEAT_RATE_FLOOR_PER_S * 2.0 ** ((heat - 1) / HEAT_BINS_PER_OCTAVE)


def heat_of(
    long_hist: U8Array,
    short_hist: U8Array,
    nr_seen: U8Array,
    interval_s: float,
    reprobe_s: float,
) -> U8Array:
    """Heat bin of each page from its two shift registers.

    nr_seen counts the scans of the page including this one. The first scan's
    long bit is not evidence (it covers everything since the page was
    populated), so the long register has nr_seen - 1 valid bits and the short
    one nr_seen (a re-probe follows a clear). Pages with no accessed valid bit
    are bin 0. All arrays (n,) uint8 -> uint8 (n,).
    """
    long_valid = np.maximum(nr_seen.astype(np.int16) - 1, 0).astype(np.uint8)
    k_long = popcount8(long_hist & valid_mask(long_valid))
    k_short = popcount8(short_hist & valid_mask(nr_seen)) if reprobe_s > 0 else None
    rate = rate_per_s(k_long, np.minimum(long_valid, HISTORY_BITS), interval_s)
    if k_short is not None:
        short = rate_per_s(k_short, np.minimum(nr_seen, HISTORY_BITS), reprobe_s)
        rate = np.where(k_short > 0, np.maximum(rate, short), rate)
        evidence = (k_long > 0) | (k_short > 0)
    else:
        evidence = k_long > 0
    return np.where(evidence, heat_bins(rate), np.uint8(0)).astype(np.uint8)


def heat_histogram(heat: U8Array, nr_pages: npt.NDArray[np.int64] | None) -> npt.NDArray[np.int64]:
    """Base pages per heat bin. uint8 (n,) -> int64 (NR_HEAT_BINS,)."""
    counts = np.bincount(heat, weights=nr_pages, minlength=NR_HEAT_BINS)
    return counts.astype(np.int64)


def threshold_bin(hist: npt.NDArray[np.int64], usable_pages: int) -> int:
    """The lowest heat bin >= 1 such that the pages at or above it fit usable_pages.

    hist holds the pages that want the node (its residents and the slow-tier
    pages that would go there). NR_HEAT_BINS when even the hottest bin does
    not fit (nothing qualifies); 1 when everything with evidence fits.
    """
    above = np.cumsum(hist[::-1])[::-1]  # above[b] = pages in bins >= b
    fits = np.flatnonzero(above[1:] <= max(usable_pages, 0))
    if not fits.size:
        return NR_HEAT_BINS
    return int(fits[0]) + 1


def exchange_pairs(
    cand_heat: U8Array, resident_heat: U8Array, margin_bins: int
) -> int:
    """How many residents to demote for candidates, pairing hottest with coldest.

    cand_heat sorted descending, resident_heat ascending: pair i is worth it
    while the candidate is at least margin_bins hotter than the resident.
    """
    n = min(cand_heat.size, resident_heat.size)
    if not n:
        return 0
    gain = cand_heat[:n].astype(np.int16) - resident_heat[:n].astype(np.int16)
    return int(np.count_nonzero(gain >= margin_bins))
