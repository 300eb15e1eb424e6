"""`ferry replay`'s refusals, in-process: what a person sees before anything is sent (the replay itself runs
against a real endpoint in tests/integration/test_serving.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "gitops/models", tmp_path / "gitops/models")
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.setenv("FERRY_SERVE_PORT", "9")  # nothing listens there
    monkeypatch.delenv("FERRY_DEBUG", raising=False)
    return tmp_path


def test_an_unknown_model_names_the_models_there_are(home: Path) -> None:
    result = runner.invoke(app, ["replay", "no-such-model"])
    assert result.exit_code != 0 and "no spec for model(s) no-such-model" in result.output
    assert "fraud-detector" in result.output and "Traceback" not in result.output


def test_a_bad_param_names_it_before_anything_is_simulated(home: Path) -> None:
    result = runner.invoke(app, ["replay", "fraud-detector-lite", "--param", "customers=many"])
    assert result.exit_code != 0 and "bad --param" in result.output and "customers" in result.output
    result = runner.invoke(app, ["replay", "fraud-detector-lite", "--param", "customers"])
    assert result.exit_code == 2 and "KEY=VALUE" in result.output


def test_a_model_that_is_not_served_says_how_to_serve_it(home: Path) -> None:
    result = runner.invoke(app, ["replay", "fraud-detector-lite", "--param", "customers=20", "--param", "days=2",
                                 "--param", "terminals=40"])
    assert result.exit_code != 0 and "nothing answers at http://127.0.0.1:9/" in result.output
    assert "ferry up" in result.output and "Traceback" not in result.output


def test_the_recommender_replays_its_held_out_ratings_and_refuses_an_event_time_window(home: Path) -> None:
    result = runner.invoke(app, ["replay", "recommender", "--start", "2018-01-01"])
    assert result.exit_code != 0 and "--start and --days" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["replay", "recommender", "--param", "holdout_share=0.9"])
    assert result.exit_code != 0 and "bad --param" in result.output and "holdout_share" in result.output
    result = runner.invoke(app, ["replay", "recommender", "--limit", "10"])
    assert result.exit_code != 0 and "nothing answers at http://127.0.0.1:9/" in result.output
