"""Argo Events objects for drift → retraining on a cluster (the local receiver does the same on a laptop).

    Alertmanager ──(route `retrain`: alertname FerryModelDriftHigh, continue)──▶ EventSource ferry-alerts
        (webhook, POST /alertmanager, port 12000, Service ferry-alerts-eventsource-svc)
    ──▶ EventBus default (JetStream) ──▶ Sensor <model>-retrain-on-drift, one per model
        filters: body.status == firing, body.commonLabels.alertname == FerryModelDriftHigh,
                 body.commonLabels.model == <model>
    ──▶ k8s trigger `create`: a Workflow (generateName <model>-drift-) from the WorkflowTemplate
        <model>-pipeline with arguments spec-hash and trigger=drift

One EventSource for every model, not one each: Alertmanager's webhook URL is fixed text in its configuration
(kube-prometheus-stack values, ferry.render.alerting.cluster_config), so a per-model endpoint would mean
editing the platform's Alertmanager for every new model. Alertmanager groups by team, alertname and model
(ferry.render.alerting.GROUP_BY), so every drift notification names exactly one model in `commonLabels`,
which is what each model's Sensor filters on. The EventSource and EventBus are platform objects rendered
into gitops/rendered/prod/_argocd (synced by the Application ferry-models, after Argo Events' CRDs); the
Sensor sits with the model's other objects.

Least privilege: the Sensor runs as ferry-retrain-sensor (platform/deploy), whose Role may only create
Workflows in the namespace. A `k8s` trigger with operation `create` needs nothing else; Argo Events'
`argoWorkflow` trigger runs the argo CLI in the Sensor pod, and its documented example role allows every
verb on workflows, templates and cron workflows. The trigger is rate-limited to one
Workflow per model per hour: Alertmanager repeats a notification (repeat_interval, a feature joining the
group) and the retraining run it started takes longer than that anyway; the pipeline's mutex
(synchronization) queues any run that still overlaps.
"""

from __future__ import annotations

from typing import Any

from ferry.contract import names
from ferry.render import pods
from ferry.render.profiles import EnvProfile

EVENT_SOURCE = "ferry-alerts"
EVENT_NAME = "alertmanager"
EVENT_BUS = "default"  # the name EventSources and Sensors use when they name none
WEBHOOK_PORT = 12000
WEBHOOK_ENDPOINT = "/alertmanager"
SENSOR_SERVICE_ACCOUNT = "ferry-retrain-sensor"
DEPENDENCY = "drift"
RETRAINS_PER_HOUR = 1
JETSTREAM_VERSION = "latest"  # resolved by the Argo Events controller's configmap (chart 2.4.x)
JETSTREAM_REPLICAS = 3  # JetStream's minimum for a quorum


def event_source_service(profile: EnvProfile) -> str:
    return f"{EVENT_SOURCE}-eventsource-svc.{profile.namespace}.svc.cluster.local"


def event_source_url(profile: EnvProfile) -> str:
    """Where Alertmanager posts drift alerts (the Service Argo Events creates for the EventSource)."""
    return f"http://{event_source_service(profile)}:{WEBHOOK_PORT}{WEBHOOK_ENDPOINT}"


def _platform_labels(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": EVENT_SOURCE if component == "alerts" else f"ferry-{component}",
            "app.kubernetes.io/component": component, "app.kubernetes.io/part-of": names.PART_OF,
            "app.kubernetes.io/managed-by": names.PART_OF}


def _pod_template(service_account: str | None = None) -> dict[str, Any]:
    template: dict[str, Any] = {
        "securityContext": pods.pod_security(),
        "container": {"securityContext": pods.container_security(),
                      "resources": pods.resources(0.1, "128Mi")},
    }
    if service_account:
        template["serviceAccountName"] = service_account
    return template


