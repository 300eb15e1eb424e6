"""Column-wise batch validation: it accepts exactly what the request model accepts, with the same values,
and anything else goes to pydantic, whose 422 names the row and the field."""

from __future__ import annotations

import json
import random
from typing import Any

import numpy as np
import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, field_validator
from tests.support.serving_fakes import transactions

from ferry.serving.columns import BatchReader, describe
from ferry.serving.service import WorkloadView
from fraud_detection.workload import FraudDetectionWorkload, Transaction

VIEW = WorkloadView.of(FraudDetectionWorkload())


def reader(max_rows: int = 300) -> BatchReader:
    return BatchReader(Transaction, VIEW.feature_names, VIEW.routing_key, max_rows)


def by_pydantic(body: bytes, max_rows: int = 300) -> Any:
    r = reader(max_rows)
    return r.from_models(r.validate_rows(body))


def test_a_clean_batch_takes_the_fast_path_with_pydantics_values() -> None:
    body = json.dumps(transactions(256)).encode()
    fast = reader()._fast(body)
    assert fast is not None and fast.features.dtype == np.float32 and fast.features.shape == (256, 15)
    slow = by_pydantic(body)
    assert np.array_equal(fast.features, slow.features) and keys_of(fast) == keys_of(slow)


ODD_VALUES: list[Any] = [True, False, "1.5", "7", -1, 1.5, 2.0, None, [1], {"a": 1}, 1e400, 10**30, 2, 0.5, 1e8]


def test_fast_path_never_accepts_what_pydantic_rejects_nor_changes_a_value() -> None:
    rng = random.Random(0)
    fields = list(Transaction.model_fields)
    fast_hits = 0
    for _ in range(400):
        rows = transactions(rng.randrange(1, 6))
        for _ in range(rng.randrange(1, 3)):
            row = rng.choice(rows)
            row[rng.choice(fields)] = rng.choice(ODD_VALUES)
        body = json.dumps(rows).encode()
        fast = reader()._fast(body)
        try:
            slow = by_pydantic(body)
        except RequestValidationError:
            assert fast is None, rows
            continue
        if fast is not None:
            fast_hits += 1
            assert np.array_equal(fast.features, slow.features) and keys_of(fast) == keys_of(slow), rows
    assert fast_hits > 20  # the comparison did exercise the fast path


def test_shape_problems_go_to_pydantic() -> None:
    r = reader(max_rows=3)
    rows = transactions(2)
    cases = [rows + [dict(rows[0])] * 2, [], {"rows": rows}, [rows[0], 5],
             [rows[0], {**rows[1], "surprise": 1}], [rows[0], {k: v for k, v in rows[1].items() if k != "tx_amount"}]]
    for case in cases:
        assert r._fast(json.dumps(case).encode()) is None, case
    assert r._fast(b"{not json") is None


def test_errors_name_the_row_and_the_field() -> None:
    rows = transactions(4)
    rows[2]["tx_amount"] = -5
    with pytest.raises(RequestValidationError) as caught:
        reader().read(json.dumps(rows).encode())
    assert [e["loc"] for e in caught.value.errors()] == [("body", 2, "tx_amount")]
    with pytest.raises(RequestValidationError) as too_many:
        reader(max_rows=3).read(json.dumps(rows).encode())
    assert "at most 3" in str(too_many.value.errors())
    with pytest.raises(RequestValidationError) as broken:
        reader().read(b"[{")
    assert broken.value.errors()[0]["type"] == "json_invalid"


def test_lax_values_pydantic_accepts_are_still_accepted() -> None:
    rows = transactions(2)
    rows[1]["tx_amount"] = "12.5"
    batch = reader().read(json.dumps(rows).encode())
    assert batch.features[1, VIEW.feature_names.index("tx_amount")] == 12.5


def test_models_the_fast_path_cannot_describe() -> None:
    class Loose(BaseModel):
        amount: float = Field(ge=0)

    class Named(BaseModel):
        model_config = ConfigDict(extra="forbid")
        name: str

    class Checked(BaseModel):
        model_config = ConfigDict(extra="forbid")
        amount: float

        @field_validator("amount")
        @classmethod
        def positive(cls, value: float) -> float:
            return value

    class Defaulted(BaseModel):
        model_config = ConfigDict(extra="forbid")
        amount: float = 0.0

    assert all(describe(model) is None for model in (Loose, Named, Checked, Defaulted))
    assert describe(Transaction) is not None


NON_FINITE = ["Infinity", "-Infinity", "NaN", "1e400"]  # JSON literals; 1e400 overflows to infinity


def _with_literal(rows: list[dict[str, Any]], row: int, field: str, literal: str) -> bytes:
    rows = [dict(r) for r in rows]
    rows[row][field] = "MARK"
    return json.dumps(rows).replace('"MARK"', literal).encode()


@pytest.mark.parametrize("literal", NON_FINITE)
def test_non_finite_values_are_422_naming_the_row_and_the_field(literal: str) -> None:
    field = "customer_id_avg_amount_30day_window"  # ge=0 only: unbounded above
    body = _with_literal(transactions(3), 1, field, literal)
    assert reader()._fast(body) is None
    with pytest.raises(RequestValidationError) as caught:
        reader().read(body)
    errors = caught.value.errors()
    assert [e["loc"] for e in errors] == [("body", 1, field)] and errors[0]["type"] == "finite_number"


def test_non_finite_values_are_refused_even_when_the_request_model_allows_them() -> None:
    class Permissive(BaseModel):
        model_config = ConfigDict(extra="forbid")  # allow_inf_nan defaults to True
        amount: float
        count: float = Field(ge=0)

    r = BatchReader(Permissive, ("amount", "count"), None, 10)
    assert r.read(b'[{"amount": 1.5, "count": 2}]').features.tolist() == [[1.5, 2.0]]
    with pytest.raises(RequestValidationError) as caught:
        r.read(b'[{"amount": 1, "count": 2}, {"amount": -Infinity, "count": Infinity}]')
    assert [e["loc"] for e in caught.value.errors()] == [("body", 1, "amount"), ("body", 1, "count")]
    assert {e["type"] for e in caught.value.errors()} == {"finite_number"}


def keys_of(batch: Any) -> list[Any] | None:
    """The routing keys as a list (the fast path hands an int64 key column over as an array)."""
    keys = batch.keys
    return keys.tolist() if isinstance(keys, np.ndarray) else keys
