"""Workload parameters checked against the models a workload declares (`WorkloadFacts`).

The spec keeps `data.params` and `training.params` as plain scalars (the spec hash is computed over
them as written); this second stage validates them with the workload's pydantic models, so a bad value
fails `ferry validate` with its file, line and field instead of failing a step on the cluster. A tune
space key must name a tunable training param, and every value the search can hand a trial (a choice,
a range's bounds) must be valid for that param.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ferry.spec.errors import SpecError
from ferry.spec.introspect import did_you_mean
from ferry.spec.loader import LoadedSpec, validation_errors
from ferry.spec.models import SearchDomain

SPACE = ("spec", "training", "tune", "space")


def params_errors(spec: LoadedSpec, where: tuple[str, ...], given: Mapping[str, object],
                  model: type[BaseModel]) -> list[SpecError]:
    """`given` (the params found at `where`) validated with the workload's `model`."""
    try:
        model.model_validate(dict(given))
    except ValidationError as exc:
        return validation_errors(spec.file, spec.document, exc, model, where)
    return []


def space_errors(spec: LoadedSpec, space: Mapping[str, SearchDomain], model: type[BaseModel],
                 tunable: Sequence[str]) -> Iterator[SpecError]:
    workload = spec.model.spec.workload
    for name, domain in space.items():
        if name not in tunable:
            yield SpecError(spec.file, spec.line_of(*SPACE, name), ".".join((*SPACE, name)),
                            f"workload {workload!r} has no tunable parameter {name!r}", did_you_mean(name, tunable))
            continue
        for index, value, strict in _sampled_values(domain):
            problem = _field_problem(model, name, value, strict)
            if problem is None:
                continue
            message, kind = problem
            wrong_type = strict and kind == "int_type"
            yield SpecError(spec.file, spec.line_of(*SPACE, name, domain.kind, index),
                            ".".join(map(str, (*SPACE, name, domain.kind, index))),
                            f"{domain.kind} value {value!r} is not a valid {name!r}: {message}",
                            "it takes whole numbers: search it with randint or choice" if wrong_type else "")
            if wrong_type:
                break  # the other bound has the same problem: one mistake, one error


def _sampled_values(domain: SearchDomain) -> list[tuple[int, Any, bool | None]]:
    """(index, value, strict) for each value that bounds what the search samples.

    Ray hands a trial a choice's values as written and a randint's integers, but uniform and loguniform
    draw fractions: their bounds are checked strictly as floats, so an integer param refuses them.
    """
    if domain.kind == "choice":
        return [(i, value, None) for i, value in enumerate(domain.args)]
    strict = None if domain.kind == "randint" else True
    return [(i, value, strict) for i, value in enumerate(domain.args)]


def _field_problem(model: type[BaseModel], name: str, value: Any, strict: bool | None) -> tuple[str, str] | None:
    """Why `value` is not valid for the param `name` (message, pydantic's error type), or None when it is."""
    try:
        model.model_validate({name: value}, strict=strict)
    except ValidationError as exc:
        mine = [err for err in exc.errors(include_url=False) if tuple(err["loc"])[:1] == (name,)]
        if mine:
            return mine[0]["msg"].removeprefix("Value error, "), mine[0]["type"]
    return None
