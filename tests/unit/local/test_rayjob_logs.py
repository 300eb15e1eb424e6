"""The step log of a Ray job: the last save after the job ended outlasts a head that times out once."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.local.engine import rayjobs


class FlakyLogs:
    def __init__(self, failures: int, text: str) -> None:
        self.failures, self.text, self.calls = failures, text, 0

    def get_job_logs(self, job_id: str) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise ConnectionError("read timed out")
        return self.text


def _save(tmp_path: Path, client: Any, tries: int) -> str:
    log = tmp_path / "tune.log"
    log.write_text("Ray job x (submitted): ferry step tune\nstale part\n")
    offset = len("Ray job x (submitted): ferry step tune\n")
    rayjobs._save_logs(client, SimpleNamespace(log_path=log), "x", offset, tries=tries)  # type: ignore[arg-type]
    return log.read_text()


def test_the_final_save_retries_and_keeps_the_whole_driver_log(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rayjobs, "POLL_S", 0.0)
    client = FlakyLogs(failures=2, text="trial output\nferry.step.timing {}\n")
    assert _save(tmp_path, client, tries=rayjobs.FINAL_LOG_TRIES) == (
        "Ray job x (submitted): ferry step tune\ntrial output\nferry.step.timing {}\n")
    assert client.calls == 3


def test_a_refresh_that_fails_leaves_the_last_saved_log(tmp_path: Path) -> None:
    client = FlakyLogs(failures=1, text="new\n")
    assert _save(tmp_path, client, tries=1) == "Ray job x (submitted): ferry step tune\nstale part\n"
    assert client.calls == 1
