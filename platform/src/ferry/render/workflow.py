"""Argo Workflows objects built with hera: the pipeline WorkflowTemplate, its Workflow, its CronWorkflow.

The DAG is data → tune → train → evaluate → register → rollout. Tune and train are KubeRay RayJob
resource templates; the rest are container steps running `ferry step <name>`.
"""

from __future__ import annotations

from typing import Any

from hera.workflows import DAG, Container, Parameter, Resource, Task, WorkflowTemplate
from hera.workflows import models as m

from ferry.contract import names
from ferry.render import pods
from ferry.render.profiles import IMAGE_PULL_POLICY, EnvProfile
from ferry.render.rayjob import RAYJOB_FAILURE_CONDITION, RAYJOB_SUCCESS_CONDITION, rayjob, step_deadline_seconds
from ferry.render.yamlout import dump_yaml
from ferry.spec.models import ModelSpec

STEP_CPU, STEP_MEMORY = 0.5, "1Gi"
# Argo runs dependents of a skipped task, so every gated step carries the evaluation's verdict as its `when`.
PASSED_WHEN = "{{tasks." + names.STEP_EVALUATE + ".outputs.parameters." + names.OUTPUT_PASSED + "}} == true"
# Tune and train run only on a dataset no earlier run trained this spec on; evaluate always runs (it records why
# nothing is registered), so no `when` ever reads the outputs of a skipped task.
FRESH_WHEN = "{{tasks." + names.STEP_DATA + ".outputs.parameters." + names.OUTPUT_FRESH + "}} == true"


def _retry_container() -> m.RetryStrategy:
    # Retry a pod that errored (evicted, node lost) or a step that exited EXIT_TRANSIENT; a real failure is final.
    return m.RetryStrategy(
        limit="3",
        retry_policy="Always",
        expression=f'lastRetry.status == "Error" || asInt(lastRetry.exitCode) == {names.EXIT_TRANSIENT}',
        backoff=m.Backoff(duration="10s", factor="2", max_duration="5m"),
    )


def _retry_resource() -> m.RetryStrategy:
    return m.RetryStrategy(limit="2", retry_policy="OnTransientError",
                           backoff=m.Backoff(duration="10s", factor="2", max_duration="5m"))


def _step_container(step: str, model: ModelSpec, profile: EnvProfile) -> Container:
    name = model.metadata.name
    env = [*pods.env_vars(profile), pods.image_env(profile),
           *(pods.rollout_env(profile) if step == names.STEP_ROLLOUT else []),
           *pods.log_reader_env(model, step, profile)]
    ports = pods.rollout_ports(profile) if step == names.STEP_ROLLOUT else []
    return Container(
        name=step,
        image=profile.image,
        image_pull_policy=IMAGE_PULL_POLICY,
        command=["ferry", "step", step],
        args=["--spec", profile.spec_path(name), "--run", "{{workflow.name}}",
              "--expect-hash", names.workflow_parameter(names.PARAM_SPEC_HASH)],
        env=[_env_var(e) for e in env],
        ports=[m.ContainerPort(**_snake(p)) for p in ports] or None,
        resources=m.ResourceRequirements(**pods.resources(STEP_CPU, STEP_MEMORY)),
        security_context=m.SecurityContext(**_snake(pods.container_security())),
        volume_mounts=[m.VolumeMount(**_snake(v)) for v in pods.volume_mounts(profile)],
        outputs=[_output(step, out, profile) for out in names.step_outputs(step, model.spec.evaluation.judged())],
        retry_strategy=_retry_container(),
        # Argo copies a template's labels onto its pod: the rollout PodMonitor selects the pod by this one.
        labels={names.LABEL_STEP: step},
    )


def _env_var(env: dict[str, Any]) -> m.EnvVar:
    source = env.get("valueFrom")
    if source is None:
        return m.EnvVar(name=env["name"], value=env["value"])
    if "secretKeyRef" in source:
        return m.EnvVar(name=env["name"], value_from=m.EnvVarSource(
            secret_key_ref=m.SecretKeySelector(**source["secretKeyRef"])))
    field = source["fieldRef"]["fieldPath"]
    return m.EnvVar(name=env["name"], value_from=m.EnvVarSource(field_ref=m.ObjectFieldSelector(field_path=field)))


def _output(step: str, name: str, profile: EnvProfile) -> Parameter:
    path = f"{profile.outputs_dir}/{name}"
    return Parameter(name=name, value_from=m.ValueFrom(path=path, default="", description=f"{step}: {name}"))


def _ray_step(step: str, model: ModelSpec, profile: EnvProfile, spec_hash: str) -> Resource:
    manifest = dump_yaml(rayjob(model, step, profile, spec_hash))
    return Resource(
        name=step,
        action="create",
        set_owner_reference=True,
        manifest=manifest,
        success_condition=RAYJOB_SUCCESS_CONDITION,
        failure_condition=RAYJOB_FAILURE_CONDITION,
        active_deadline_seconds=step_deadline_seconds(profile),
        outputs=[Parameter(name="ray-job", value_from=m.ValueFrom(json_path="{.metadata.name}"))],
        retry_strategy=_retry_resource(),
        labels={names.LABEL_STEP: step},
    )


