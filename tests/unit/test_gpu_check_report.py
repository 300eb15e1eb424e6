"""The GPU check's pure parts (benchmarks/gpu/report.py) and the files its one `run` call depends on."""

from __future__ import annotations

import dataclasses
import importlib.metadata as md
import subprocess
from pathlib import Path

import pytest
from benchmarks.gpu import prepare
from benchmarks.gpu.report import (
    FULL,
    RUN_CARRY,
    RUN_COMMAND,
    TARGET_RATIO,
    checks,
    max_overlap,
    render_doc,
    steady_rate,
    tune_summary,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "benchmarks" / "gpu.md"


def _row(trial: str, start: float, *ends: float, device: str = "cuda:0") -> list[dict[str, object]]:
    return [{"trial": trial, "start": start, "wall_time": end, "device": device, "device_name": "NVIDIA H200",
             "cuda_visible_devices": "0"} for end in ends]


def _result(ratio: float, train_device: str = "cuda:0", trial_device: str = "cuda:0", overlap: int = 4,
            trials: int = 4) -> dict[str, object]:
    tune = {"trials": [{"device": trial_device}] * trials, "requested_trials": 4, "max_concurrent": overlap}
    return {"mode": "gpu", "ratio": ratio, "train": {"devices": [train_device]}, "tune": tune}


def test_steady_rate_skips_the_first_epoch() -> None:
    # 3 epochs end at 10, 12, 14: two steady epochs of 1000 samples in 4 s.
    assert steady_rate([10.0, 12.0, 14.0], 1000) == pytest.approx(500.0)


@pytest.mark.parametrize(("ends", "problem"), [([1.0], "at least 2"), ([2.0, 2.0], "must increase")])
def test_steady_rate_refuses_what_it_cannot_measure(ends: list[float], problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        steady_rate(ends, 10)


def test_max_overlap_counts_intervals_open_together() -> None:
    assert max_overlap([(0, 10), (1, 5), (2, 3), (6, 9)]) == 3
    assert max_overlap([(0, 1), (1, 2), (2, 3)]) == 1  # touching ends do not overlap
    assert max_overlap([]) == 0


def test_tune_summary_per_trial_rates_and_concurrency() -> None:
    rows = _row("a", 0.0, 2.0, 4.0, 6.0) + _row("b", 1.0, 3.0, 5.0, 7.0) + _row("c", 8.0, 9.0, 10.0)
    summary = tune_summary(rows, 100, 0.25)
    assert [t["trial"] for t in summary["trials"]] == ["a", "b", "c"]
    assert summary["trials"][0]["samples_per_s"] == pytest.approx(50.0)
    assert summary["trials"][0]["gpu_fraction"] == 0.25
    assert summary["max_concurrent"] == 2
    # 3 + 3 + 2 epochs of 100 samples between the first start (0) and the last end (10).
    assert summary["aggregate_samples_per_s"] == pytest.approx(80.0)


def test_tune_summary_without_trials_says_where_to_look() -> None:
    with pytest.raises(ValueError, match="trial errors"):
        tune_summary([], 100, 0.25)


def test_checks_pass_at_the_target_and_fail_below_it() -> None:
    assert all(checks(_result(TARGET_RATIO)).values())
    assert checks(_result(TARGET_RATIO - 0.01)) == {**checks(_result(TARGET_RATIO)),
                                                    "train_ratio_at_least_target": False}


@pytest.mark.parametrize(("kwargs", "failed"), [
    ({"train_device": "cpu"}, "train_on_requested_device"),
    ({"trial_device": "cpu"}, "tune_trials_on_requested_device"),  # a trial that fell back to CPU
    ({"overlap": 1}, "tune_trials_shared_the_gpu"),
    ({"trials": 3}, "tune_all_trials_finished"),
])
def test_checks_name_what_failed(kwargs: dict[str, object], failed: str) -> None:
    found = checks(_result(1.0, **kwargs))  # type: ignore[arg-type]
    assert [name for name, ok in found.items() if not ok] == [failed]


def test_a_gpu_result_is_written_with_its_figures_and_verdict() -> None:
    trials = [{"trial": f"t{i}", "device": "cuda:0", "device_name": "NVIDIA H200", "gpu_fraction": 0.25,
               "samples_per_s": 1_000_000.0} for i in range(4)]
    result = {**_result(0.8), "when": "2026-12-02 22:00 UTC", "device_name": "NVIDIA H200", "torch": "2.11.0",
              "ray": "2.60.0", "python": "3.12.3", "stage_seconds": {"train": 40.0},
              "plain": {"before": 3_000_000.0, "after": 2_900_000.0, "device": "cuda"},
              "train": {"samples_per_s": 2_400_000.0, "devices": ["cuda:0"]},
              "tune": {"trials": trials, "requested_trials": 4, "max_concurrent": 4,
                       "aggregate_samples_per_s": 3_500_000.0}}
    result["checks"] = checks(result)
    result["passed"] = all(result["checks"].values())
    page = render_doc(result, dataclasses.asdict(FULL))
    assert "| ferry Train (1 worker, 1 GPU) | 2,400,000 | cuda:0 |" in page
    assert "| ferry Tune trial t3 (0.25 GPU) | 1,000,000 | cuda:0 |" in page
    assert "**0.800** (target at least 0.9)" in page
    assert "Verdict: **FAILED** (failed: train_ratio_at_least_target)." in page
    assert "Not yet run" not in page


def test_the_committed_page_is_what_the_check_writes() -> None:
    """Until a GPU run replaces it the page is exactly the `--no-gpu` one; after, its method and how-to-run
    sections still match the code (the results above them are measured)."""
    text = DOC.read_text()
    pending = render_doc(None, dataclasses.asdict(FULL))
    if "Not yet run on a GPU" in text:
        assert text == pending, "regenerate: python benchmarks/gpu/check.py --no-gpu --doc docs/benchmarks/gpu.md"
    else:
        tail = pending[pending.index("## What it measures"):]
        assert text.endswith(tail), "docs/benchmarks/gpu.md was written by an older check; run it again on a GPU"


def test_the_run_call_names_files_that_exist_and_a_carry_git_ignores() -> None:
    assert (ROOT / RUN_COMMAND.split()[-1]).is_file()
    for path in RUN_CARRY:
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert ignored.returncode == 0, f"{path} must be git-ignored, or the run call would send it twice"
    assert prepare.ARCHIVE.parent == ROOT / RUN_CARRY[0]


def test_every_carried_package_is_in_this_venv() -> None:
    """prepare.py carries this venv's versions; a name it cannot pin would stop it before any download."""
    for name in prepare.PACKAGES:
        assert md.version(name), name
