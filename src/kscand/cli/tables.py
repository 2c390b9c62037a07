"""Tables whose numbers are never cut: right-justified (number) columns, and columns the
caller made no_wrap (names one types, like a tunable's), keep their full width and never
wrap; other text columns wrap (fold) instead. When the numbers alone do not
fit the terminal (80 columns, or a pipe), the table is printed wider than the terminal
rather than cutting a number to `9…`."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

TEXT_MIN_WIDTH = 16  # a text column is folded down to this, never below (a comm is <= 15)
_EDGE = 3  # a column's border and padding


def _width(cell: object) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return cell_len(Text.from_markup(cell).plain) if isinstance(cell, str) else 0


def fit_numbers(table: Table) -> int:
    """Set every column for wrapping text, never numbers; the width the table needs."""
    needed = 1
    for column in table.columns:
        widest = max([_width(cell) for cell in column.cells] + [1])
        header = _width(column.header)
        if column.justify == "right" or column.no_wrap:  # numbers and names: whole
            column.no_wrap = True
            column.min_width = max(widest, header)
        else:  # text folds (no ellipsis), down to TEXT_MIN_WIDTH or its header
            column.no_wrap = False
            column.overflow = "fold"
            column.min_width = min(max(widest, header), max(TEXT_MIN_WIDTH, header))
        needed += column.min_width + _EDGE
    return needed


def print_table(console: Console, table: Table) -> None:
    """console.print(table), numbers whole (see the module docstring)."""
    needed = fit_numbers(table)
    if needed <= console.width:
        console.print(table)
        return
    wide = Console(file=console.file, width=needed, force_terminal=console.is_terminal,
                   color_system="auto" if console.color_system else None, no_color=console.no_color,
                   highlight=False)
    wide.print(table)


def text(value: object) -> str:
    """A value from outside (a comm, a name, a path), escaped for rich markup."""
    return escape(str(value))
