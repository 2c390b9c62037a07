"""`kscand record`: a live process's page accesses, interval by interval, as a trace file.

Each pass walks the process's VMAs with the engine's filters (plan_scan's VMA
filter, page_skip_codes' page filter: what the scanner would test) and
test-and-clears the Accessed bit of every eligible folio through the Machine. The
first pass only clears (the baseline); pass k (k = 1..N) writes one record per
base page found accessed since pass k - 1. A THP is tested as one folio (its head,
as the kernel keeps one Accessed bit for it); an accessed THP is written as one
record per base page of the folio, so the replay sees the folio's whole size.

The file is the simulator's trace format (kscand.sim.tracefile):
`time_s,pid,address,count`, count 1, after '#' header lines. time_s is the middle
of the interval the access was found in (interval k covers [(k-1)·I, k·I) after
the baseline): replayed with window_s = I, interval k is window k - 1 whatever
the decimal rounding (trace_from_bins.py stamps its bins the same way).

Addresses (AddressMode): `compact` (the default) lays the process's 2 MiB-aligned
chunks that hold a tested page end to end in the order they first appear (the
baseline's in ascending address order), keeping each page's offset in its chunk
(THP alignment); '# map COMPACT VADDR BYTES' lines name each run of chunks before
the first record in it. A live process's mappings lie terabytes apart (heap,
mmap area, stack): `vaddr` keeps them, but its replay would need a VMA as large
as that span, and a compact trace needs one of a few MiB per chunk touched.

Records are written interval by interval (bounded memory) and flushed. A process
that exits (or whose pid is reused) ends the recording: the interval in progress
is dropped, the file holds every whole interval before it.
"""

from __future__ import annotations

import enum
import gzip
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kscand.core.filters import NR_PAGE_SKIP, folio_sizes, page_skip_codes
from kscand.core.scanplan import plan_scan
from kscand.core.stats import PageSkip
from kscand.errors import AccessUnknown, ConfigError, ProcessGone
from kscand.machine import PAGE_SHIFT, PMD_SHIFT, Machine, ProcessId, U64Array

RECORD_COLUMNS = "time_s,pid,address,count"
WHOLE_PROCESS_BYTES = 1 << 40  # one plan covers every VMA
CHUNK_SHIFT = PMD_SHIFT  # the compact layout's unit: 2 MiB, so a THP stays aligned
_CHUNK_MASK = np.uint64((1 << CHUNK_SHIFT) - 1)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


class AddressMode(enum.StrEnum):
    """How a record's address relates to the page's virtual address."""

    COMPACT = "compact"  # chunks end to end in order of appearance (replayable)
    VADDR = "vaddr"  # the virtual address itself


class RecordEnd(enum.StrEnum):
    """Why a recording ended."""

    DONE = "done"  # every interval recorded
    GONE = "process_gone"  # the process exited or its pid now names another one
    INTERRUPTED = "interrupted"  # SIGINT


def escape_text(value: str) -> str:
    """value on one printable line: a backslash doubled, a control or non-printable
    character as Python writes it in a string literal (\\n, \\x1b, \\u200b)."""
    return "".join(
        "\\\\" if c == "\\" else c if c.isprintable() else repr(c)[1:-1] for c in value
    )


@dataclass(frozen=True)
class RecordHeader:
    """What the header names: the kernel, the source, the interval, the process."""

    kernel_release: str
    access_source: str
    interval_s: float
    duration_s: float
    pid: int
    comm: str
    page_size: int
    start_utc: str  # ISO 8601, when the baseline pass started
    addresses: AddressMode

    def lines(self) -> list[str]:
        layout = ("compact: 2 MiB chunks end to end in order of appearance, "
                  "'# map COMPACT VADDR BYTES' names each run"
                  if self.addresses is AddressMode.COMPACT else "vaddr: virtual addresses")
        return [
            "# kscand record: the pages found accessed in each interval, one record per "
            "base page",
            f"# kernel_release: {escape_text(self.kernel_release)}",
            f"# access_source: {escape_text(self.access_source)}",
            f"# interval_s: {self.interval_s:g}",
            f"# duration_s: {self.duration_s:g}",
            f"# pid: {self.pid}",
            f"# comm: {escape_text(self.comm)}",
            f"# page_size: {self.page_size}",
            f"# start_utc: {escape_text(self.start_utc)}",
            f"# addresses: {layout}",
            "# time_s: the middle of the interval (replay with window_s = interval_s)",
            RECORD_COLUMNS,
        ]


