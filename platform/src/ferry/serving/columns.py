"""Column-wise validation of `/predict/batch` bodies: one numpy pass per column instead of one pydantic
model per row.

A batch of 256 fraud rows validated row by row costs 256 model instances, then 4,000 `getattr` calls to
put them back into a matrix: more CPU than the model's forward pass. Here the body is parsed once
(pydantic-core's JSON parser), each column becomes one numpy array, and the request model's numeric
bounds (`ge`, `gt`, `le`, `lt`) are checked on whole columns at once.

The fast path only accepts what the request model would accept with the same values: every row an
object with exactly the model's fields, every value a JSON number of the field's kind (an int field
takes integers only), every bound met. Anything else, a malformed or unusual batch, goes to pydantic
(`validate_rows`), which either accepts it (lax coercions such as "1.5" for a float) or answers with its
own errors, each naming the row and the field (`loc: ["body", row, field]`), exactly as FastAPI would.
A request model the fast path cannot describe (non-numeric fields, defaults, validators, strict mode,
extra fields allowed) always takes the pydantic path.
Non-finite numbers (`Infinity`, `NaN`, a literal that overflows to infinity) never reach the model: the
fast path hands them to pydantic, and a batch whose rows pydantic accepted anyway (a request model that
allows them) is refused here with the same `finite_number` error, naming row and field.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import annotated_types
import numpy as np
import pydantic_core
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

BOUNDS: dict[type, tuple[str, Callable[[Any, Any], Any]]] = {
    annotated_types.Ge: ("ge", operator.ge), annotated_types.Gt: ("gt", operator.gt),
    annotated_types.Le: ("le", operator.le), annotated_types.Lt: ("lt", operator.lt)}


@dataclass(frozen=True)
class Column:
    name: str
    integer: bool
    bounds: tuple[tuple[Callable[[Any, Any], Any], float], ...]

    def values(self, rows: Sequence[dict[str, Any]]) -> np.ndarray | None:
        """The column as an array, or None when a value is not a plain number of the field's kind."""
        try:
            array = np.array([row[self.name] for row in rows])
        except (ValueError, TypeError, OverflowError):  # ragged nested lists, huge integers: pydantic decides
            return None
        if array.ndim != 1 or (array.dtype.kind != "i" and not (array.dtype.kind == "f" and not self.integer)):
            return None
        if array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
            return None
        if any(not bool(check(array, bound).all()) for check, bound in self.bounds):
            return None
        return array


@dataclass(frozen=True)
class Batch:
    """A validated batch: the routing keys (None without a routing key) and the float32 feature matrix."""

    keys: list[Any] | np.ndarray | None  # an int64 array when the key column is, so routing hashes it at once
    features: np.ndarray

    def __len__(self) -> int:
        return int(self.features.shape[0])


class BatchReader:
    def __init__(self, model: type[BaseModel], feature_names: Sequence[str], routing_key: str | None,
                 max_rows: int) -> None:
        self.model, self.feature_names, self.routing_key = model, tuple(feature_names), routing_key
        self.max_rows = max_rows
        self.columns = describe(model)
        self.fields = frozenset(model.model_fields)
        rows = Annotated[list[model], Field(min_length=1, max_length=max_rows)]  # type: ignore[valid-type]
        self._adapter: TypeAdapter[list[BaseModel]] = TypeAdapter(rows)

    def read(self, body: bytes) -> Batch:
        """The batch in `body`; raises RequestValidationError (a 422 naming row and field) when invalid."""
        fast = self._fast(body) if self.columns is not None else None
        return fast if fast is not None else self.from_models(self.validate_rows(body))

    def _fast(self, body: bytes) -> Batch | None:
        try:
            rows = pydantic_core.from_json(body)
        except ValueError:
            return None
        if not isinstance(rows, list) or not 1 <= len(rows) <= self.max_rows:
            return None
        fields = self.fields
        if not all(type(row) is dict and row.keys() == fields for row in rows):
            return None
        assert self.columns is not None
        arrays = {}
        for column in self.columns:
            values = column.values(rows)
            if values is None:
                return None
            arrays[column.name] = values
        features = np.empty((len(rows), len(self.feature_names)), dtype=np.float32)
        for j, name in enumerate(self.feature_names):
            features[:, j] = arrays[name]
        keys = _keys(arrays[self.routing_key]) if self.routing_key else None
        return Batch(keys, features)

    def validate_rows(self, body: bytes) -> list[BaseModel]:
        try:
            return self._adapter.validate_json(body)
        except ValidationError as exc:
            raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None

    def from_models(self, rows: Sequence[BaseModel]) -> Batch:
        names = self.feature_names
        values = np.array([[getattr(row, name) for name in names] for row in rows], dtype=np.float64)
        values = values.reshape(len(rows), len(names))
        refuse_non_finite(values, names)
        keys = [getattr(row, self.routing_key) for row in rows] if self.routing_key else None
        return Batch(keys, values.astype(np.float32))


def _keys(column: np.ndarray) -> list[Any] | np.ndarray:
    return column if column.dtype == np.int64 else column.tolist()


def refuse_non_finite(values: np.ndarray, names: Sequence[str]) -> None:
    """A 422 naming each row and field whose value is not a finite number."""
    bad = np.argwhere(~np.isfinite(values))
    if len(bad):
        raise RequestValidationError([
            {"type": "finite_number", "loc": ("body", int(row), names[int(col)]),
             "msg": "Input should be a finite number", "input": float(values[row, col])} for row, col in bad])


def describe(model: type[BaseModel]) -> tuple[Column, ...] | None:
    """The model's fields as numeric columns, or None when the fast path cannot stand in for pydantic."""
    config = model.model_config
    decorators = model.__pydantic_decorators__
    if config.get("extra") != "forbid" or config.get("strict") or decorators.field_validators \
            or decorators.model_validators or decorators.field_serializers:
        return None
    columns = []
    for name, info in model.model_fields.items():
        if info.annotation not in (int, float) or not info.is_required() or info.alias not in (None, name):
            return None
        bounds = []
        for item in info.metadata:
            if type(item) not in BOUNDS:
                return None
            attribute, check = BOUNDS[type(item)]
            bounds.append((check, float(getattr(item, attribute))))
        columns.append(Column(name, info.annotation is int, tuple(bounds)))
    return tuple(columns)


def openapi_body(model: type[BaseModel], max_rows: int) -> dict[str, Any]:
    """The request body `/predict/batch` documents (FastAPI cannot infer it from a raw-body handler)."""
    schema = {"type": "array", "items": {"$ref": f"#/components/schemas/{model.__name__}"}, "minItems": 1,
              "maxItems": max_rows, "title": "Body",
              "description": f"1 to {max_rows} rows (serving.limits.max_batch_rows)"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
