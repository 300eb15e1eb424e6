"""Spec errors carry everything a person needs to fix the file: where, what and how."""

from __future__ import annotations

from dataclasses import dataclass

from ferry.contract.errors import FerryError


@dataclass(frozen=True, order=True)
class SpecError:
    """One problem in one spec file.

    `path` is the dotted field path (``spec.training.tune.space.lr``); `hint` is a concrete fix,
    such as the closest valid key for a misspelt one.
    """

    file: str
    line: int
    path: str
    message: str
    hint: str = ""

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        field = f" {self.path}:" if self.path else ""
        hint = f" (hint: {self.hint})" if self.hint else ""
        return f"{where}:{field} {self.message}{hint}"


class SpecInvalid(FerryError):
    """Raised where a caller needs a valid spec and got errors instead; each error names file, line, field and fix."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors)
        super().__init__("\n".join(e.format() for e in self.errors))