class CompactLayout:
    """vaddr -> compact address: each 2 MiB chunk gets the next free compact chunk the
    first time one of its pages is tested; the offset in the chunk is kept."""

    def __init__(self) -> None:
        self.chunks = np.zeros(0, dtype=np.uint64)  # sorted vaddr chunk numbers
        self.slots = np.zeros(0, dtype=np.uint64)  # the compact chunk of each
        self.nr_slots = 0

    def assign(self, vaddr: U64Array) -> list[tuple[int, int, int]]:
        """Give the chunks of vaddr not seen before the next compact chunks (ascending);
        the new runs as (compact address, vaddr, bytes)."""
        chunk = np.unique(vaddr >> np.uint64(CHUNK_SHIFT))
        new = chunk[~self._known(chunk)]
        if not new.size:
            return []
        slots = self.nr_slots + np.arange(new.size, dtype=np.uint64)
        self.nr_slots += int(new.size)
        chunks = np.concatenate((self.chunks, new))
        order = np.argsort(chunks, kind="stable")
        self.chunks, self.slots = chunks[order], np.concatenate((self.slots, slots))[order]
        breaks = np.flatnonzero(np.diff(new) != 1) + 1
        starts = np.concatenate(([0], breaks))
        lengths = np.diff(np.concatenate((starts, [new.size])))
        return [(int(slots[a]) << CHUNK_SHIFT, int(new[a]) << CHUNK_SHIFT, int(n) << CHUNK_SHIFT)
                for a, n in zip(starts.tolist(), lengths.tolist(), strict=True)]

    def _known(self, chunk: U64Array) -> npt.NDArray[np.bool_]:
        if not self.chunks.size:
            return np.zeros(chunk.shape[0], dtype=np.bool_)
        pos = np.minimum(np.searchsorted(self.chunks, chunk), self.chunks.size - 1)
        known: npt.NDArray[np.bool_] = self.chunks[pos] == chunk
        return known

    def translate(self, vaddr: U64Array) -> U64Array:
        """The compact address of each vaddr (every chunk assigned before)."""
        chunk = vaddr >> np.uint64(CHUNK_SHIFT)
        slot = self.slots[np.searchsorted(self.chunks, chunk)]
        out: U64Array = (slot << np.uint64(CHUNK_SHIFT)) | (vaddr & _CHUNK_MASK)
        return out


def expand_folios(heads: U64Array, nr_pages: npt.NDArray[np.int64]) -> U64Array:
    """The base pages of folios: head vaddrs uint64 (n,), sizes int64 (n,) -> uint64
    (sum of sizes,), each folio's pages ascending from its head."""
    total = int(nr_pages.sum())
    if total == heads.shape[0]:
        return heads
    first = np.cumsum(nr_pages) - nr_pages
    offset = np.arange(total, dtype=np.int64) - np.repeat(first, nr_pages)
    out: U64Array = np.repeat(heads, nr_pages) + (offset.astype(np.uint64)
                                                    << np.uint64(PAGE_SHIFT))
    return out


