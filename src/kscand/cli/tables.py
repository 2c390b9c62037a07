"""Tables whose numbers are never cut, at 80 columns and in a pipe.

When stdout is not a terminal rich renders at 80 columns (or $COLUMNS) and, left
to itself, shrinks columns until numbers read `9…`. Here right-justified (number)
columns, and columns the caller made no_wrap (names one types, like a tunable's),
keep their full width and never wrap; other text columns wrap (fold) instead.
When the table does not fit, number headers wrap at their spaces, then text
columns fold down to NARROW_TEXT_MIN_WIDTH; when it still does not fit, its
columns are split over parts printed one under the other, each repeating the
leading key columns (a pid and command, a name). Only a column wider than the
terminal makes a part print wider than the terminal, its numbers whole.
"""

from __future__ import annotations

import dataclasses

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from kscand.machine import PAGE_SIZE
from kscand.units import format_bytes

TEXT_MIN_WIDTH = 16  # a text column is folded down to this, never below (a comm is <= 15)
NARROW_TEXT_MIN_WIDTH = 10  # ... and to this when the table would be split otherwise
_EDGE = 3  # a column's border and padding


def _width(cell: object) -> int:
    if isinstance(cell, Text):
        return max((cell_len(line) for line in cell.plain.splitlines()), default=0)
    if not isinstance(cell, str):
        return 0
    return max((cell_len(line) for line in Text.from_markup(cell).plain.splitlines()), default=0)


def _column_width(column: Column, text_min: int) -> int:
    """Set the column for wrapping text, never numbers; its minimum width."""
    widest = max([_width(cell) for cell in column.cells] + [1])
    header = _width(column.header)
    if column.justify == "right" or column.no_wrap:  # numbers and names: whole
        column.no_wrap = True
        column.min_width = max(widest, header)
    else:  # text folds (no ellipsis), down to TEXT_MIN_WIDTH or its header
        column.no_wrap = False
        column.overflow = "fold"
        column.min_width = min(max(widest, header), max(text_min, header))
    return column.min_width + _EDGE


def fit_numbers(table: Table, text_min: int = TEXT_MIN_WIDTH) -> int:
    """Set every column for wrapping text (down to text_min), never numbers; the width
    the table needs."""
    return 1 + sum(_column_width(column, text_min) for column in table.columns)


def _wrap_number_headers(table: Table) -> None:
    """Break a number column's header at its spaces ("slow tier" over two lines)."""
    for column in table.columns:
        if column.justify == "right" and isinstance(column.header, str):
            column.header = column.header.replace(" ", "\n")


def _part(table: Table, indexes: list[int], title: str) -> Table:
    part = Table(title=title, title_justify=table.title_justify, box=table.box,
                 show_header=table.show_header, show_lines=table.show_lines,
                 show_edge=table.show_edge, header_style=table.header_style,
                 border_style=table.border_style, title_style=table.title_style,
                 row_styles=table.row_styles, caption=table.caption)
    part.columns = [dataclasses.replace(table.columns[i], _index=n)
                    for n, i in enumerate(indexes)]
    part.rows = list(table.rows)
    return part


def split_columns(table: Table, width: int, keep: int) -> list[Table]:
    """The table as parts of at most `width` columns each (when it can be), every part
    with the first `keep` columns; call after fit_numbers."""
    keep = min(keep, len(table.columns) - 1)
    widths = [column.min_width + _EDGE for column in table.columns]  # type: ignore[operator]
    base = 1 + sum(widths[:keep])
    groups: list[list[int]] = [[]]
    used = base
    for i in range(keep, len(table.columns)):
        if groups[-1] and used + widths[i] > width:
            groups.append([])
            used = base
        groups[-1].append(i)
        used += widths[i]
    title = table.title if isinstance(table.title, str) else ""
    return [_part(table, list(range(keep)) + group,
                  title if n == 0 else f"{title} (continued)" if title else "")
            for n, group in enumerate(groups)]


def print_table(console: Console, table: Table, keep: int = 1) -> None:
    """console.print(table), numbers whole (see the module docstring); keep: the leading
    key columns every part of a split table repeats."""
    if fit_numbers(table) > console.width:
        _wrap_number_headers(table)
    for text_min in (TEXT_MIN_WIDTH, NARROW_TEXT_MIN_WIDTH):
        if fit_numbers(table, text_min) <= console.width:
            console.print(table)
            return
    fit_numbers(table)
    for part in split_columns(table, console.width, keep):
        needed = fit_numbers(part)
        if needed <= console.width:
            console.print(part)
            continue
        wide = Console(file=console.file, width=needed, force_terminal=console.is_terminal,
                       color_system="auto" if console.color_system else None,
                       no_color=console.no_color, highlight=False)
        wide.print(part)


def text(value: object) -> str:
    """A value from outside (a comm, a name, a path), escaped for rich markup."""
    return escape(str(value))


def size(nbytes: int) -> str:
    """A size for a table: 512 MiB, 1.5 GiB (kscand.units.format_bytes)."""
    return format_bytes(nbytes)


def pages_size(nr_pages: int) -> str:
    """Base pages as a size for a table."""
    return format_bytes(nr_pages * PAGE_SIZE)
