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

import functools

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
    p = np.minimum((k + 0.5) / (n + 1.0), 1.0 - 1e-9)
    return -np.log1p(-p) / max(interval_s, 1e-6)


def heat_bins(rates: F64Array) -> U8Array:
    """Heat bins of access rates: 1 at or under the floor, +HEAT_BINS_PER_OCTAVE per doubling."""
    ratio = np.maximum(rates, HEAT_RATE_FLOOR_PER_S) / HEAT_RATE_FLOOR_PER_S
    bins = 1 + np.floor(np.log2(ratio) * HEAT_BINS_PER_OCTAVE)
    out: U8Array = np.clip(bins, 1, NR_HEAT_BINS - 1).astype(np.uint8)
    return out


def rate_of_bin(heat: int) -> float:
    """The lowest rate (accesses/s) of a heat bin (0 for bin 0: no evidence)."""
    if heat <= 0:
        return 0.0
    out: float = HEAT_RATE_FLOOR_PER_S * 2.0 ** ((heat - 1) / HEAT_BINS_PER_OCTAVE)
    return out


_SIDE = HISTORY_BITS + 1
_NR_KN = _SIDE**2  # (k, n) pairs of one register: k accessed of n valid bits


def _kn_tables() -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """KN[seen * 256 + register] = k * 9 + n, for the long and the short register.

    The long register has min(seen - 1, 8) valid bits (its first bit covers
    everything since the page was populated), the short one min(seen, 8).
    """
    seen = np.arange(256)[:, None]
    reg = np.arange(256)[None, :]
    out = []
    for n in (np.clip(seen - 1, 0, HISTORY_BITS), np.minimum(seen, HISTORY_BITS)):
        k = _POPCOUNT[reg & ((1 << n) - 1)].astype(np.int64)
        out.append((k * _SIDE + n).astype(np.uint8).ravel())
    return out[0], out[1]


_KN_LONG, _KN_SHORT = _kn_tables()


# The bounds: the rates whose log-likelihood is within this of the best one (a
# profile-likelihood interval; 3.32 is the 99 % two-sided chi-square(1) / 2). An
# exchange that a noisy bound lets through costs two moves: at 95 % (1.92) equally
# warm pages traded places at 1.7x (flat-random) and 2x (zipf-0.6) the minimum
# traffic, at 99 % at 1.1x and 1.4x.
CONFIDENCE_LOGLIK = 3.32


@functools.lru_cache(maxsize=256)
def _heat_table_cached(interval_ms: int, reprobe_ms: int, bound: int) -> U8Array:
    return heat_table(interval_ms / 1e3, reprobe_ms / 1e3, bound)


def bin_rates_per_s() -> F64Array:
    """The middle rate of each heat bin 1..NR_HEAT_BINS-1 (geometric centre)."""
    bins = np.arange(1, NR_HEAT_BINS)
    return HEAT_RATE_FLOOR_PER_S * 2.0 ** ((bins - 0.5) / HEAT_BINS_PER_OCTAVE)


