"""What a Ray Tune trial or Train worker process imports before its first epoch: Ray unpickles the trial wrapper
(ferry.steps.gpu) and the workload's training module in every new worker, so what they import is paid per
process (MLflow ~0.55 s, sklearn.metrics ~0.5-0.7 s on 2 cores; docs/benchmarks/hpo.md)."""

from __future__ import annotations

import json
import subprocess
import sys

TRIAL_MODULES = ("ferry.steps.gpu", "fraud_detection.workload", "fraud_detection.training")
NOT_IN_A_TRIAL = ("mlflow", "sklearn")


def test_a_trial_process_imports_neither_mlflow_nor_sklearn() -> None:
    # A fresh interpreter: this test process has imported everything already.
    code = (f"import importlib, json, sys\nfor name in {TRIAL_MODULES!r}: importlib.import_module(name)\n"
            f"print(json.dumps([m for m in {NOT_IN_A_TRIAL!r} if m in sys.modules]))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(found.stdout) == [], found.stdout
