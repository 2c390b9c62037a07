"""Access-trace files for the `trace` workload: bulk parsing with numpy, limits, a cache.

The format (unchanged since the trace kind was added): text, one record per line,
`time_s,pid,address[,count]`; blank lines and lines starting with '#' are skipped;
an optional first line whose first field is not a number is a header; addresses
are decimal or 0x hex byte addresses; count (default 1) is the accesses the
record stands for. A file whose name ends in .gz, or that starts with the gzip
magic, is decompressed as it is read.

Parsing is vectorized: each chunk of READ_CHUNK_BYTES is cut into fields by
numpy, and each field column is decoded as a (rows, width) byte matrix. A line
the fast decoder does not take (leading blanks, exotic numbers such as "1_000",
or an error) goes to the per-line parser, which gives the same values and the
same one-line errors as before. The parsed arrays are cached as .npy files
(TRACE_CACHE_ENV, default ~/.cache/kscand/traces) named by the file's size, mtime
and BLAKE2 hash; a cached trace is memory-mapped, so worker processes of one
`kscand compare` share its pages instead of parsing the text again.

Limits (each a one-line ConfigError): only regular files (no FIFO, no device);
at most TRACE_MAX_FILE_BYTES on disk and TRACE_MAX_TEXT_BYTES of text; lines of
at most TRACE_MAX_LINE_BYTES; the estimated memory of the parsed arrays
(TRACE_ROW_BYTES per row) at most TRACE_MEMORY_LIMIT_BYTES; a pid in
[0, 2**31 - 1]; an address below 2**64.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from kscand.errors import ConfigError
from kscand.sim.tracedecode import (
    Columns,
    F64Array,
    parse_chunk,
)

READ_CHUNK_BYTES = 4 << 20
TRACE_MAX_FILE_BYTES = 4 << 30
TRACE_MAX_TEXT_BYTES = 16 << 30  # after decompression
TRACE_MAX_LINE_BYTES = 4096
# Bytes per parsed row: t_s f8 + pid i4 + page i8 + count f4 (a plain file's rows go
# straight into arrays sized by its line count; a gzip one's chunks are concatenated).
TRACE_ROW_BYTES = 24
TRACE_MEMORY_LIMIT_BYTES = 2 << 30
TRACE_CACHE_ENV = "KSCAND_TRACE_CACHE"  # a directory; "off" disables the cache
CACHE_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
_FIELDS = ("t_s", "pid", "page", "count")
# How each load went (hits, misses, why a cache write failed): counted, never printed.
TRACE_CACHE_STATS: Counter[str] = Counter()

@dataclass(frozen=True)
class Trace:
    """A parsed access trace: one row per record, sorted by time (stable).

    t_s float64, pid int32, page int64 (address >> TRACE_PAGE_SHIFT), count float32
    (the accesses the record stands for, 1 unless the file says otherwise).
    """

    t_s: F64Array
    pid: npt.NDArray[np.int32]
    page: npt.NDArray[np.int64]
    count: npt.NDArray[np.float32]

    @property
    def nr_rows(self) -> int:
        return int(self.t_s.shape[0])


# --- reading: regular files only, bounded, gzip ---------------------------------------------


def _open_regular(path: str) -> tuple[int, os.stat_result]:
    """An fd of path, a regular file (a FIFO is not opened for reading: no blocking)."""
    if "\0" in path:
        raise ConfigError(f"{path!r}: a path cannot hold a NUL byte")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror or err}") from err
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"{path}: not a regular file (a trace must be a plain or .gz file)")
    if st.st_size > TRACE_MAX_FILE_BYTES:
        os.close(fd)
        raise ConfigError(f"{path}: {st.st_size} bytes, over the trace size limit of "
                          f"{TRACE_MAX_FILE_BYTES >> 20} MiB")
    return fd, st


def _digest(raw: BinaryIO) -> str:
    h = hashlib.blake2b(digest_size=16)
    while block := raw.read(READ_CHUNK_BYTES):
        h.update(block)
    raw.seek(0)
    return h.hexdigest()


def _text_blocks(raw: BinaryIO, path: str) -> Iterator[bytes]:
    """The file's text in blocks, decompressed when it is gzip; bounded in total."""
    stream: BinaryIO = raw
    if _is_gzip(raw, path):
        stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
    total = 0
    try:
        while block := stream.read(READ_CHUNK_BYTES):
            total += len(block)
            if total > TRACE_MAX_TEXT_BYTES:
                raise ConfigError(f"{path}: more than {TRACE_MAX_TEXT_BYTES >> 20} MiB of text "
                                  "(the trace size limit)")
            yield block
    except (OSError, EOFError, zlib.error) as err:
        raise ConfigError(f"{path}: cannot decompress: {err}") from err


