"""A tune or train step that asked for GPUs never runs on the CPU: it fails first, saying what it asked and found.

torch.cuda is monkeypatched: these tests run on CPU-only machines, where the real answer is always "no CUDA".
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from ferry.contract import names
from ferry.contract.names import EXIT_FAILED
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec
from ferry.steps import gpu, train, tune

ROOT = Path(__file__).resolve().parents[3]
TRAIN = gpu.GpuRequest("train", 1.0, "worker", "training.resources.gpus_per_worker", 2)


def _model(gpus_per_worker: float = 1.0, gpus_per_trial: float = 0.5) -> ModelSpec:
    model = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])[0][0].model
    training = model.spec.training
    assert training.tune is not None
    update = {"resources": training.resources.model_copy(update={"gpus_per_worker": gpus_per_worker}),
              "tune": training.tune.model_copy(update={"gpus_per_trial": gpus_per_trial})}
    return model.model_copy(update={"spec": model.spec.model_copy(
        update={"training": training.model_copy(update=update)})})


def _cuda(monkeypatch: pytest.MonkeyPatch, devices: int, built_with: str | None) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: devices > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: devices)
    monkeypatch.setattr(torch.version, "cuda", built_with)


def test_a_cpu_build_of_torch_fails_naming_what_was_asked_and_found(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, 0, None)
    with pytest.raises(gpu.GpuUnavailable) as caught:
        gpu.require_cuda(TRAIN)
    assert str(caught.value) == (
        f"train asked for 1 GPU per worker but CUDA is not available in this image/node (torch {torch.__version__} "
        "built without CUDA): use the -cuda image or set training.resources.gpus_per_worker: 0")
    assert caught.value.exit_code == EXIT_FAILED  # the step's normal failure, not the retried transient one
    assert str(pickle.loads(pickle.dumps(caught.value))) == str(caught.value)  # it crosses Ray's processes


def test_too_few_devices_fails_and_enough_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    _cuda(monkeypatch, 1, "12.8")
    with pytest.raises(gpu.GpuUnavailable, match=r"asked for 2 GPU per worker but this worker sees 1 CUDA device"):
        gpu.require_cuda(gpu.GpuRequest("train", 2.0, "worker", "x"))
    gpu.require_cuda(TRAIN)
    gpu.require_cuda(gpu.GpuRequest("tune", 0.25, "trial", "x"))  # a fraction shares the one device it sees


def test_no_gpu_asked_means_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: pytest.fail("checked CUDA for a CPU step"))
    gpu.require_cuda(gpu.GpuRequest("train", 0.0, "worker", "x"))
    loop = lambda config: config  # noqa: E731
    assert gpu.guarded(loop, gpu.GpuRequest("train", 0.0, "worker", "x")) is loop


def test_the_guard_runs_in_the_worker_before_the_workload(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []

    def train_loop_per_worker(config: dict[str, Any]) -> None:
        calls.append(config)

    def tune_trainable(config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
        calls.append((config, data, fixed_params))

    loop, trial = gpu.guarded(train_loop_per_worker, TRAIN), gpu.guarded(tune_trainable, TRAIN)
    # Ray Train counts the loop's parameters and Tune binds the trainable's by name: both see the workload's.
    assert inspect.signature(loop) == inspect.signature(train_loop_per_worker)
    assert inspect.signature(trial) == inspect.signature(tune_trainable) and trial.__name__ == "tune_trainable"
    _cuda(monkeypatch, 0, None)
    with pytest.raises(gpu.GpuUnavailable):
        loop({"lr": 1})
    with pytest.raises(gpu.GpuUnavailable):
        trial({"lr": 1}, data={}, fixed_params={})
    assert calls == []
    _cuda(monkeypatch, 1, "12.8")
    loop({"lr": 1})
    trial({"lr": 1}, data={}, fixed_params={})
    assert calls == [{"lr": 1}, ({"lr": 1}, {}, {})]


def test_ray_accepts_the_guarded_functions() -> None:
    from ray.train._internal.utils import count_required_parameters
    from ray.tune import with_parameters

    def tune_trainable(config: dict[str, Any], data: dict[str, Any], fixed_params: dict[str, Any]) -> None:
        return None

    assert count_required_parameters(gpu.guarded(lambda config: None, TRAIN)) == 1
    assert callable(with_parameters(gpu.guarded(tune_trainable, TRAIN), data={}, fixed_params={}))


def test_the_cluster_must_offer_the_gpus() -> None:
    with pytest.raises(gpu.GpuUnavailable, match=r"^train asked for 1 GPU per worker \(2 workers\) but the Ray "
                                                 r"cluster offers 1 GPU\(s\).*gpus_per_worker: 0$"):
        gpu.check_cluster(TRAIN, 1.0)
    gpu.check_cluster(TRAIN, 2.0)
    gpu.check_cluster(gpu.GpuRequest("tune", 0.0, "trial", "x"), 0.0)


def test_the_driver_waits_a_bounded_time_for_gpu_nodes_to_join(monkeypatch: pytest.MonkeyPatch) -> None:
    """A GPU worker that registers with the head after the job started is waited for; one that never does is
    reported once the wait is over."""
    import ray

    offered = iter([0.0, 1.0, 2.0])
    polls: list[float] = []
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0, "GPU": next(offered)})
    monkeypatch.setattr(gpu.time, "sleep", polls.append)
    gpu.check_ray_cluster(TRAIN)
    assert len(polls) == 2
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})
    with pytest.raises(gpu.GpuUnavailable, match="offers 0 GPU"):
        gpu.check_ray_cluster(TRAIN, wait_s=0.0)


def test_requests_come_from_the_spec() -> None:
    model = _model(gpus_per_worker=2.0, gpus_per_trial=0.5)
    assert gpu.request(model, names.STEP_TRAIN) == gpu.GpuRequest(
        "train", 2.0, "worker", "training.resources.gpus_per_worker", model.spec.training.resources.workers)
    assert gpu.request(model, names.STEP_TUNE) == gpu.GpuRequest("tune", 0.5, "trial", "training.tune.gpus_per_trial")


def test_a_worker_error_is_found_inside_what_ray_wraps_it_in() -> None:
    from ray.train import WorkerGroupError

    error = gpu.GpuUnavailable("train asked for 1 GPU per worker but ...")
    assert gpu.raised_in(WorkerGroupError("worker 0 failed", {0: error})) is error
    assert gpu.raised_in(_with_cause(error)) is error  # RayTaskError keeps it as .cause
    try:
        raise RuntimeError("trial failed") from error
    except RuntimeError as wrapped:
        assert gpu.raised_in(wrapped) is error
    assert gpu.raised_in(RuntimeError("out of memory")) is None and gpu.raised_in(None) is None


def _with_cause(cause: BaseException) -> BaseException:
    error = RuntimeError("ray task failed")
    error.cause = cause  # type: ignore[attr-defined]
    return error


# ---------------------------------------------------------------- in the steps: before any training, and after


def _ctx(model: ModelSpec, **workload: Callable[..., Any]) -> Any:
    def mlflow_run() -> Any:
        pytest.fail("an MLflow run was opened for a step that cannot run")

    return SimpleNamespace(spec=model, settings=None, workflow="wf", finished_run=lambda: None,
                           mlflow_run=mlflow_run, workload=SimpleNamespace(**workload))


def _no_services(monkeypatch: pytest.MonkeyPatch, module: Any, gpus_in_cluster: float) -> None:
    import ray

    prepared = dict.fromkeys(("x_train", "y_train", "x_valid", "y_valid"))
    for name, value in {"connect": lambda settings: None, "load_prepared": lambda ctx: prepared,
                        "training_params": lambda ctx, params: SimpleNamespace(model_dump=lambda **_: {})}.items():
        monkeypatch.setattr(module, name, value)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": gpus_in_cluster})
    # The steps' own call waits GPU_NODES_WAIT_S (60 s) for GPU nodes to join; the waiting itself is
    # test_the_driver_waits_a_bounded_time_for_gpu_nodes_to_join's subject, so here the GPUs are missing at once.
    monkeypatch.setattr(gpu, "GPU_NODES_WAIT_S", 0.0)


@pytest.mark.parametrize(("module", "step"), [(train, names.STEP_TRAIN), (tune, names.STEP_TUNE)])
def test_a_step_fails_before_training_on_a_cluster_without_gpus(monkeypatch: pytest.MonkeyPatch, module: Any,
                                                                step: str) -> None:
    _no_services(monkeypatch, module, 0.0)
    monkeypatch.setattr(train, "best_params", lambda ctx: {})
    started = lambda *_: pytest.fail("training started")  # noqa: E731
    monkeypatch.setattr(train, "_trainer", started)
    monkeypatch.setattr(tune, "_tuner", started)
    with pytest.raises(gpu.GpuUnavailable, match=rf"^{step} asked for .* GPU per .* offers 0 GPU"):
        module.run(_ctx(_model()))


def test_train_fails_with_the_worker_s_gpu_error_not_a_generic_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.train import WorkerGroupError

    _no_services(monkeypatch, train, 4.0)
    monkeypatch.setattr(train, "best_params", lambda ctx: {})
    monkeypatch.setattr(train.mlflow, "log_params", lambda params: None)
    error = gpu.GpuUnavailable("train asked for 1 GPU per worker but CUDA is not available")
    result = SimpleNamespace(error=WorkerGroupError("rank 0 failed", {0: error}), checkpoint=None)
    monkeypatch.setattr(train, "_trainer", lambda ctx, config: SimpleNamespace(fit=lambda: result))
    ctx = _ctx(_model())
    ctx.mlflow_run = contextlib.nullcontext
    with pytest.raises(gpu.GpuUnavailable) as caught:
        train.run(ctx)
    assert caught.value is error


def test_tune_fails_with_a_trial_s_gpu_error(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_services(monkeypatch, tune, 4.0)
    error = gpu.GpuUnavailable("tune asked for 0.5 GPU per trial but CUDA is not available")
    results = SimpleNamespace(errors=[RuntimeError("unrelated"), error],
                              get_best_result=lambda **_: pytest.fail("a failed trial's GPU error was passed over"))
    monkeypatch.setattr(tune, "_tuner", lambda ctx, spec, data: SimpleNamespace(fit=lambda: results))
    ctx = _ctx(_model())
    ctx.mlflow_run = contextlib.nullcontext
    with pytest.raises(gpu.GpuUnavailable) as caught:
        tune.run(ctx)
    assert caught.value is error