def hex_column(values: U64Array) -> npt.NDArray[np.uint8]:
    """'0x' and lowercase hex digits, zero-padded to the widest: uint8 (n, width)."""
    widest = int(values.max()) if values.size else 0
    digits = max(1, (widest.bit_length() + 3) // 4)
    shifts = np.arange(digits - 1, -1, -1, dtype=np.uint64) * np.uint64(4)
    nibbles = (values[:, None] >> shifts[None, :]) & np.uint64(0xF)
    out = np.empty((values.shape[0], digits + 2), dtype=np.uint8)
    out[:, 0], out[:, 1] = ord("0"), ord("x")
    out[:, 2:] = _HEX[nibbles.astype(np.intp)]
    return out


def format_records(t_s: float, pid: int, address: U64Array) -> bytes:
    """One `time_s,pid,address,1` line per address (vectorized: one byte matrix)."""
    if not address.size:
        return b""
    prefix = np.frombuffer(f"{t_s:.6f},{pid},".encode(), dtype=np.uint8)
    suffix = np.frombuffer(b",1\n", dtype=np.uint8)
    n = address.shape[0]
    rows = np.hstack((np.broadcast_to(prefix, (n, prefix.size)), hex_column(address),
                      np.broadcast_to(suffix, (n, suffix.size))))
    return rows.tobytes()


ACCESS_UNKNOWN = "access_unknown"  # pages the source had nothing new on (DAMON)


@dataclass
class PassResult:
    """One pass: the base pages found accessed, what was tested and skipped."""

    accessed: U64Array  # vaddrs of the accessed base pages, ascending
    tested_vaddr: U64Array  # the folios tested (heads)
    tested_folios: int
    page_skips: Counter[str]  # PageSkip counter -> pages
    vma_skips: Counter[str]  # VmaSkip value -> VMAs


def scan_pass(machine: Machine, proc: ProcessId) -> PassResult:
    """Test and clear the Accessed bits of proc's eligible folios, VMA by VMA."""
    plan = plan_scan(machine.vmas(proc), 0, WHOLE_PROCESS_BYTES)
    accessed: list[U64Array] = []
    tested: list[U64Array] = []
    per_code = np.zeros(NR_PAGE_SKIP, dtype=np.int64)
    nr_unknown = 0
    for start, end in plan.ranges:
        batch = machine.read_range(proc, start, end)
        codes = page_skip_codes(batch.flags)
        per_code += np.bincount(codes, minlength=NR_PAGE_SKIP)
        eligible = np.flatnonzero(codes <= PageSkip.ELIGIBLE_THP)
        if not eligible.size:
            continue
        folios = batch.take(eligible)
        sizes = folio_sizes(batch.flags)[eligible]
        try:
            young = machine.test_and_clear_young(proc, folios)
        except AccessUnknown:
            # DAMON with no snapshot since the last pass: no observation, no record
            nr_unknown += int(sizes.sum())
            continue
        tested.append(folios.vaddr)
        accessed.append(expand_folios(folios.vaddr[young], sizes[young]))
    skips: Counter[str] = Counter({
        PageSkip(code).counter: int(per_code[code])
        for code in range(PageSkip.NOT_PRESENT, NR_PAGE_SKIP) if per_code[code]})
    if nr_unknown:
        skips[ACCESS_UNKNOWN] = nr_unknown
    empty = np.zeros(0, dtype=np.uint64)
    tested_vaddr = np.concatenate(tested) if tested else empty
    return PassResult(np.concatenate(accessed) if accessed else empty, tested_vaddr,
                      int(tested_vaddr.size), skips,
                      Counter(reason.value for reason in plan.skipped))


@dataclass
class RecordSummary:
    """What a recording wrote and why it ended."""

    planned_intervals: int
    intervals: int = 0  # whole intervals written (the baseline not counted)
    records: int = 0
    ended: RecordEnd = RecordEnd.DONE
    late_intervals: int = 0  # passes that started after their interval's end
    passes: int = 0  # passes run to their end (the baseline included)
    longest_pass_s: float = 0.0
    lowest_address: int | None = None
    highest_address: int | None = None
    page_skips: Counter[str] = field(default_factory=Counter)  # summed over the passes
    vma_skips: Counter[str] = field(default_factory=Counter)

    @property
    def span_bytes(self) -> int:
        """From the lowest recorded page to the end of the highest (0: no record)."""
        if self.lowest_address is None or self.highest_address is None:
            return 0
        return self.highest_address - self.lowest_address + (1 << PAGE_SHIFT)

    def trailer(self) -> str:
        counters = sorted((self.page_skips + self.vma_skips).items())
        skips = " ".join(f"{name}={n}" for name, n in counters) or "none"
        return (f"# end: {self.ended.value}, {self.intervals} of {self.planned_intervals} "
                f"intervals, {self.records} records, {self.late_intervals} late; skipped over "
                f"{self.passes} passes: {skips}\n")


class TraceOutput:
    """The trace file being written: plain text, or gzip when the name ends in .gz."""

    def __init__(self, path: Path) -> None:
        if path.is_dir():
            raise ConfigError(f"--out {path}: is a directory; name a file in it")
        try:
            raw = open(path, "wb")  # noqa: SIM115 (closed by close())
        except OSError as err:
            raise ConfigError(f"--out {path}: cannot write: {err.strerror or err}") from err
        self.path = path
        self.raw = raw
        self.binary: io.BufferedIOBase = (
            gzip.GzipFile(fileobj=raw, mode="wb") if path.name.endswith(".gz") else raw)

    def write(self, data: bytes) -> None:
        try:
            self.binary.write(data)
        except OSError as err:
            raise ConfigError(f"--out {self.path}: cannot write: {err.strerror or err}") from err

    def write_lines(self, lines: list[str]) -> None:
        self.write("".join(f"{line}\n" for line in lines).encode())

    def flush(self) -> None:
        """Everything written so far on disk (a gzip stream: up to a sync point)."""
        try:
            self.binary.flush()
            self.raw.flush()
        except OSError as err:
            raise ConfigError(f"--out {self.path}: cannot write: {err.strerror or err}") from err

    def close(self) -> None:
        try:
            if self.binary is not self.raw:
                self.binary.close()
        finally:
            self.raw.close()


def _sleep_until(machine: Machine, deadline_ns: int) -> bool:
    """Sleep to deadline_ns (a clock's sleep may return early); False when it was past."""
    clock = machine.clock
    if clock.now_ns() > deadline_ns:
        return False
    while (left := deadline_ns - clock.now_ns()) > 0:
        clock.sleep_ns(left)
    return True


def _map_lines(layout: CompactLayout | None, result: PassResult) -> list[str]:
    """The '# map' lines of the chunks this pass saw first (none in vaddr mode)."""
    if layout is None:
        return []
    seen = np.concatenate((result.tested_vaddr, result.accessed))
    return [f"# map {c:#x} {v:#x} {n:#x}" for c, v, n in layout.assign(seen)]


def _interval_bytes(
    layout: CompactLayout | None, result: PassResult, index: int, header: RecordHeader,
    pass_start_s: float, pass_s: float,
) -> tuple[bytes, U64Array]:
    """Interval index's text (its map lines, a comment, the records) and its addresses."""
    lines = _map_lines(layout, result)
    address = result.accessed if layout is None else layout.translate(result.accessed)
    lines.append(f"# interval {index}: pass at {pass_start_s:.3f} s took {pass_s * 1e3:.1f} ms, "
                 f"{result.tested_folios} folios tested, {address.size} pages accessed")
    body = format_records((index - 0.5) * header.interval_s, header.pid, address)
    return "".join(f"{line}\n" for line in lines).encode() + body, address


def _count(summary: RecordSummary, address: U64Array) -> None:
    summary.intervals += 1
    summary.records += int(address.size)
    if not address.size:
        return
    low, high = int(address.min()), int(address.max())
    if summary.lowest_address is None or low < summary.lowest_address:
        summary.lowest_address = low
    if summary.highest_address is None or high > summary.highest_address:
        summary.highest_address = high


def record_process(
    machine: Machine, proc: ProcessId, out: TraceOutput, header: RecordHeader,
    nr_intervals: int,
) -> RecordSummary:
    """Record nr_intervals intervals of header.interval_s after a baseline pass into out
    (the header first, the trailer last); returns what was written. Stops early, the file
    whole up to the last interval, when proc exits or on KeyboardInterrupt."""
    summary = RecordSummary(planned_intervals=nr_intervals)
    layout = CompactLayout() if header.addresses is AddressMode.COMPACT else None
    interval_ns = round(header.interval_s * 1e9)
    out.write_lines(header.lines())
    out.flush()
    clock = machine.clock
    start_ns = clock.now_ns()
    try:
        for index in range(nr_intervals + 1):
            if index and not _sleep_until(machine, start_ns + index * interval_ns):
                summary.late_intervals += 1
            pass_start_ns = clock.now_ns()
            machine.processes()  # a new step for the access source (DAMON's wait budget)
            result = scan_pass(machine, proc)
            if not machine.is_alive(proc):  # an exiting process's pagemap reads empty
                raise ProcessGone(f"process {proc} exited")
            pass_s = (clock.now_ns() - pass_start_ns) / 1e9
            summary.passes += 1
            summary.longest_pass_s = max(summary.longest_pass_s, pass_s)
            summary.page_skips += result.page_skips
            summary.vma_skips += result.vma_skips
            if not index:  # the baseline: Accessed bits cleared, nothing to write
                out.write_lines(_map_lines(layout, result))
                continue
            data, address = _interval_bytes(layout, result, index, header,
                                            (pass_start_ns - start_ns) / 1e9, pass_s)
            out.write(data)
            out.flush()
            _count(summary, address)
    except ProcessGone:
        summary.ended = RecordEnd.GONE
    except KeyboardInterrupt:
        summary.ended = RecordEnd.INTERRUPTED
    out.write(summary.trailer().encode())
    out.flush()
    return summary


def intervals_of(duration_s: float, interval_s: float) -> int:
    """Whole intervals in the duration (a remainder under 1 ns of an interval counts)."""
    return int(duration_s / interval_s + 1e-9)


def kernel_release() -> str:
    """The running kernel's release (uname -r)."""
    return os.uname().release