def _check_memory(nr_rows: int, path: str, what: str) -> None:
    need = nr_rows * TRACE_ROW_BYTES
    if need > TRACE_MEMORY_LIMIT_BYTES:
        raise ConfigError(
            f"{path}: {what} {nr_rows:,} records need about {need >> 20} MiB, over the limit of "
            f"{TRACE_MEMORY_LIMIT_BYTES >> 20} MiB")


def _is_gzip(raw: BinaryIO, path: str) -> bool:
    magic = raw.read(2)
    raw.seek(0)
    return magic == GZIP_MAGIC or path.endswith(".gz")


def _count_lines(raw: BinaryIO) -> int:
    """Newlines in a plain file, plus one (an upper bound on its records)."""
    nr_lines = 1
    while block := raw.read(READ_CHUNK_BYTES):
        nr_lines += block.count(b"\n")
    raw.seek(0)
    return nr_lines


class _Rows:
    """The parsed rows: straight into arrays sized up front (a plain file: its line count
    bounds the records), or chunk by chunk and concatenated at the end (gzip)."""

    def __init__(self, capacity: int | None) -> None:
        self.capacity = capacity
        self.nr_rows = 0
        self.parts: list[Columns] = []
        self.out = None if capacity is None else Columns(
            np.empty(capacity, np.float64), np.empty(capacity, np.int32),
            np.empty(capacity, np.int64), np.empty(capacity, np.float32))

    def add(self, columns: Columns) -> None:
        n = int(columns.t_s.shape[0])
        if self.out is None:
            self.parts.append(columns)
        else:
            for name in _FIELDS:
                getattr(self.out, name)[self.nr_rows:self.nr_rows + n] = getattr(columns, name)
        self.nr_rows += n

    def trace(self) -> Trace:
        if self.out is not None:
            n = self.nr_rows
            return Trace(*(getattr(self.out, name)[:n] for name in _FIELDS))
        fields = []
        for name in _FIELDS:  # one field at a time, each part's piece freed once copied
            fields.append(np.concatenate([getattr(p, name) for p in self.parts]))
            for p in self.parts:
                setattr(p, name, None)
        self.parts = []
        return Trace(*fields)


