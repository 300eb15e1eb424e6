"""The CLI in-process: exit codes and messages for validate, render, plan and schema."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from tests.support.checkout import copy_image_inputs
from typer.testing import CliRunner

from ferry.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copytree(ROOT / "gitops/models", tmp_path / "gitops/models")
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    return tmp_path


def test_validate_ok(home: Path) -> None:
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 0, result.output
    assert "3 model(s) valid" in result.output


def test_validate_reports_every_error_with_location(home: Path) -> None:
    spec = home / "gitops/models/fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("epochs: 6", "epocs: 6"))
    (home / "gitops/models/broken.yaml").write_bytes(b"\x00\x01")
    result = runner.invoke(app, ["validate"])
    assert result.exit_code == 1
    assert "fraud-detector.yaml:" in result.output and "did you mean 'epochs'" in result.output
    assert "broken.yaml" in result.output and "binary" in result.output
    assert "Traceback" not in result.output


def test_validate_missing_path(home: Path) -> None:
    result = runner.invoke(app, ["validate", str(home / "nope.yaml")])
    assert result.exit_code == 1 and "no such file" in result.output


def test_render_then_check(home: Path) -> None:
    copy_image_inputs(home)
    assert runner.invoke(app, ["render", "--env", "prod"]).exit_code == 0
    assert runner.invoke(app, ["render", "--env", "prod", "--check"]).exit_code == 0
    spec = home / "gitops/models/fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("epochs: 6", "epochs: 8"))
    stale = runner.invoke(app, ["render", "--env", "prod", "--check"])
    assert stale.exit_code == 1 and "epochs" in stale.output
    assert (home / "gitops/rendered/prod/fraud-detector/spec-configmap.yaml").exists()


def test_prod_render_needs_the_image_build_inputs(home: Path) -> None:
    result = runner.invoke(app, ["render", "--env", "prod"])
    assert result.exit_code == 1
    assert "platform/deploy/Dockerfile is not in" in result.output and "FERRY_HOME" in result.output
    assert runner.invoke(app, ["render", "--env", "local"]).exit_code == 0  # local mode runs no image


def test_render_removes_objects_of_deleted_model(home: Path) -> None:
    assert runner.invoke(app, ["render", "--env", "local"]).exit_code == 0
    (home / "gitops/models/fraud-detector-lite.yaml").unlink()
    result = runner.invoke(app, ["render", "--env", "local"])
    assert "removed gitops/rendered/local/fraud-detector-lite/workflow.yaml" in result.output


def git(home: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(home), *args], check=True, capture_output=True)


def test_plan_against_git_ref(home: Path) -> None:
    git(home, "init", "-q", "-b", "main")
    git(home, "-c", "user.email=a@b", "-c", "user.name=t", "add", ".")
    git(home, "-c", "user.email=a@b", "-c", "user.name=t", "commit", "-qm", "base")
    spec = home / "gitops/models/fraud-detector.yaml"
    spec.write_text(spec.read_text().replace("epochs: 6", "epochs: 8"))
    lite = home / "gitops/models/fraud-detector-lite.yaml"
    lite.write_text(lite.read_text().replace("wait_ms: 2", "wait_ms: 3"))
    text = runner.invoke(app, ["plan", "--base", "main"])
    assert text.exit_code == 0, text.output
    assert "fraud-detector: retrain" in text.output and "spec.training.epochs: 6 → 8" in text.output
    assert "fraud-detector-lite: redeploy" in text.output
    markdown = runner.invoke(app, ["plan", "--base", "main", "--format", "markdown"])
    assert "<!-- ferry-plan -->" in markdown.output and "| 🔁 `fraud-detector` | **retrain**" in markdown.output
    bad_ref = runner.invoke(app, ["plan", "--base", "no-such-ref"])
    assert bad_ref.exit_code != 0


def test_schema_check(home: Path) -> None:
    assert runner.invoke(app, ["schema", "--check"]).exit_code == 1
    assert runner.invoke(app, ["schema"]).exit_code == 0
    assert runner.invoke(app, ["schema", "--check"]).exit_code == 0
