"""What a person sees when a command fails: a FerryError's message and exit code, one line for a bug in ferry,
never a traceback; typer's own output for usage errors. In-process, through typer's CliRunner."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

import ferry
from ferry.cli.app import app
from ferry.contract.errors import FerryError
from ferry.contract.names import EXIT_TRANSIENT
from ferry.local.errors import LocalError
from ferry.local.supervisor import services

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
# The packages whose every exception is a FerryError (adapters/registry*, prometheus, rollout and serving
# are converted with the registry seam).
ROOTED = ("ferry.spec", "ferry.local", "ferry.steps", "ferry.stats", "ferry.adapters.git", "ferry.adapters.workloads",
          "ferry.adapters.argo_server", "ferry.workspace", "ferry.settings", "ferry.contract.errors")


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FERRY_HOME", str(tmp_path))
    monkeypatch.delenv("FERRY_DEBUG", raising=False)
    return tmp_path


def _status_raises(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> None:
    def fail(settings: object) -> None:
        raise exc

    monkeypatch.setattr(services, "service_status", fail)


def test_a_ferry_error_prints_its_message_and_exits_with_its_code(monkeypatch: pytest.MonkeyPatch) -> None:
    _status_raises(monkeypatch, LocalError("port 5000 on 127.0.0.1 (mlflow http) is already in use; stop that "
                                           "process or choose another port with FERRY_MLFLOW_PORT"))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert result.output.splitlines() == ["error port 5000 on 127.0.0.1 (mlflow http) is already in use; stop that "
                                          "process or choose another port with FERRY_MLFLOW_PORT"]

    class Busy(FerryError):
        exit_code = 3

    _status_raises(monkeypatch, Busy("[busy] try later"))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 3 and result.output == "error [busy] try later\n"  # no markup read into it


def test_an_unexpected_error_is_one_line_naming_ferry_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    _status_raises(monkeypatch, KeyError("ray"))
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert result.output == ("ferry hit an unexpected error: KeyError: 'ray'; rerun with FERRY_DEBUG=1 for the "
                             "traceback\n")
    _status_raises(monkeypatch, RuntimeError("first line\n  second line"))
    assert "RuntimeError: first line second line;" in runner.invoke(app, ["status"]).output
    monkeypatch.setenv("FERRY_DEBUG", "1")
    debug = runner.invoke(app, ["status"])
    assert isinstance(debug.exception, RuntimeError)  # let through: python prints the traceback


def test_ctrl_c_exits_130_with_a_short_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _status_raises(monkeypatch, KeyboardInterrupt())
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 130 and result.output == "interrupted\n"


def test_usage_errors_keep_typers_output() -> None:
    result = runner.invoke(app, ["runs", "--bogus"])
    assert result.exit_code == 2 and "No such option: --bogus" in result.output
    assert "unexpected" not in result.output


def test_a_bad_setting_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_MLFLOW_PORT", "five thousand")
    result = runner.invoke(app, ["status"])
    assert result.exit_code == 1
    assert result.output.startswith("error FERRY_MLFLOW_PORT='five thousand': Input should be a valid integer")
    assert "Fix or unset the variable" in result.output


def test_spec_errors_are_listed_one_per_line(_home: Path) -> None:
    models = _home / "gitops" / "models"
    models.mkdir(parents=True)
    spec = (ROOT / "gitops/models/fraud-detector.yaml").read_text()
    (models / "fraud-detector.yaml").write_text(spec.replace("  workload:", "  wokload:", 1))
    (models / "other.yaml").write_text("apiVersion: ferry.dev/v1\nkind: Model\n")
    result = runner.invoke(app, ["render"])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[-1].endswith("error(s): fix the spec, then run again")
    assert all(line.startswith("error ") for line in lines[:-1]) and len(lines) >= 3
    assert any("fraud-detector.yaml" in line and "wokload" in line for line in lines), lines


def test_a_missing_local_run_is_a_ferry_error() -> None:
    result = runner.invoke(app, ["runs", "show", "fraud-detector-0000000000"])
    assert result.exit_code == 1
    assert result.output == "error no local run named 'fraud-detector-0000000000' (runs: none yet)\n"


def test_plan_against_a_ref_that_does_not_exist(_home: Path) -> None:
    subprocess.run(["git", "init", "-q", str(_home)], check=True)
    (_home / "gitops" / "models").mkdir(parents=True)
    (_home / "gitops/models/fraud-detector.yaml").write_text((ROOT / "gitops/models/fraud-detector.yaml").read_text())
    result = runner.invoke(app, ["plan", "--base", "origin/nowhere"])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("error 'origin/nowhere' is not a commit in") and "git fetch origin" in line


def test_a_step_that_cannot_read_its_spec_fails_with_exit_1(_home: Path) -> None:
    result = runner.invoke(app, ["step", "data", "--spec", "nowhere.json", "--run", "wf"])
    assert result.exit_code == 1
    assert result.output.startswith("error cannot read the rendered spec"), result.output


def test_a_transient_step_error_exits_75(monkeypatch: pytest.MonkeyPatch) -> None:
    from ferry.contract.errors import TransientStepError
    from ferry.steps import runner as steps

    def unreachable(*args: object) -> None:
        raise TransientStepError("data: cannot reach a service (connection refused); will be retried")

    monkeypatch.setattr(steps, "run_step", unreachable)
    result = runner.invoke(app, ["step", "data", "--spec", "s.json", "--run", "wf"])
    assert result.exit_code == EXIT_TRANSIENT == TransientStepError.exit_code
    assert "cannot reach a service" in result.output


def _modules(name: str) -> list[ModuleType]:
    module = importlib.import_module(name)
    if not hasattr(module, "__path__"):
        return [module]
    return [module] + [importlib.import_module(info.name)
                       for info in pkgutil.walk_packages(module.__path__, f"{name}.")]


def test_every_exception_of_these_packages_is_a_ferry_error() -> None:
    found = {cls for name in ROOTED for module in _modules(name)
             for _, cls in inspect.getmembers(module, inspect.isclass)
             if issubclass(cls, Exception) and cls.__module__.startswith(name)}
    assert {cls.__name__ for cls in found} >= {"SpecInvalid", "YamlProblem", "LocalError", "Transient",
                                              "StepDeadlineExceeded", "StepFailed", "GitError", "ArgoServerError",
                                              "WorkloadNotFound", "BadReference", "SettingsInvalid"}
    assert [cls for cls in found if not issubclass(cls, FerryError)] == []
    assert ferry.stats.reference.BadReference.__mro__[1:3] == (FerryError, ValueError)
