"""Printing the verbs share: one console for results and one for errors, and tables that fit any width.

Results go to stdout and wrap at the terminal's width (80 columns when it is not a terminal), so plain text
and tables read the same in a terminal, a pipe and a CI log. Errors go to stderr one line each, never wrapped:
a step's last log line is what the runner reports, and a pasted error should be one line. Text that is data
(logs, diffs, JSON, plans) is printed with `raw`, exactly as it is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.markup import escape
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from ferry.spec.errors import SpecError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)

MIN_TEXT = 20  # the narrowest a free-text column gets before a table gives way to one block per row


def raw(text: str, *, end: str = "\n") -> None:
    """Data on stdout exactly as it is: no markup, no highlighting, no wrapping."""
    console.print(text, markup=False, highlight=False, soft_wrap=True, end=end)


def indented(text: str, by: int = 4) -> Padding:
    """`text` as plain text (no markup), wrapped to the width with every line indented by `by`."""
    return Padding(Text(text), (0, 0, 0, by), expand=False)


def print_spec_errors(errors: Iterable[SpecError]) -> int:
    count = 0
    for error in errors:
        err_console.print(f"[red]error[/red] {escape(error.format())}")
        count += 1
    return count


@dataclass(frozen=True)
class Col:
    """A column of a FitTable. Only `wrap` columns (free text) may break between words; every other cell
    (a model, run or version name, a hash, a time, a number) is printed whole or the table is not used."""

    header: str
    wrap: bool = False


class FitTable:
    """Rows that read well at any width: a table where its columns fit, else one key/value block per row.

    A rich Table squeezed below its content cuts every cell to "fra…"; this one is decided at render time
    from the width it is given, so a terminal of any size (and a Live display that is resized) gets either
    whole cells in a table or the same facts stacked.
    """

    def __init__(self, *columns: Col | str) -> None:
        self.columns = [c if isinstance(c, Col) else Col(c) for c in columns]
        self.rows: list[list[Text]] = []

    def add_row(self, *cells: str | Text) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([c if isinstance(c, Text) else Text(c) for c in cells])

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        widths = self.widths(options.max_width)
        yield self._table(widths) if widths is not None else self._blocks()

    def widths(self, width: int) -> list[int] | None:
        """Each column's width when the table fits `width` with every cell whole, else None."""
        natural = [max([cell_len(c.header)] + [_longest_line(row[i]) for row in self.rows])
                   for i, c in enumerate(self.columns)]
        need = [min(nat, max(MIN_TEXT, cell_len(c.header), *(_longest_word(row[i]) for row in self.rows)))
                if c.wrap else nat for nat, (i, c) in zip(natural, enumerate(self.columns), strict=True)]
        spare = width - (3 * len(self.columns) + 1) - sum(need)  # borders and one space each side of a cell
        if spare < 0:
            return None
        for i, column in enumerate(self.columns):
            grow = min(natural[i] - need[i], spare) if column.wrap else 0
            need[i] += grow
            spare -= grow
        return need

    def _table(self, widths: list[int]) -> Table:
        table = Table()
        for column, width in zip(self.columns, widths, strict=True):
            table.add_column(Text(column.header), width=width, no_wrap=not column.wrap, overflow="fold")
        for row in self.rows:
            table.add_row(*row)
        return table

    def _blocks(self) -> Group:
        parts: list[RenderableType] = []
        for index, row in enumerate(self.rows):
            if index:
                parts.append(Text())
            parts.append(Text.assemble(f"{self.columns[0].header} ", (row[0].plain, "bold")))
            grid = Table.grid(padding=(0, 2))
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")
            for column, cell in zip(self.columns[1:], row[1:], strict=True):
                if cell.plain:
                    grid.add_row(Text(column.header, style="dim"), cell)
            parts.append(Padding(grid, (0, 0, 0, 2), expand=False))
        return Group(*parts)


def _longest_line(text: Text) -> int:
    return max((cell_len(line) for line in text.plain.splitlines()), default=0)


def _longest_word(text: Text) -> int:
    return max((cell_len(word) for word in text.plain.split()), default=0)

