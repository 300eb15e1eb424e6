"""`predict_once` and the deploy no-op check, without a server (httpx calls are faked)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ferry.serving import deploy
from ferry.serving.deploy import ServingError, predict_once


def fake(status: int, body: Any = None, error: Exception | None = None):
    def call(url: str, **kwargs: Any) -> httpx.Response:
        if error:
            raise error
        return httpx.Response(status, json=body, request=httpx.Request("POST", url))

    return call


def test_predict_once_returns_the_prediction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx, "post", fake(200, {"score": 0.1, "decision": False}))
    assert predict_once("http://127.0.0.1:1/m", {"customer_id": 1}) == {"score": 0.1, "decision": False}


def test_predict_once_explains_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    detail = [{"loc": ["body", "tx_amount"], "msg": "Field required", "type": "missing"}]
    monkeypatch.setattr(httpx, "post", fake(422, {"detail": detail}))
    with pytest.raises(ServingError, match=r"422.*tx_amount"):
        predict_once("http://127.0.0.1:1/m", {})
    monkeypatch.setattr(httpx, "post", fake(0, error=httpx.ConnectError("refused")))
    with pytest.raises(ServingError, match=r"no answer from http://127\.0\.0\.1:1/m/predict"):
        predict_once("http://127.0.0.1:1/m", {})


def test_fingerprint_of_a_missing_app_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(httpx, "get", fake(0, error=httpx.ConnectError("refused")))
    assert deploy._fingerprint("http://127.0.0.1:1/m") is None
    monkeypatch.setattr(httpx, "get", fake(200, {"fingerprint": "abc"}))
    assert deploy._fingerprint("http://127.0.0.1:1/m") == "abc"
