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
import warnings
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from kscand.errors import ConfigError

TRACE_PAGE_SHIFT = 12
READ_CHUNK_BYTES = 4 << 20
TRACE_MAX_FILE_BYTES = 4 << 30
TRACE_MAX_TEXT_BYTES = 16 << 30  # after decompression
TRACE_MAX_LINE_BYTES = 4096
# Bytes per parsed row: t_s f8 + pid i4 + page i8 + count f4 (a plain file's rows go
# straight into arrays sized by its line count; a gzip one's chunks are concatenated).
TRACE_ROW_BYTES = 24
TRACE_MEMORY_LIMIT_BYTES = 2 << 30
PID_LIMIT = (1 << 31) - 1
ADDRESS_LIMIT = 1 << 64
TRACE_CACHE_ENV = "KSCAND_TRACE_CACHE"  # a directory; "off" disables the cache
CACHE_VERSION = 1
GZIP_MAGIC = b"\x1f\x8b"
_FIELDS = ("t_s", "pid", "page", "count")
# How each load went (hits, misses, why a cache write failed): counted, never printed.
TRACE_CACHE_STATS: Counter[str] = Counter()

F64Array = npt.NDArray[np.float64]
U8Matrix = npt.NDArray[np.uint8]
BoolArray = npt.NDArray[np.bool_]

_NL, _CR, _COMMA, _HASH, _SPACE, _TAB = 10, 13, 44, 35, 32, 9
_DOT, _PLUS, _MINUS = 46, 43, 45
_TIME_WIDTH, _PID_WIDTH, _ADDR_WIDTH, _COUNT_WIDTH = 32, 16, 32, 32
# Hex digit value of each byte (255: not a hex digit).
_HEX = np.full(256, 255, dtype=np.uint8)
_HEX[48:58] = np.arange(10)
_HEX[97:103] = np.arange(10, 16)
_HEX[65:71] = np.arange(10, 16)
_POW10_F64 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_MAX_EXACT_MANTISSA = 1 << 53  # m / 10**k is correctly rounded below this


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


@dataclass
class _Columns:
    """Parsed rows of one chunk, in line order (None once copied into the Trace)."""

    t_s: Any
    pid: Any
    page: Any
    count: Any


# --- the per-line parser (odd lines, and every error) ------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_line(line: str, where: str, lineno: int) -> tuple[float, int, int, float] | None:
    """One line -> (t_s, pid, address, count), None for a blank or comment line."""
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    fields = [f.strip() for f in line.split(",")]
    if len(fields) not in (3, 4):
        raise ConfigError(f"{where}:{lineno}: expected time_s,pid,address[,count]")
    try:
        t = float(fields[0])
        pid = int(fields[1], 10)
        addr = int(fields[2], 0)
        count = float(fields[3]) if len(fields) == 4 else 1.0
    except ValueError:
        raise ConfigError(f"{where}:{lineno}: cannot parse {line[:120]!r}") from None
    if t < 0 or addr < 0 or count < 0 or not np.isfinite(t) or not np.isfinite(count):
        raise ConfigError(f"{where}:{lineno}: negative or non-finite value in {line[:120]!r}")
    if not 0 <= pid <= PID_LIMIT:
        raise ConfigError(f"{where}:{lineno}: pid {pid} out of range [0, {PID_LIMIT}]")
    if addr >= ADDRESS_LIMIT:
        raise ConfigError(f"{where}:{lineno}: address {fields[2][:40]} does not fit 64 bits")
    return t, pid, addr, count


def _is_header(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#") and not _is_number(
        stripped.split(",")[0].strip())


# --- the vectorized decoder ---------------------------------------------------------------


