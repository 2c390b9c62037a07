"""Tables whose numbers are never cut: right-justified (number) columns keep their full
width and never wrap; text columns wrap (fold) instead. When the numbers alone do not
fit the terminal (80 columns, or a pipe), the table is printed wider than the terminal
rather than cutting a number to `9…`."""

from __future__ import annotations

from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

TEXT_MIN_WIDTH = 8  # a text column is folded down to this, never below
_EDGE = 3  # a column's border and padding


def _width(cell: object) -> int:
    if isinstance(cell, Text):
        return cell.cell_len
    return cell_len(Text.from_markup(cell).plain) if isinstance(cell, str) else 0


def fit_numbers(table: Table) -> int:
    """Set every column for wrapping text, never numbers; the width the table needs."""
    needed = 1
    for column in table.columns:
        widths = [_width(cell) for cell in column.cells] + [_width(column.header)]
        widest = max(widths)
        if column.justify == "right":
            column.no_wrap = True
            column.overflow = "ignore"
            column.min_width = widest
        else:
            column.no_wrap = False
            column.overflow = "fold"
            column.min_width = min(widest, TEXT_MIN_WIDTH)
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
