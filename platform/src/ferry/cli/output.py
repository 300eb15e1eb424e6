"""Printing helpers shared by the verbs: one console, errors on stderr."""

from __future__ import annotations

from collections.abc import Iterable

from rich.console import Console
from rich.markup import escape

from ferry.spec.errors import SpecError

console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_spec_errors(errors: Iterable[SpecError]) -> int:
    count = 0
    for error in errors:
        err_console.print(f"[red]error[/red] {escape(error.format())}")
        count += 1
    return count
