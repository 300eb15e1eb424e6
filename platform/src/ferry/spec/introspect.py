"""Walk the pydantic models along an error location to learn which keys were valid there, and turn a
misspelt name into a did-you-mean hint."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel


def valid_keys_at(root: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    current: Any = root
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    model = _as_model(current)
    return sorted(model.model_fields) if model else []


def did_you_mean(word: str, options: Iterable[str]) -> str:
    """The closest option as a hint, else the list of options ('' when there are none)."""
    names = sorted(options)
    close = difflib.get_close_matches(word, names, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]!r}?"
    return f"known: {', '.join(names)}" if names else ""


def _step(annotation: Any, part: str | int) -> Any:
    model = _as_model(annotation)
    if model is not None:
        field = model.model_fields.get(str(part))
        return field.annotation if field else None
    container = _container(annotation)
    if container is not None:
        return container
    return None


def _members(annotation: Any) -> tuple[Any, ...]:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    if origin is typing.Annotated:
        return (typing.get_args(annotation)[0],)
    return (annotation,)


def _as_model(annotation: Any) -> type[BaseModel] | None:
    for member in _members(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
    return None


def _container(annotation: Any) -> Any:
    """The item type of a dict or list annotation: its key or index adds nothing to the walk."""
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if origin in (dict, typing.Dict):  # noqa: UP006 - matches both spellings
            return typing.get_args(member)[1]
        if origin in (list, typing.List):  # noqa: UP006
            return typing.get_args(member)[0]
    return None
