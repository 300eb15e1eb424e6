"""`ferry alerts` in-process (typer's CliRunner) over a receiver database filled through the receiver app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.unit.local.test_receiver import FakeRetrain, alert, drift, payload, wait_for
from typer.testing import CliRunner

from ferry.cli.app import app
from ferry.local.alerts.receiver import build_app
from ferry.local.alerts.store import AlertStore
from ferry.settings import Settings

runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    return tmp_path


def test_no_alerts_yet(home: Path) -> None:
    result = runner.invoke(app, ["alerts"])
    assert result.exit_code == 0 and "no alerts recorded" in result.output
    assert json.loads(runner.invoke(app, ["alerts", "--json"]).output) == []


def test_table_json_and_filters(home: Path) -> None:
    retrain = FakeRetrain()
    retrain.release.set()
    settings = Settings(home=home)
    with TestClient(build_app(settings, retrain=retrain)) as client:
        client.post("/alerts", json=payload(alert(fingerprint="e1")))
        client.post("/alerts", json=payload(alert(fingerprint="r1", model="lite", status="resolved"),
                                            status="resolved"))
        client.post("/alerts", json=payload(drift()))
        store = AlertStore.open(settings)
        wait_for(lambda: any(a.retraining and a.retraining[0]["phase"] == "Succeeded" for a in store.alerts()))
    table = runner.invoke(app, ["alerts"])
    assert table.exit_code == 0, table.output
    for text in ("FerryModelErrorBudgetBurn", "FerryModelDriftHigh", "firing", "resolved", "page", "risk",
                 "https://example.invalid/runbook.md", "fraud-drift-1"):
        assert text in table.output, text
    firing = json.loads(runner.invoke(app, ["alerts", "--firing", "--json"]).output)
    assert {a["fingerprint"] for a in firing} == {"e1", "d1"}
    lite = json.loads(runner.invoke(app, ["alerts", "--model", "lite", "--json"]).output)
    assert [(a["fingerprint"], a["status"], a["ends_at"]) for a in lite] == [("r1", "resolved", "2026-11-26T15:10:00Z")]
    [with_run] = [a for a in firing if a["fingerprint"] == "d1"]
    assert with_run["retraining"][0]["workflow"] == "fraud-drift-1"
    assert runner.invoke(app, ["alerts", "--limit", "0"]).exit_code != 0
