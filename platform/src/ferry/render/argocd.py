"""Argo CD objects that sync the rendered folder: one Application per model, from an ApplicationSet."""

from __future__ import annotations

from typing import Any

from ferry.contract import names
from ferry.render.profiles import EnvProfile, rendered_dir

ARGOCD_NAMESPACE = "argocd"
PROJECT = "ferry-models"
ARGOCD_DIR = "_argocd"

# Least privilege: model apps may only create what the renderer emits, in ferry's namespace.
MODEL_KINDS = (
    ("argoproj.io", "WorkflowTemplate"), ("argoproj.io", "Workflow"), ("argoproj.io", "CronWorkflow"),
    ("", "ConfigMap"), ("ray.io", "RayService"), ("monitoring.coreos.com", "PrometheusRule"),
    ("monitoring.coreos.com", "PodMonitor"), ("argoproj.io", "Sensor"),
)


def app_project(profile: EnvProfile) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AppProject",
        "metadata": {"name": PROJECT, "namespace": ARGOCD_NAMESPACE, "labels": _labels()},
        "spec": {
            "description": "Models managed by ferry: rendered from gitops/models by `ferry render`.",
            "sourceRepos": [profile.repo_url],
            "destinations": [{"server": "https://kubernetes.default.svc", "namespace": profile.namespace}],
            "clusterResourceWhitelist": [],
            "namespaceResourceWhitelist": [{"group": g, "kind": k} for g, k in MODEL_KINDS],
        },
    }


def application_set(profile: EnvProfile) -> dict[str, Any]:
    folder = rendered_dir(profile.name)
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "ApplicationSet",
        "metadata": {"name": "ferry-models", "namespace": ARGOCD_NAMESPACE, "labels": _labels()},
        "spec": {
            "goTemplate": True,
            "goTemplateOptions": ["missingkey=error"],
            "generators": [{"git": {
                "repoURL": profile.repo_url,
                "revision": profile.target_revision,
                "directories": [{"path": f"{folder}/*"}, {"path": f"{folder}/{ARGOCD_DIR}", "exclude": True}],
            }}],
            "template": {
                "metadata": {"name": "ferry-{{.path.basename}}", "labels": {names.LABEL_MODEL: "{{.path.basename}}"}},
                "spec": {
                    "project": PROJECT,
                    "source": {"repoURL": profile.repo_url, "targetRevision": profile.target_revision,
                               "path": "{{.path.path}}"},
                    "destination": {"server": "https://kubernetes.default.svc", "namespace": profile.namespace},
                    "syncPolicy": {
                        "automated": {"prune": True, "selfHeal": True},
                        "syncOptions": ["ServerSideApply=true", "PruneLast=true"],
                        "retry": {"limit": 5, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"}},
                    },
                },
            },
        },
    }


def _labels() -> dict[str, str]:
    return {"app.kubernetes.io/part-of": names.PART_OF, "app.kubernetes.io/managed-by": names.PART_OF}