def _field_matrix(buf: U8Matrix, lo: npt.NDArray[np.int64], hi: npt.NDArray[np.int64],
                  width: int) -> tuple[U8Matrix, BoolArray]:
    """Bytes [lo, hi) of each field, one field per column, blank-padded: uint8
    (min(width, longest field), n), columns contiguous in memory per row of the
    matrix (so the decoders work on whole rows at once); and which fields are wider
    than width."""
    length = hi - lo
    too_long = length > width
    rows = int(min(width, int(length.max()) if length.size else 0))
    matrix = np.empty((rows, lo.shape[0]), dtype=np.uint8)
    last = buf.shape[0] - 1
    for j in range(rows):  # one gather per byte position: no (rows, n) index array
        matrix[j] = np.where(length > j, buf[np.minimum(lo + j, last)], np.uint8(_SPACE))
    return matrix, too_long


def _one_run(solid: BoolArray) -> BoolArray:
    """Columns whose solid cells form exactly one run (no blank inside a field)."""
    if not solid.shape[0]:
        return np.zeros(solid.shape[1], dtype=np.bool_)
    starts = solid[0].astype(np.int16) + (solid[1:] & ~solid[:-1]).sum(axis=0, dtype=np.int16)
    return np.asarray(starts == 1)


def _decode_uint(matrix: U8Matrix, allow_hex: bool) -> tuple[npt.NDArray[np.uint64], BoolArray]:
    """Decimal (or 0x hex) unsigned integers, one per column: (uint64 (n,), ok bool (n,)).

    Not ok: anything but blanks around one run of digits, or more significant digits
    than surely fit 64 bits (the per-line parser decides those)."""
    width, n = matrix.shape
    if not width or not n:
        return np.zeros(n, dtype=np.uint64), np.zeros(n, dtype=np.bool_)
    solid = (matrix != _SPACE) & (matrix != _TAB) & (matrix != 0)
    value = _HEX[matrix]
    hexa = np.zeros(n, dtype=np.bool_)
    prefix = np.zeros_like(solid)
    if allow_hex and width >= 2:
        first = np.argmax(solid, axis=0)
        second = np.minimum(first + 1, width - 1)
        cols = np.arange(n)
        nxt = matrix[second, cols]
        hexa = (matrix[first, cols] == 48) & ((nxt == 120) | (nxt == 88)) & (first + 1 < width)
        prefix[first[hexa], cols[hexa]] = True
        prefix[second[hexa], cols[hexa]] = True
    base = np.where(hexa, np.uint64(16), np.uint64(10))
    digit = (value < base.astype(np.uint8)[None, :]) & ~prefix
    ok = _one_run(solid) & ~np.any(solid & ~digit & ~prefix, axis=0) & np.any(digit, axis=0)
    out = np.zeros(n, dtype=np.uint64)
    significant = np.zeros(n, dtype=np.int16)
    started = np.zeros(n, dtype=np.bool_)  # a nonzero digit seen (leading zeros do not count)
    for j in range(width):  # Horner, one matrix row (all fields) at a time
        dj = digit[j]
        out = np.where(dj, out * base + value[j].astype(np.uint64), out)
        started |= dj & (value[j] > 0)
        significant += dj & started
    ok &= significant <= np.where(hexa, 16, 19)
    return out, ok


