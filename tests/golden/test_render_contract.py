"""What the rendered objects promise Argo, Argo CD and KubeRay users (DESIGN §5)."""

from __future__ import annotations

from pathlib import Path

import yaml

from ferry.contract import names
from ferry.render.bundle import render_objects
from ferry.spec import load_specs, spec_hash

ROOT = Path(__file__).resolve().parents[2]


def prod():
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])
    model = specs[0].model
    return model, render_objects([model], "prod")


def test_workflow_named_from_hash_with_argocd_annotations_and_no_ttl() -> None:
    model, objects = prod()
    [wf] = objects["fraud-detector/workflow.yaml"]
    assert wf["metadata"]["name"] == f"fraud-detector-{spec_hash(model)}"
    assert wf["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "Prune=false"
    assert wf["metadata"]["annotations"]["argocd.argoproj.io/compare-options"] == "IgnoreExtraneous"
    assert "ttlStrategy" not in wf["spec"]


def test_template_dag_mutex_retry_podgc() -> None:
    _, objects = prod()
    [wt] = objects["fraud-detector/workflowtemplate.yaml"]
    spec = wt["spec"]
    assert spec["synchronization"]["mutexes"] == [{"name": names.mutex_name("fraud-detector")}]
    assert spec["podGC"]["strategy"] == "OnPodSuccess"
    assert "ttlStrategy" not in spec
    dag = next(t for t in spec["templates"] if t["name"] == "pipeline")["dag"]["tasks"]
    assert [t["name"] for t in dag] == list(names.STEPS)
    assert [t.get("dependencies") for t in dag][1:] == [[s] for s in names.STEPS[:-1]]
    # Tune and train read the data step's `fresh`; evaluate always runs, so the gated steps' `when` never reads a
    # skipped task's outputs (which Argo versions resolve differently).
    whens = {t["name"]: t.get("when") for t in dag}
    assert whens == {"data": None, "tune": "{{tasks.data.outputs.parameters.fresh}} == true",
                     "train": "{{tasks.data.outputs.parameters.fresh}} == true", "evaluate": None,
                     "register": "{{tasks.evaluate.outputs.parameters.passed}} == true",
                     "rollout": "{{tasks.evaluate.outputs.parameters.passed}} == true"}
    assert "fresh" in {p["name"] for p in templates_outputs(spec, "data")}
    templates = {t["name"]: t for t in spec["templates"]}
    for step in names.STEPS:
        assert templates[step]["retryStrategy"]["backoff"]["duration"]
    evaluate_outputs = {p["name"] for p in templates["evaluate"]["outputs"]["parameters"]}
    assert {"mlflow-run", "average-precision", "passed"} <= evaluate_outputs
    assert templates["register"]["outputs"]["parameters"][0]["name"] == "model-version"


def test_rayjobs_follow_spec_resources() -> None:
    model, objects = prod()
    [wt] = objects["fraud-detector/workflowtemplate.yaml"]
    templates = {t["name"]: t for t in wt["spec"]["templates"]}
    train = yaml.safe_load(templates["train"]["resource"]["manifest"])
    assert templates["train"]["resource"]["successCondition"] == "status.jobStatus == SUCCEEDED"
    assert train["spec"]["shutdownAfterJobFinishes"] is True
    assert train["spec"]["ttlSecondsAfterFinished"] > 0 and train["spec"]["activeDeadlineSeconds"] > 0
    [group] = train["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == model.spec.training.resources.workers
    assert train["spec"]["rayClusterSpec"]["authOptions"] == {"mode": "token"}
    tune = yaml.safe_load(templates["tune"]["resource"]["manifest"])
    assert tune["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] == model.spec.training.tune.max_concurrent
    # Ray Train's controller takes each epoch's report at its next poll (Ray's default: every 2 s, which made
    # every short epoch last 2 s): the train job polls four times a second.
    env = yaml.safe_load(train["spec"]["runtimeEnvYAML"])["env_vars"]
    assert float(env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"]) <= 0.25


def test_gpu_worker_group_requests_gpus() -> None:
    model, _ = prod()
    resources = model.spec.training.resources.model_copy(update={"gpus_per_worker": 1.0, "workers": 2})
    gpu_model = model.model_copy(update={"spec": model.spec.model_copy(
        update={"training": model.spec.training.model_copy(update={"resources": resources})})})
    [wt] = render_objects([gpu_model], "prod")["fraud-detector/workflowtemplate.yaml"]
    train = yaml.safe_load(next(t for t in wt["spec"]["templates"] if t["name"] == "train")["resource"]["manifest"])
    [group] = train["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert group["groupName"] == "gpu-workers"
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert group["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"


def test_containers_are_non_root_with_limits() -> None:
    _, objects = prod()
    [wt] = objects["fraud-detector/workflowtemplate.yaml"]
    for template in wt["spec"]["templates"]:
        if "container" in template:
            container = template["container"]
            assert container["securityContext"]["runAsNonRoot"] is True
            assert container["resources"]["limits"]["memory"]


def test_cron_only_with_schedule() -> None:
    _, objects = prod()
    [cron] = objects["fraud-detector/cronworkflow.yaml"]
    assert cron["spec"]["schedules"] == ["0 3 * * 1"] and cron["spec"]["concurrencyPolicy"] == "Forbid"
    specs, _ = load_specs([ROOT / "gitops/models/fraud-detector-lite.yaml"])
    assert "fraud-detector-lite/cronworkflow.yaml" not in render_objects([specs[0].model], "prod")


def templates_outputs(spec: dict, template: str) -> list[dict]:
    return next(t for t in spec["templates"] if t["name"] == template)["outputs"]["parameters"]