def _snake(camel: dict[str, Any]) -> dict[str, Any]:
    """hera's models take snake_case field names; Kubernetes dicts are camelCase."""
    out = {}
    for key, value in camel.items():
        snake = "".join(f"_{c.lower()}" if c.isupper() else c for c in key)
        out[snake] = m.Capabilities(**value) if key == "capabilities" else (
            m.SeccompProfile(**value) if key == "seccompProfile" else value)
    return out


def _dag(templates: dict[str, Any], has_tune: bool) -> DAG:
    order = [step for step in names.STEPS if has_tune or step != names.STEP_TUNE]
    tasks: list[Task | m.DAGTask] = []
    for previous, step in zip([None, *order], order, strict=False):
        when = PASSED_WHEN if step in names.GATED_STEPS else FRESH_WHEN if step in names.TRAINING_STEPS else None
        tasks.append(Task(name=step, template=templates[step], when=when,
                          dependencies=[previous] if previous else None))
    return DAG(name="pipeline", tasks=tasks)


def workflow_template(model: ModelSpec, profile: EnvProfile, spec_hash: str) -> dict[str, Any]:
    name = model.metadata.name
    has_tune = model.spec.training.tune is not None
    templates: dict[str, Any] = {step: _step_container(step, model, profile)
                                 for step in names.CONTAINER_STEPS}
    for step in names.RAY_STEPS:
        if step == names.STEP_TRAIN or has_tune:
            templates[step] = _ray_step(step, model, profile, spec_hash)
    ordered = [templates[s] for s in names.STEPS if s in templates]
    wt = WorkflowTemplate(
        name=names.workflow_template_name(name),
        namespace=profile.namespace,
        labels=names.labels(name, "pipeline"),
        annotations={"workflows.argoproj.io/description": f"Train, evaluate, register and roll out {name}."},
        entrypoint="pipeline",
        # Why a run exists (names.TRIGGERS), as the argument `trigger` and (labelsFrom) the label ferry.dev/trigger.
        # A new run name is what forces a new training: steps find their results by workflow name, so a
        # retraining run of an already registered spec hash trains, evaluates and registers again and then goes
        # through the canary.
        arguments=[Parameter(name=names.PARAM_SPEC_HASH, value=spec_hash, description="Hash of the training fields."),
                   Parameter(name=names.PARAM_TRIGGER, value=names.TRIGGER_SPEC, enum=list(names.TRIGGERS),
                             description="Why this run exists: spec (a new spec hash), schedule, drift, manual.")],
        workflow_metadata=m.WorkflowMetadata(
            labelsFrom={names.LABEL_TRIGGER: m.LabelValueFrom(
                expression=f"workflow.parameters.{names.PARAM_TRIGGER}")}),
        service_account_name=profile.service_account,
        security_context=m.PodSecurityContext(**_snake(pods.pod_security())),
        synchronization=m.Synchronization(mutexes=[m.Mutex(name=names.mutex_name(name))]),
        pod_gc=m.PodGC(strategy="OnPodSuccess"),
        active_deadline_seconds=profile.workflow_deadline_seconds,
        volumes=[_volume(v) for v in pods.volumes(profile, names.spec_configmap_name(name))],
        templates=[_dag(templates, has_tune), *ordered],
    )
    return wt.to_dict()


def _volume(volume: dict[str, Any]) -> m.Volume:
    if "configMap" in volume:
        return m.Volume(name=volume["name"], config_map=m.ConfigMapVolumeSource(name=volume["configMap"]["name"]))
    return m.Volume(name=volume["name"], empty_dir=m.EmptyDirVolumeSource())


def workflow(model: ModelSpec, profile: EnvProfile, spec_hash: str) -> dict[str, Any]:
    """The run for this spec hash: a new hash creates a new Workflow, the same hash changes nothing."""
    name = model.metadata.name
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {
            "name": names.workflow_name(name, spec_hash),
            "namespace": profile.namespace,
            "labels": names.labels(name, "pipeline-run", spec_hash),
            "annotations": names.argocd_workflow_annotations(),
        },
        "spec": {
            "workflowTemplateRef": {"name": names.workflow_template_name(name)},
            "arguments": {"parameters": [{"name": names.PARAM_SPEC_HASH, "value": spec_hash}]},
        },
    }


def cron_workflow(model: ModelSpec, profile: EnvProfile, spec_hash: str) -> dict[str, Any] | None:
    schedule = model.spec.schedule
    if schedule is None:
        return None
    name = model.metadata.name
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "CronWorkflow",
        "metadata": {"name": names.cron_workflow_name(name), "namespace": profile.namespace,
                     "labels": names.labels(name, "retraining-schedule", spec_hash)},
        "spec": {
            "schedules": [schedule],
            "timezone": "UTC",
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 5,
            "failedJobsHistoryLimit": 5,
            "workflowMetadata": {"labels": names.labels(name, "pipeline-run", spec_hash)},
            "workflowSpec": {
                "workflowTemplateRef": {"name": names.workflow_template_name(name)},
                "arguments": {"parameters": [{"name": names.PARAM_SPEC_HASH, "value": spec_hash},
                                             {"name": names.PARAM_TRIGGER, "value": names.TRIGGER_SCHEDULE}]},
            },
        },
    }