def _decode_float(matrix: U8Matrix) -> tuple[F64Array, BoolArray]:
    """Non-negative decimals, [digits][.digits][e[+-]digits], one per column:
    (float64 (n,), ok (n,)).

    Values equal strtod's (m / 10**k and m * 10**k with m < 2**53 and k <= 22 are
    correctly rounded); anything else (a sign, more digits, inf, nan) is left to the
    per-line parser."""
    width, n = matrix.shape
    if not width or not n:
        return np.zeros(n, dtype=np.float64), np.zeros(n, dtype=np.bool_)
    row = np.arange(width)[:, None]
    solid = (matrix != _SPACE) & (matrix != _TAB)
    digit = (matrix >= 48) & (matrix <= 57)
    is_e = (matrix == 101) | (matrix == 69)
    dot = matrix == _DOT
    sign = (matrix == _PLUS) | (matrix == _MINUS)
    nr_e = is_e.sum(axis=0)
    e_pos = np.where(nr_e == 1, np.argmax(is_e, axis=0), width)[None, :]
    in_mant = row < e_pos
    mant = digit & in_mant
    exp_digit = digit & ~in_mant & ~is_e
    sign_exp = sign & ~in_mant
    ok = _one_run(solid) & (nr_e <= 1) & ~np.any(solid & ~(digit | dot | is_e | sign), axis=0)
    ok &= ((dot & in_mant).sum(axis=0) <= 1) & ~np.any(dot & ~in_mant, axis=0)
    ok &= ~np.any(sign & in_mant, axis=0) & ~np.any(sign_exp & (row != e_pos + 1), axis=0)
    nr_mant = mant.sum(axis=0)
    nr_exp = exp_digit.sum(axis=0)
    ok &= (nr_mant > 0) & (nr_mant <= 19) & ((nr_e == 0) | ((nr_exp > 0) & (nr_exp <= 4)))
    mantissa = np.zeros(n, dtype=np.uint64)
    exponent = np.zeros(n, dtype=np.int64)
    nr_frac = np.zeros(n, dtype=np.int64)
    after_dot = np.zeros(n, dtype=np.bool_)
    ten = np.uint64(10)
    for j in range(width):  # Horner, one matrix row (all fields) at a time
        value = matrix[j].astype(np.uint64) - np.uint64(48)
        mj = mant[j]
        mantissa = np.where(mj, mantissa * ten + value, mantissa)
        nr_frac += mj & after_dot
        after_dot |= dot[j]
        ej = exp_digit[j]
        exponent = np.where(ej, exponent * 10 + value.astype(np.int64), exponent)
    ok &= mantissa < np.uint64(_MAX_EXACT_MANTISSA)
    negative = np.any(sign_exp & (matrix == _MINUS), axis=0)
    scale = nr_frac - np.where(negative, -exponent, exponent)  # value = mantissa / 10**scale
    ok &= np.abs(scale) <= 22
    power = _POW10_F64[np.minimum(np.abs(scale), 22)]
    m = mantissa.astype(np.float64)
    return np.where(scale >= 0, m / power, m * power), ok


# An address field: "0x" and 16 hex digits or 20 decimal ones, and some blanks. A wider
# one touches the last byte and sends its chunk to the byte-matrix path.
_LOADTXT_ADDR_BYTES = 24
_LOADTXT_DTYPES = {
    4: np.dtype([("t_s", "f8"), ("pid", "i8"), ("addr", f"S{_LOADTXT_ADDR_BYTES}"),
                 ("count", "f8")]),
    3: np.dtype([("t_s", "f8"), ("pid", "i8"), ("addr", f"S{_LOADTXT_ADDR_BYTES}")]),
}


def _loadtxt_chunk(chunk: bytes, buf: U8Matrix) -> _Columns | None:
    """The fast path for a chunk of well-formed records: numpy's C text reader, then the
    vectorized hex decoder for the addresses. None when anything is unusual (a '#' after a
    line's start, a field it cannot read, a value out of range): the chunk then takes the
    byte-matrix path, which gives every line's exact value or error."""
    hashes = np.flatnonzero(buf == _HASH)
    if hashes.size and not bool(np.all((hashes == 0) | (buf[np.maximum(hashes - 1, 0)] == _NL))):
        return None
    rows = None
    for dtype in _LOADTXT_DTYPES.values():  # 4 fields, else 3
        try:
            with warnings.catch_warnings():  # a chunk of comments only: "no data"
                warnings.simplefilter("ignore", UserWarning)
                rows = np.loadtxt(io.BytesIO(chunk), delimiter=",", comments="#",
                                  dtype=dtype, ndmin=1)
            break
        except ValueError:
            continue
    if rows is None:
        return None
    if not rows.shape[0]:
        return _Columns(np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int64),
                        np.zeros(0, np.float32))
    width = _LOADTXT_ADDR_BYTES
    offset = rows.dtype.fields["addr"][1]  # type: ignore[index]
    raw = rows.view(np.uint8).reshape(rows.shape[0], rows.dtype.itemsize)
    matrix = np.ascontiguousarray(raw[:, offset:offset + width].T)
    used = np.flatnonzero(matrix.any(axis=1))
    if used.size and used[-1] == width - 1:  # a field that may have been cut at the width
        return None
    matrix = matrix[: int(used[-1]) + 1 if used.size else 0]
    addr, ok = _decode_uint(matrix, allow_hex=True)
    t_s = rows["t_s"]
    count = rows["count"] if "count" in (rows.dtype.names or ()) else np.ones(t_s.shape[0])
    pid = rows["pid"]
    ok &= np.isfinite(t_s) & (t_s >= 0) & np.isfinite(count) & (count >= 0)
    ok &= (pid >= 0) & (pid <= PID_LIMIT)
    if not bool(ok.all()):
        return None
    return _Columns(np.ascontiguousarray(t_s), pid.astype(np.int32),
                    (addr >> np.uint64(TRACE_PAGE_SHIFT)).astype(np.int64),
                    count.astype(np.float32))


