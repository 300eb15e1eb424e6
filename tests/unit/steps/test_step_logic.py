"""Pure pieces of the steps: evaluation gates, search-space mapping, typed best params, outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from ferry.adapters.registry_port import RegistryUnavailable
from ferry.contract.errors import StepFailed, TransientStepError
from ferry.settings import Settings
from ferry.spec import load_specs
from ferry.spec.models import EvaluationSpec, SearchDomain
from ferry.steps.context import _as_text, build_context, read_spec
from ferry.steps.evaluate import judge
from ferry.steps.tune import _typed, search_space

ROOT = Path(__file__).resolve().parents[3]


def evaluation(**kwargs) -> EvaluationSpec:
    return EvaluationSpec.model_validate(kwargs)


def test_gates_and_champion() -> None:
    spec = evaluation(gates=[{"metric": "auc_roc", "min": 0.7}],
                      beat_champion={"metric": "average_precision", "min_delta": 0.01})
    assert judge(spec, {"auc_roc": 0.8, "average_precision": 0.5}, None) == (True, "all gates passed")
    passed, reason = judge(spec, {"auc_roc": 0.6, "average_precision": 0.5}, None)
    assert not passed and "gate auc_roc" in reason
    passed, reason = judge(spec, {"auc_roc": 0.8, "average_precision": 0.5}, {"average_precision": 0.495})
    assert not passed and "does not beat the champion" in reason
    assert judge(spec, {"auc_roc": 0.8, "average_precision": 0.52}, {"average_precision": 0.5})[0]


def test_nan_metric_fails_gate() -> None:
    spec = evaluation(gates=[{"metric": "auc_roc", "min": 0.0}])
    assert not judge(spec, {"auc_roc": math.nan}, None)[0]
    assert not judge(spec, {}, None)[0]


def test_search_space_maps_to_ray_domains() -> None:
    from ray.tune.search.sample import Categorical, Float, Integer

    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    tune_spec = specs[0].model.spec.training.tune.model_copy(update={"space": {
        "lr": SearchDomain(loguniform=(1e-4, 1e-2)), "units": SearchDomain(randint=(2, 4)),
        "drop": SearchDomain(uniform=(0.0, 0.5)), "act": SearchDomain(choice=["relu", "tanh"])}})
    space = search_space(tune_spec)
    assert isinstance(space["lr"], Float) and isinstance(space["drop"], Float)
    assert isinstance(space["units"], Integer) and space["units"].upper == 5  # inclusive spec bound
    assert isinstance(space["act"], Categorical)


def test_best_params_are_typed_back() -> None:
    assert _typed("3", SearchDomain(randint=(1, 5))) == 3
    assert _typed("64", SearchDomain(choice=[32, 64])) == 64
    assert _typed("0.01", SearchDomain(loguniform=(1e-4, 1.0))) == 0.01


def test_output_text() -> None:
    assert _as_text(True) == "true" and _as_text(0.123456789) == "0.123457" and _as_text(3) == "3"


def test_read_spec_relative_to_home_and_inline(tmp_path: Path) -> None:
    settings = Settings(home=ROOT)
    model = read_spec("gitops/rendered/local/fraud-detector/spec.json", settings)
    assert model.metadata.name == "fraud-detector"
    assert read_spec(model.model_dump_json(), settings) == model
    with pytest.raises(StepFailed, match="cannot read"):
        read_spec("missing.json", Settings(home=tmp_path))


def test_hash_mismatch_is_refused() -> None:
    with pytest.raises(StepFailed, match="spec changed under a running Workflow"):
        build_context("data", "gitops/rendered/local/fraud-detector/spec.json", "wf", "0000000000",
                      Settings(home=ROOT))


@pytest.mark.parametrize("error", [ConnectionError("refused"), RegistryUnavailable("MLflow at x is unavailable")])
def test_an_unreachable_service_is_a_transient_step_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            error: Exception) -> None:
    from ferry.steps import runner

    def down(ctx: object) -> None:
        raise error

    monkeypatch.setattr(runner, "step_function", lambda step: down)
    with pytest.raises(TransientStepError, match="evaluate: cannot reach a service"):
        runner.run_step("evaluate", "gitops/rendered/local/fraud-detector/spec.json", "wf", None,
                        Settings(home=ROOT, outputs_dir=tmp_path))


def test_every_step_runs_from_its_own_module() -> None:
    from ferry.contract import names
    from ferry.steps import runner

    assert set(runner.STEP_MODULES) == set(names.STEPS)
    assert all(callable(runner.step_function(step)) for step in names.STEPS)


@pytest.mark.parametrize("step", ["data", "evaluate", "rollout"])
def test_a_step_that_needs_no_torch_does_not_import_it(step: str) -> None:
    """Each step is a new process (a pod on a cluster): importing torch costs it ~1.5 s of CPU before any work."""
    import subprocess
    import sys

    probe = ("import sys; from ferry.steps.runner import step_function; "
             f"step_function({step!r}); print('torch' in sys.modules, 'ferry.steps.register' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["False", "False"]


def test_the_cli_a_step_runs_under_does_not_import_hera() -> None:
    """Every step process starts as `ferry step ...`: hera (Argo's models, 0.4 s) is for rendering only."""
    import subprocess
    import sys

    probe = ("import sys; import ferry.cli.app; from ferry.steps.runner import STEP_MODULES, step_function; "
             "[step_function(step) for step in STEP_MODULES]; print('hera' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split() == ["False"]


def test_steps_refuse_params_the_workload_does_not_accept() -> None:
    """A spec rendered against another version of the workload fails the step before Ray, field named."""
    from types import SimpleNamespace

    from ferry.adapters.workloads import load_workload
    from ferry.steps.params import data_params, training_params

    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    model = specs[0].model
    ctx = SimpleNamespace(spec=model, workload=load_workload(model.spec.workload))
    assert data_params(ctx).customers == model.spec.data.params["customers"]
    tuned = training_params(ctx, {**model.spec.training.params, "hidden": "128"})
    assert tuned.model_dump(exclude_unset=True) == {"hidden": 128, "lr": 0.003, "dropout": 0.1}
    with pytest.raises(StepFailed, match=r"spec\.training\.params\.hidden: Input should be greater"):
        training_params(ctx, {"hidden": -3})
    bad = model.model_copy(update={"spec": model.spec.model_copy(update={"data": model.spec.data.model_copy(
        update={"params": {"customers": -5}})})})
    with pytest.raises(StepFailed, match=r"spec\.data\.params\.customers"):
        data_params(SimpleNamespace(spec=bad, workload=ctx.workload))


def test_a_log_window_ends_at_midnight_a_label_delay_before_the_newest_event() -> None:
    from datetime import date, datetime

    from ferry.spec.models import LogWindow
    from ferry.steps.data import resolved_data
    from ferry.steps.log_window import window_bounds

    window = LogWindow(days=21, label_delay_days=7)
    newest = datetime(2018, 9, 10, 14, 5)
    assert window_bounds(newest, newest, window) == (date(2018, 8, 13), date(2018, 9, 3))
    # Every trigger on one day reads the same window; the next day's moves it by one.
    assert window_bounds(datetime(2018, 9, 10), newest, window) == window_bounds(
        datetime(2018, 9, 10, 23, 59), newest, window)
    assert window_bounds(datetime(2018, 9, 11), newest, window)[0] == date(2018, 8, 14)
    assert window_bounds(newest, newest, LogWindow(days=1, label_delay_days=0)) == (
        date(2018, 9, 9), date(2018, 9, 10))
    # A far-off event (a smoke test's payment) or lagging labels: the window ends where the labels do.
    assert window_bounds(datetime(2019, 1, 1), datetime(2018, 8, 20, 9), window) == (
        date(2018, 7, 30), date(2018, 8, 20))

    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    data = specs[0].model.spec.data.model_copy(update={"source": "log", "window": window, "split": (
        specs[0].model.spec.data.split.model_copy(update={"train_start": None}))})
    assert resolved_data(data, "2018-08-13/2018-09-03").split.train_start == date(2018, 8, 13)
    simulated = specs[0].model.spec.data
    assert resolved_data(simulated, None) is simulated