def parse_trace_file(raw: BinaryIO, path: str, size_bytes: int) -> Trace:
    """Parse an open trace file (plain or gzip) into a Trace; ConfigError on bad input.

    Memory is checked before parsing for a plain file (TRACE_ROW_BYTES per line), and
    as the rows come for a gzip one (twice that: its chunks are concatenated)."""
    del size_bytes  # the line count is the estimate
    compressed = _is_gzip(raw, path)
    capacity = None
    if not compressed:
        capacity = _count_lines(raw)
        _check_memory(capacity, path, "up to")
    rows = _Rows(capacity)
    carry = b""
    lineno = 1
    header_possible = True
    for block in _text_blocks(raw, path):
        data = carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            if len(carry) > TRACE_MAX_LINE_BYTES:
                raise ConfigError(f"{path}:{lineno}: a line longer than {TRACE_MAX_LINE_BYTES} "
                                  "bytes")
            continue
        carry = data[cut + 1:]
        if len(carry) > TRACE_MAX_LINE_BYTES:
            raise ConfigError(f"{path}: a line longer than {TRACE_MAX_LINE_BYTES} bytes")
        columns, nr_lines, header_possible = parse_chunk(data[:cut + 1], lineno, path,
                                                          header_possible)
        lineno += nr_lines
        if compressed:
            _check_memory(2 * (rows.nr_rows + int(columns.t_s.shape[0])), path, "at least")
        rows.add(columns)
    if carry:
        columns, _, _ = parse_chunk(carry + b"\n", lineno, path, header_possible)
        rows.add(columns)
    if not rows.nr_rows:
        raise ConfigError(f"{path}: no records")
    trace = rows.trace()
    del rows
    if trace.nr_rows > 1 and not bool(np.all(trace.t_s[1:] >= trace.t_s[:-1])):
        order = np.argsort(trace.t_s, kind="stable")
        trace = Trace(*(getattr(trace, name)[order] for name in _FIELDS))
    return trace


def parse_trace(text: str, where: str) -> Trace:
    """Parse a trace file's text (tests, small traces); ConfigError naming where and the line."""
    data = text.encode("utf-8")
    return parse_trace_file(io.BytesIO(data), where, len(data))


# --- the cache -------------------------------------------------------------------------------

_LOADED: dict[tuple[str, int, int, int], Trace] = {}  # (path, size, mtime_ns, inode)


def cache_dir() -> Path | None:
    """Where parsed traces are cached (None: caching is off)."""
    configured = os.environ.get(TRACE_CACHE_ENV)
    if configured is not None:
        return None if configured in ("", "off") else Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "kscand" / "traces"


def _cache_name(st: os.stat_result, digest: str) -> str:
    return f"v{CACHE_VERSION}-{st.st_size}-{st.st_mtime_ns}-{digest}"


def _read_cache(entry: Path) -> Trace | None:
    try:
        arrays = [np.load(entry / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in _FIELDS]
    except (OSError, ValueError):
        return None
    n = arrays[0].shape[0]
    if any(a.ndim != 1 or a.shape[0] != n for a in arrays):
        TRACE_CACHE_STATS["cache_bad_entry"] += 1
        return None
    return Trace(*arrays)


def _write_cache(entry: Path, trace: Trace) -> None:
    tmp: Path | None = None
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=entry.parent))
        for name in _FIELDS:
            np.save(tmp / f"{name}.npy", getattr(trace, name), allow_pickle=False)
        os.replace(tmp, entry)  # atomic: a reader sees a whole entry or none
        TRACE_CACHE_STATS["cache_written"] += 1
    except OSError:  # read-only or full cache, or another process wrote it first
        TRACE_CACHE_STATS["cache_write_failed"] += 1
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def load_trace(path: str) -> Trace:
    """The parsed trace at path: from this process's memory, the on-disk cache (memory-mapped,
    shared between processes) or a parse. Raises ConfigError on bad input."""
    fd, st = _open_regular(path)
    key = (path, st.st_size, st.st_mtime_ns, st.st_ino)
    with os.fdopen(fd, "rb") as raw:
        trace = _LOADED.get(key)
        if trace is not None:
            TRACE_CACHE_STATS["memory_hit"] += 1
            return trace
        directory = cache_dir()
        entry = directory / _cache_name(st, _digest(raw)) if directory is not None else None
        if entry is not None and entry.is_dir():
            trace = _read_cache(entry)
        if trace is not None:
            TRACE_CACHE_STATS["cache_hit"] += 1
        else:
            TRACE_CACHE_STATS["parsed"] += 1
            trace = parse_trace_file(raw, path, st.st_size)
            if entry is not None:
                _write_cache(entry, trace)
    _LOADED[key] = trace
    return trace