def _header_line(chunk: bytes) -> tuple[int | None, bool]:
    """(index of a header line, whether a header is still possible after this chunk):
    the first line that is neither blank nor a comment decides."""
    pos = 0
    index = 0
    while pos < len(chunk):
        end = chunk.find(b"\n", pos)
        end = len(chunk) if end < 0 else end
        try:
            line = chunk[pos:end].decode("utf-8").strip()
        except UnicodeDecodeError:
            return None, False
        if line and not line.startswith("#"):
            return (index if _is_header(line) else None), False
        pos, index = end + 1, index + 1
    return None, True


def _drop_line(chunk: bytes, index: int) -> bytes:
    """chunk without its index-th line, which stays as an empty line (numbering kept)."""
    pos = 0
    for _ in range(index):
        pos = chunk.index(b"\n", pos) + 1
    end = chunk.index(b"\n", pos)
    return chunk[:pos] + chunk[end:]


def _parse_chunk(chunk: bytes, first_lineno: int, where: str,
                 header_possible: bool) -> tuple[_Columns, int, bool]:
    """Parse whole lines (chunk ends with a newline): (rows, lines, header still possible)."""
    if header_possible:
        header, header_possible = _header_line(chunk)
        if header is not None:
            chunk = _drop_line(chunk, header)
    buf = np.frombuffer(chunk, dtype=np.uint8)
    nr_lines = chunk.count(b"\n")
    fast = _loadtxt_chunk(chunk, buf)
    if fast is not None:
        return fast, nr_lines, header_possible
    return _parse_lines(chunk, buf, first_lineno, where), nr_lines, header_possible


