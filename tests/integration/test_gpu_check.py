"""The GPU check's code paths on CPU (`--device cpu --tiny`): plain torch, ferry's Train path through a real
local Ray (TorchTrainer, use_gpu=False) and ferry's Tune path, with the same timing and verdict as on a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "benchmarks" / "gpu" / "check.py"


def test_tiny_cpu_run_measures_every_path(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(CHECK), "--device", "cpu", "--tiny", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads((tmp_path / "gpu-check.json").read_text())
    assert result["mode"] == "cpu" and result["passed"]
    assert result["train"]["devices"] == ["cpu"] and result["train"]["epochs"] == result["profile"]["epochs"]
    assert result["plain"]["samples_per_s"] > 0 and result["train"]["samples_per_s"] > 0
    trials = result["tune"]["trials"]
    assert len(trials) == result["profile"]["trials"] == 2
    assert {t["device"] for t in trials} == {"cpu"} and all(t["samples_per_s"] > 0 for t in trials)
    assert 1 <= result["tune"]["max_concurrent"] <= 2
    assert "GPU check passed" in proc.stdout


def test_without_cuda_the_gpu_run_says_so(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = subprocess.run([sys.executable, str(CHECK), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert "no CUDA device: this check needs a GPU" in proc.stderr
    assert json.loads((tmp_path / "gpu-check.json").read_text())["passed"] is False
