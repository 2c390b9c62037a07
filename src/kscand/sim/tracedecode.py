"""The trace decoder: text chunks of `time_s,pid,address[,count]` lines into columns.

Vectorized first (numpy cuts a chunk into fields and decodes each field column as a
(rows, width) byte matrix); a line the fast path does not take goes to the per-line
parser, which gives the same values and the same one-line errors. The reading, limits
and cache around it: kscand.sim.tracefile.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kscand.errors import ConfigError

TRACE_PAGE_SHIFT = 12
PID_LIMIT = (1 << 31) - 1
ADDRESS_LIMIT = 1 << 64

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


@dataclass
class Columns:
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


def _loadtxt_chunk(chunk: bytes, buf: U8Matrix) -> Columns | None:
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
        return Columns(np.zeros(0), np.zeros(0, np.int32), np.zeros(0, np.int64),
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
    return Columns(np.ascontiguousarray(t_s), pid.astype(np.int32),
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


def parse_chunk(chunk: bytes, first_lineno: int, where: str,
                 header_possible: bool) -> tuple[Columns, int, bool]:
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


def _parse_lines(chunk: bytes, buf: U8Matrix, first_lineno: int, where: str) -> Columns:
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
    columns = Columns(t_s[good], pid[good].astype(np.int32),
                       (addr[good] >> np.uint64(TRACE_PAGE_SHIFT)).astype(np.int64),
                       count[good].astype(np.float32))
    if slow_rows:
        columns = _merge(columns, fast_ids[good], slow_lines, slow_rows)
    return columns


def _merge(columns: Columns, fast_lines: npt.NDArray[np.intp], slow_lines: list[int],
           slow_rows: list[tuple[float, int, int, float]]) -> Columns:
    """Fast-decoded and per-line-parsed rows back in line order."""
    order = np.argsort(np.concatenate([fast_lines, np.array(slow_lines, dtype=np.intp)]),
                       kind="stable")
    t = np.array([r[0] for r in slow_rows], dtype=np.float64)
    pid = np.array([r[1] for r in slow_rows], dtype=np.int32)
    page = np.array([r[2] >> TRACE_PAGE_SHIFT for r in slow_rows], dtype=np.int64)
    count = np.array([r[3] for r in slow_rows], dtype=np.float32)
    return Columns(np.concatenate([columns.t_s, t])[order],
                    np.concatenate([columns.pid, pid])[order],
                    np.concatenate([columns.page, page])[order],
                    np.concatenate([columns.count, count])[order])
