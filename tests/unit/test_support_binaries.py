"""tests/support/binaries.py: commands come from the project's environment, and a missing one fails under CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from tests.support import binaries
from tests.support.binaries import DEBIAN_PACKAGES, dev_module, system_command, venv_command

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def venv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in environment: this interpreter 'lives' in tmp/venv/bin, and PATH holds another `ray`."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "ray").write_text("#!/bin/sh\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "ray").write_text("#!/bin/sh\n")
    (elsewhere / "ray").chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(bin_dir / "python"))
    monkeypatch.setenv("PATH", str(elsewhere))
    return bin_dir


@pytest.mark.parametrize(("value", "expected"), [("true", True), ("1", True), ("yes", True), ("", False),
                                                  ("false", False), ("0", False)])
def test_ci_is_read_like_the_ci_services_set_it(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("CI", value)
    assert binaries.in_ci() is expected


def test_venv_command_is_the_one_beside_the_interpreter_not_on_path(venv: Path) -> None:
    assert venv_command("ray") == str(venv / "ray")


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_venv_command_fails_under_ci_and_skips_elsewhere(venv: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     ci: str, outcome: type[BaseException]) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"mlflow is not installed in .*venv/bin: run `./task setup`"):
        venv_command("mlflow")


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)])
def test_a_missing_system_command_names_its_package(venv: Path, monkeypatch: pytest.MonkeyPatch, ci: str,
                                                    outcome: type[BaseException]) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match=r"sudo apt-get install prometheus-alertmanager"):
        system_command("amtool")


def test_a_system_command_comes_from_path(venv: Path) -> None:
    assert system_command("ray") == str(venv.parent.parent / "elsewhere" / "ray")  # any name on PATH will do


def test_a_missing_dev_module_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"no_such_module_here is not installed: run `./task setup`"):
        dev_module("no_such_module_here")


def test_every_debian_package_is_installed_by_the_ci_script() -> None:
    script = (ROOT / ".ci" / "install-debian-packages.sh").read_text()
    for binary, package in DEBIAN_PACKAGES.items():
        assert f"[{binary}]={package}" in script, f".ci/install-debian-packages.sh must install {package}"