def _parse_lines(chunk: bytes, buf: U8Matrix, first_lineno: int, where: str) -> _Columns:
    """The byte-matrix path: every line decoded or sent to the per-line parser."""
    ends = np.flatnonzero(buf == _NL).astype(np.int64)
    nr_lines = int(ends.shape[0])
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    nonempty = ends > starts
    ends = ends - (nonempty & (buf[np.maximum(ends - 1, 0)] == _CR))
    nonempty = ends > starts
    first = np.where(nonempty, buf[np.minimum(starts, buf.shape[0] - 1)], _NL)
    comment = first == _HASH
    odd = nonempty & ((first == _SPACE) | (first == _TAB))  # the per-line parser strips them
    data = nonempty & ~comment & ~odd
    line_ids = np.arange(nr_lines)

    def text_of(i: int) -> str:
        raw = chunk[int(starts[i]):int(ends[i])]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{where}:{first_lineno + i}: not valid UTF-8 text") from None

    commas = np.flatnonzero(buf == _COMMA).astype(np.int64)
    comma_line = np.searchsorted(ends, commas)
    nr_commas = np.bincount(comma_line, minlength=nr_lines)
    fast = data & ((nr_commas == 2) | (nr_commas == 3))
    fast_ids = line_ids[fast]
    first_comma = np.searchsorted(comma_line, fast_ids)
    c0, c1 = commas[first_comma], commas[first_comma + 1]
    four = nr_commas[fast] == 3
    c2 = np.where(four, commas[np.minimum(first_comma + 2, commas.shape[0] - 1)], ends[fast])
    t_m, t_long = _field_matrix(buf, starts[fast], c0, _TIME_WIDTH)
    t_s, t_ok = _decode_float(t_m)
    del t_m
    p_m, p_long = _field_matrix(buf, c0 + 1, c1, _PID_WIDTH)
    pid, p_ok = _decode_uint(p_m, allow_hex=False)
    del p_m
    a_m, a_long = _field_matrix(buf, c1 + 1, c2, _ADDR_WIDTH)
    addr, a_ok = _decode_uint(a_m, allow_hex=True)
    del a_m
    count = np.ones(fast_ids.shape[0], dtype=np.float64)
    c_ok = np.ones(fast_ids.shape[0], dtype=np.bool_)
    if four.any():
        c_m, c_long = _field_matrix(buf, c2[four] + 1, ends[fast][four], _COUNT_WIDTH)
        count[four], c_ok[four] = _decode_float(c_m)
        c_ok[four] &= ~c_long
    good = t_ok & p_ok & a_ok & c_ok & ~t_long & ~p_long & ~a_long & (pid <= PID_LIMIT)
    slow_ids = np.sort(np.concatenate([fast_ids[~good], line_ids[(data & ~fast) | odd]]))
    slow_lines: list[int] = []
    slow_rows: list[tuple[float, int, int, float]] = []
    for i in slow_ids.tolist():
        row = _parse_line(text_of(i), where, first_lineno + i)
        if row is not None:
            slow_lines.append(i)
            slow_rows.append(row)
    columns = _Columns(t_s[good], pid[good].astype(np.int32),
                       (addr[good] >> np.uint64(TRACE_PAGE_SHIFT)).astype(np.int64),
                       count[good].astype(np.float32))
    if slow_rows:
        columns = _merge(columns, fast_ids[good], slow_lines, slow_rows)
    return columns


def _merge(columns: _Columns, fast_lines: npt.NDArray[np.intp], slow_lines: list[int],
           slow_rows: list[tuple[float, int, int, float]]) -> _Columns:
    """Fast-decoded and per-line-parsed rows back in line order."""
    order = np.argsort(np.concatenate([fast_lines, np.array(slow_lines, dtype=np.intp)]),
                       kind="stable")
    t = np.array([r[0] for r in slow_rows], dtype=np.float64)
    pid = np.array([r[1] for r in slow_rows], dtype=np.int32)
    page = np.array([r[2] >> TRACE_PAGE_SHIFT for r in slow_rows], dtype=np.int64)
    count = np.array([r[3] for r in slow_rows], dtype=np.float32)
    return _Columns(np.concatenate([columns.t_s, t])[order],
                    np.concatenate([columns.pid, pid])[order],
                    np.concatenate([columns.page, page])[order],
                    np.concatenate([columns.count, count])[order])


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
        self.parts: list[_Columns] = []
        self.out = None if capacity is None else _Columns(
            np.empty(capacity, np.float64), np.empty(capacity, np.int32),
            np.empty(capacity, np.int64), np.empty(capacity, np.float32))

    def add(self, columns: _Columns) -> None:
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
        columns, nr_lines, header_possible = _parse_chunk(data[:cut + 1], lineno, path,
                                                          header_possible)
        lineno += nr_lines
        if compressed:
            _check_memory(2 * (rows.nr_rows + int(columns.t_s.shape[0])), path, "at least")
        rows.add(columns)
    if carry:
        columns, _, _ = _parse_chunk(carry + b"\n", lineno, path, header_possible)
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
