"""`ferry up --watch` reacts to commits touching gitops/models, and only retrains what plan says."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ferry.local import reconcile
from ferry.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def git(home: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(home), "-c", "user.email=t@t", "-c", "user.name=t", *args],
                   check=True, capture_output=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "gitops/models", tmp_path / "gitops/models")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-qm", "base")
    return tmp_path


def edit_and_commit(home: Path, old: str, new: str, file: str = "fraud-detector.yaml") -> None:
    path = home / "gitops/models" / file
    path.write_text(path.read_text().replace(old, new))
    git(home, "commit", "-qam", f"{old} -> {new}")


def test_changed_models_follow_the_plan(home: Path) -> None:
    base = subprocess.run(["git", "-C", str(home), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    edit_and_commit(home, "max_batch_size: 32", "max_batch_size: 16")
    assert reconcile._changed_models(home, base) == []
    edit_and_commit(home, "epochs: 6", "epochs: 7")
    assert reconcile._changed_models(home, base) == ["fraud-detector"]


def test_watch_ignores_serving_only_commits(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cycles: list[tuple[str, object]] = []
    ran: list[object] = []
    monkeypatch.setattr(reconcile, "up", lambda *a, **k: ran.append(a))  # must not be called

    committed: list[bool] = []

    def commit_then_sleep(seconds: float) -> None:
        if not committed:
            committed.append(True)
            edit_and_commit(home, "wait_ms: 5", "wait_ms: 4")

    monkeypatch.setattr(reconcile.time, "sleep", commit_then_sleep)
    reconcile.watch(Settings(home=home), 0.0, 2, lambda head, result: cycles.append((head, result)))
    assert len(cycles) == 1 and cycles[0][1] is None and ran == []


def test_watch_reconciles_a_retrain_commit(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr(reconcile, "up", lambda settings, models, **k: calls.append(list(models)) or "result")
    committed: list[bool] = []

    def commit_once(seconds: float) -> None:
        if not committed:
            committed.append(True)
            edit_and_commit(home, "epochs: 3", "epochs: 4", "fraud-detector-lite.yaml")

    monkeypatch.setattr(reconcile.time, "sleep", commit_once)
    reconcile.watch(Settings(home=home), 0.0, 2, lambda head, result: None)
    assert calls == [["fraud-detector-lite"]]