def heat_table(interval_s: float, reprobe_s: float, bound: int = 0) -> U8Array:
    """Heat bin of every (k_long, n_long, k_short, n_short): uint8 (_NR_KN ** 2,).

    The joint maximum-likelihood Poisson rate of both registers (k accessed of n
    looks at each scale, a look at interval t accessed with probability
    1 - exp(-r t)), over the bins' rates: the long scale ranks what the short one
    never sees, the short one what the long one always sees. No access at either
    scale is bin 0.

    bound -1 / +1: the lowest / highest bin whose log-likelihood is within
    CONFIDENCE_LOGLIK of the best (a profile-likelihood confidence bound). It is
    as wide as the evidence is weak: a register that saw every look bounds the
    rate from below only, one that saw few looks bounds it loosely.
    """
    kn = np.arange(_NR_KN)
    k, n = (kn // _SIDE).astype(np.float64), (kn % _SIDE).astype(np.float64)
    valid = k <= n
    rates = bin_rates_per_s()[None, :]

    def loglik(t_s: float) -> F64Array:
        if t_s <= 0:
            return np.zeros((_NR_KN, rates.shape[1]))
        hit = np.log(-np.expm1(-rates * t_s))
        return k[:, None] * hit - (n - k)[:, None] * rates * t_s

    long_ll = loglik(interval_s)
    short_ll = loglik(reprobe_s) if reprobe_s > 0 else np.zeros_like(long_ll)
    total = long_ll[:, None, :] + short_ll[None, :, :]  # (kn_long, kn_short, bins)
    best = (np.argmax(total, axis=2) + 1).astype(np.uint8)
    if bound:
        inside = total >= total.max(axis=2, keepdims=True) - CONFIDENCE_LOGLIK
        if bound < 0:
            best = (np.argmax(inside, axis=2) + 1).astype(np.uint8)
        else:
            last = inside.shape[2] - 1 - np.argmax(inside[:, :, ::-1], axis=2)
            best = (last + 1).astype(np.uint8)
    short_hit = (k > 0) & valid & (reprobe_s > 0)
    evidence = ((k > 0) & valid)[:, None] | short_hit[None, :]
    ok = valid[:, None] & valid[None, :]
    return np.where(evidence & ok, best, np.uint8(0)).astype(np.uint8).ravel()


def heat_of(
    long_hist: U8Array,
    short_hist: U8Array,
    nr_seen: U8Array,
    interval_s: float,
    reprobe_s: float,
    bound: int = 0,
) -> U8Array:
    """Heat bin of each page from its two shift registers.

    bound -1 / +1: a lower / upper confidence bound instead of the estimate
    (heat_table): exchange swaps a page in
    only when its lower bound beats the estimate of the page it replaces by the
    margin, so noise in the estimates of equally warm pages does not move them back
    and forth.

    nr_seen counts the scans of the page including this one. The first scan's
    long bit is not evidence (it covers everything since the page was
    populated), so the long register has nr_seen - 1 valid bits and the short
    one nr_seen (a re-probe follows a clear). Pages with no accessed valid bit
    are bin 0. All arrays (n,) uint8 -> uint8 (n,); one table lookup per page.
    """
    row = nr_seen.astype(np.uint16) << np.uint16(8)
    kn_long = _KN_LONG[row | long_hist].astype(np.uint16)
    kn_short = _KN_SHORT[row | short_hist]
    table = _heat_table_cached(
        max(1, round(interval_s * 1e3)), max(0, round(reprobe_s * 1e3)), bound
    )
    out: U8Array = table[kn_long * np.uint16(_NR_KN) + kn_short]
    return out


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
    cand_heat: U8Array,
    cand_pages: npt.NDArray[np.int64],
    resident_heat: U8Array,
    resident_pages: npt.NDArray[np.int64],
    margin_bins: int,
) -> int:
    """How many residents to demote for candidates, pairing hottest with coldest, by pages.

    cand_* sorted hottest first, resident_* coldest first: resident i is worth
    demoting when the candidate that would take its place (the one covering the
    same page position, so one THP candidate stands for 512 base residents) is at
    least margin_bins hotter. Returns the length of that prefix of residents.
    """
    if not cand_heat.size or not resident_heat.size:
        return 0
    cand_end = np.cumsum(cand_pages)
    res_start = np.cumsum(resident_pages) - resident_pages
    j = np.searchsorted(cand_end, res_start, side="right")
    inside = j < cand_heat.size
    gain = np.full(resident_heat.size, -1, dtype=np.int16)
    gain[inside] = cand_heat[j[inside]].astype(np.int16) - resident_heat[inside].astype(np.int16)
    worth = gain >= margin_bins
    return int(np.argmin(worth)) if not worth.all() else int(worth.size)