def alerts_event_source(profile: EnvProfile) -> dict[str, Any]:
    """The webhook Alertmanager's `retrain` receiver posts to; one event per notification."""
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {"name": EVENT_SOURCE, "namespace": profile.namespace, "labels": _platform_labels("alerts")},
        "spec": {
            "eventBusName": EVENT_BUS,
            "template": _pod_template(),
            "service": {"ports": [{"name": "webhook", "port": WEBHOOK_PORT, "targetPort": WEBHOOK_PORT}]},
            "webhook": {EVENT_NAME: {"port": str(WEBHOOK_PORT), "endpoint": WEBHOOK_ENDPOINT, "method": "POST",
                                     "maxPayloadSize": 1048576}},
        },
    }


def event_bus(profile: EnvProfile) -> dict[str, Any]:
    """The namespace's EventBus (JetStream) that carries events from the EventSource to the Sensors."""
    container = {k: v for k, v in pods.container_security().items() if k != "readOnlyRootFilesystem"}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventBus",
        "metadata": {"name": EVENT_BUS, "namespace": profile.namespace, "labels": _platform_labels("events")},
        "spec": {"jetstream": {
            "version": JETSTREAM_VERSION,
            "replicas": JETSTREAM_REPLICAS,
            "securityContext": pods.pod_security(),
            "containerTemplate": {"securityContext": container, "resources": pods.resources(0.1, "256Mi")},
            "reloaderContainerTemplate": {"securityContext": container, "resources": pods.resources(0.05, "64Mi")},
            "metricsContainerTemplate": {"securityContext": container, "resources": pods.resources(0.05, "64Mi")},
        }},
    }


def retraining_workflow(model: str, profile: EnvProfile, spec_hash: str) -> dict[str, Any]:
    """What the Sensor creates: a new run of the model's WorkflowTemplate, so every step runs again."""
    labels = {**names.labels(model, "pipeline-run", spec_hash), names.LABEL_TRIGGER: names.TRIGGER_DRIFT}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Workflow",
        "metadata": {"generateName": names.retrain_workflow_prefix(model, names.TRIGGER_DRIFT),
                     "namespace": profile.namespace, "labels": labels,
                     "annotations": {names.ANNOTATION_REASON: f"{names.ALERT_DRIFT_HIGH} for {model}"}},
        "spec": {
            "workflowTemplateRef": {"name": names.workflow_template_name(model)},
            "arguments": {"parameters": [{"name": names.PARAM_SPEC_HASH, "value": spec_hash},
                                         {"name": names.PARAM_TRIGGER, "value": names.TRIGGER_DRIFT}]},
        },
    }


def _filters(model: str) -> list[dict[str, Any]]:
    wanted = (("body.status", "firing"), ("body.commonLabels.alertname", names.ALERT_DRIFT_HIGH),
              ("body.commonLabels.model", model))
    return [{"path": path, "type": "string", "value": [value]} for path, value in wanted]


def retrain_sensor(model: str, profile: EnvProfile, spec_hash: str) -> dict[str, Any]:
    """Per model: a firing drift alert for this model creates one retraining Workflow (at most hourly)."""
    reason = {"src": {"dependencyName": DEPENDENCY, "dataTemplate":
                      f"{names.ALERT_DRIFT_HIGH} firing for {model}"
                      " (Alertmanager group {{ .Input.body.groupKey }})"},
              # sjson path: the dot inside the annotation key is escaped
              "dest": f"metadata.annotations.{names.ANNOTATION_REASON.replace('.', chr(92) + '.')}"}
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {"name": names.sensor_name(model), "namespace": profile.namespace,
                     "labels": names.labels(model, "retraining-trigger", spec_hash)},
        "spec": {
            "eventBusName": EVENT_BUS,
            "template": _pod_template(SENSOR_SERVICE_ACCOUNT),
            "dependencies": [{"name": DEPENDENCY, "eventSourceName": EVENT_SOURCE, "eventName": EVENT_NAME,
                              "filters": {"data": _filters(model)}}],
            "triggers": [{
                "template": {"name": "retrain", "k8s": {
                    "operation": "create",
                    "source": {"resource": retraining_workflow(model, profile, spec_hash)},
                    "parameters": [reason],
                }},
                "rateLimit": {"unit": "Hour", "requestsPerUnit": RETRAINS_PER_HOUR},
                "retryStrategy": {"steps": 3, "duration": "10s", "factor": 2},
            }],
        },
    }
