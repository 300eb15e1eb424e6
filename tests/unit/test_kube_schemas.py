"""Tests for the strict manifest validator in tests/support/kube_schemas.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support import kube_schemas
from tests.support.kube_schemas import (
    SchemasNotFoundError,
    schemas_dir,
    supported_kinds,
    validate_grafana_dashboard,
    validate_object,
    validate_yaml_documents,
    vendored_files,
)

SCHEMAS = schemas_dir()
EXAMPLES = SCHEMAS / "examples"  # hand-written objects, one or more per vendored kind
README = (SCHEMAS / "README.md").read_text()


def _examples() -> list[tuple[str, dict[str, Any]]]:
    """Every supported document of every example YAML file, as (id, object)."""
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for index, doc in enumerate(yaml.safe_load_all(path.read_text())):
            if isinstance(doc, dict) and (doc.get("apiVersion"), doc.get("kind")) in supported_kinds():
                found.append((f"{path.name}:{index}:{doc['kind']}", doc))
    return found


EXAMPLE_DOCS = _examples()


def _example(kind: str) -> dict[str, Any]:
    """A deep copy of the first example of ``kind`` (tests mutate it)."""
    return copy.deepcopy(next(doc for _, doc in EXAMPLE_DOCS if doc["kind"] == kind))


def _assert_error_at(errors: list[str], path: str) -> None:
    assert any(e.startswith(f"{path}:") for e in errors), f"no error at {path!r} in {errors}"


# --------------------------------------------------------------------------------------- valid objects


def test_examples_cover_every_family() -> None:
    kinds = {doc["kind"] for _, doc in EXAMPLE_DOCS}
    assert {"Workflow", "Application", "RayJob", "PrometheusRule", "Deployment"} <= kinds
    assert len(EXAMPLE_DOCS) >= 20


@pytest.mark.parametrize(("doc_id", "doc"), EXAMPLE_DOCS, ids=[i for i, _ in EXAMPLE_DOCS])
def test_every_example_is_valid(doc_id: str, doc: dict[str, Any]) -> None:
    assert validate_object(doc) == []


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_example_files_are_valid(path: Path) -> None:
    assert validate_yaml_documents(path) == []


def test_int_quantities_and_int_or_string_are_accepted() -> None:
    wf = _example("Workflow")
    template = wf["spec"]["templates"][0]
    template["retryStrategy"]["limit"] = 2
    template["container"]["resources"] = {"requests": {"cpu": 1, "memory": "1Gi"}, "limits": {"cpu": 1.5}}
    assert validate_object(wf) == []

    deploy = _example("Deployment")
    deploy["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 1, "maxUnavailable": 0}
    deploy["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = 1
    assert validate_object(deploy) == []

    ray = _example("RayJob")
    ray["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": {"cpu": 1}
    }
    assert validate_object(ray) == []


def test_required_fields_with_crd_defaults_may_be_omitted() -> None:
    # The API server fills `default`s in before validating; KubeRay requires but defaults min/maxReplicas.
    job = _example("RayJob")
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"] = [
        {
            "groupName": "gpu",
            "replicas": 1,
            "rayStartParams": {},
            "template": {
                "spec": {"containers": [{"name": "w", "image": "r", "resources": {"limits": {"cpu": 1}}}]}
            },
        }
    ]
    assert validate_object(job) == []


def test_argo_events_webhook_without_url_and_int_cpu_are_accepted() -> None:
    source: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "EventSource",
        "metadata": {"name": "webhook"},
        "spec": {
            "template": {"container": {"resources": {"requests": {"cpu": 1}}}},
            "webhook": {"retrain": {"port": "12000", "endpoint": "/retrain", "method": "POST"}},
        },
    }
    assert validate_object(source) == []
    source["spec"]["webhook"]["retrain"]["endpiont"] = "/x"
    _assert_error_at(validate_object(source), "spec.webhook.retrain.endpiont")


def test_sensor_with_argo_workflow_trigger_is_accepted() -> None:
    sensor: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Sensor",
        "metadata": {"name": "retrain"},
        "spec": {
            "dependencies": [{"name": "hook", "eventSourceName": "webhook", "eventName": "retrain"}],
            "triggers": [
                {
                    "template": {
                        "name": "submit",
                        "argoWorkflow": {
                            "operation": "submit",
                            "source": {
                                "resource": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow"}
                            },
                        },
                    }
                }
            ],
        },
    }
    assert validate_object(sensor) == []


def test_core_kind_from_swagger_only() -> None:
    binding: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "ml-reader", "creationTimestamp": None},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ml-reader"},
        "subjects": [{"kind": "Group", "name": "ml", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    assert validate_object(binding) == []
    binding["subjects"][0]["nmae"] = "x"
    _assert_error_at(validate_object(binding), "subjects[0].nmae")


def test_preserve_unknown_fields_and_nullable_are_respected() -> None:
    app = _example("Application")
    app["spec"]["source"]["helm"] = {"valuesObject": {"anything": {"goes": [1, 2]}}}
    assert validate_object(app) == []

    service = _example("RayService")
    service["status"] = {"activeServiceStatus": {"rayClusterStatus": {"lastUpdateTime": None}}}
    assert validate_object(service) == []


def test_prometheus_re2_pattern_is_rewritten_and_enforced() -> None:
    rule = _example("PrometheusRule")
    rule["spec"]["groups"][0]["partial_response_strategy"] = "WARN"
    assert validate_object(rule) == []
    rule["spec"]["groups"][0]["partial_response_strategy"] = "sometimes"
    _assert_error_at(validate_object(rule), "spec.groups[0].partial_response_strategy")


# ------------------------------------------------------------------------------------- invalid objects


def test_misspelt_workflow_field_names_its_path() -> None:
    wf = _example("Workflow")
    wf["spec"]["entrypoitn"] = wf["spec"].pop("entrypoint")
    errors = validate_object(wf)
    assert errors == ["spec.entrypoitn: unknown field 'entrypoitn' (typo?)"]


def test_misspelt_rayjob_field_names_its_path() -> None:
    job = _example("RayJob")
    job["spec"]["shutdownAfterJobFinishe"] = job["spec"].pop("shutdownAfterJobFinishes")
    _assert_error_at(validate_object(job), "spec.shutdownAfterJobFinishe")


def test_typo_in_container_inside_workflow_template() -> None:
    tmpl = _example("WorkflowTemplate")
    tmpl["spec"]["templates"].append(
        {
            "name": "serve",
            "container": {"image": "busybox", "comand": ["true"], "resources": {"limits": {"cpu": 1}}},
        }
    )
    assert validate_object(tmpl) == ["spec.templates[2].container.comand: unknown field 'comand' (typo?)"]


def test_wrong_type_deep_in_a_workflow_template_names_its_path() -> None:
    tmpl = _example("WorkflowTemplate")
    tmpl["spec"]["templates"].append(
        {"name": "apply", "resource": {"action": "create", "manifest": "{}", "successCondition": 3}}
    )
    errors = validate_object(tmpl)
    assert len(errors) == 1
    _assert_error_at(errors, "spec.templates[2].resource.successCondition")


@pytest.mark.parametrize("kind", ["Workflow", "RayJob", "Deployment", "Application", "PodMonitor"])
def test_metadata_typo_is_caught(kind: str) -> None:
    obj = _example(kind)
    obj["metadata"]["lables"] = {"app": "x"}
    assert "metadata.lables: unknown field 'lables' (typo?)" in validate_object(obj)


def test_crd_metadata_types_are_checked() -> None:
    job = _example("RayJob")
    job["metadata"]["labels"] = {"app": 3}
    _assert_error_at(validate_object(job), "metadata.labels.app")


def test_missing_required_field_is_reported() -> None:
    wf = _example("Workflow")
    del wf["spec"]
    assert any("'spec' is a required property" in e for e in validate_object(wf))


@pytest.mark.parametrize(
    ("api_version", "kind"),
    [
        ("argoproj.io/v1", "Workflow"),
        ("argoproj.io/v1alpha1", "Workflw"),
        ("ray.io/v1alpha2", "RayJob"),
        ("apps/v1", "Deploy"),
        ("example.com/v1", "Widget"),
    ],
)
def test_wrong_kind_or_api_version_fails(api_version: str, kind: str) -> None:
    errors = validate_object({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x"}})
    assert len(errors) == 1
    assert "no schema is known" in errors[0]


def test_not_an_object_fails() -> None:
    assert validate_object(["not", "a", "mapping"])
    assert validate_object({"kind": "ConfigMap"})


# --------------------------------------------------------------------------------------------- grafana


def test_grafana_example_passes_and_broken_one_fails() -> None:
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    assert validate_grafana_dashboard(dashboard) == []

    broken = copy.deepcopy(dashboard)
    broken["titel"] = broken.pop("title")
    broken["panels"][0]["gridPos"]["w"] = "wide"
    errors = validate_grafana_dashboard(broken)
    assert "titel: unknown field 'titel' (typo?)" in errors
    # panels[] is a oneOf (Panel | RowPanel): the closest branch's error must surface, not "oneOf failed".
    assert any(e.startswith("panels[0]:") and "panels[0].gridPos.w" in e for e in errors), errors


# ----------------------------------------------------------------------------------- files & internals


def test_yaml_file_errors_are_prefixed_and_lists_flattened(tmp_path: Path) -> None:
    bad_cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg"}, "dat": {}}
    good_cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ok"},
        "data": {"day": "2024-01-01"},
    }
    listing = {"apiVersion": "v1", "kind": "List", "items": [good_cm, bad_cm]}
    path = tmp_path / "m.yaml"
    # An empty document, a date that must stay a string (no quotes), and a `kind: List`.
    path.write_text(
        "---\n---\n"
        + yaml.safe_dump(good_cm).replace("'2024-01-01'", "2024-01-01")
        + "---\n"
        + yaml.safe_dump(listing)
    )
    assert validate_yaml_documents(path) == [
        f"{path}:2.items[1] ConfigMap/cfg: dat: unknown field 'dat' (typo?)"
    ]


def test_unparseable_yaml_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("a: [1,\n")
    assert len(errors := validate_yaml_documents(path)) == 1
    assert "invalid YAML" in errors[0]


def test_strict_compositions_accept_each_others_fields() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "allOf": [{"properties": {"b": {}}}, {"properties": {"c": {}}}],
        "oneOf": [{"properties": {"x": {}}, "required": ["x"]}, {"properties": {"y": {}}, "required": ["y"]}],
    }
    kube_schemas._harden(schema, {})
    validator = kube_schemas.Draft202012Validator(schema)
    assert list(validator.iter_errors({"a": "1", "b": 1, "c": 2, "x": 3})) == []
    assert list(validator.iter_errors({"a": "1", "x": 3, "y": 4}))  # oneOf branches still exclude each other
    assert list(validator.iter_errors({"a": "1", "x": 3, "z": 4}))  # and unknown names still fail


def test_validators_are_built_once_per_kind() -> None:
    validate_object(_example("RayJob"))
    before = kube_schemas._validator.cache_info()
    validate_object(_example("RayJob"))
    after = kube_schemas._validator.cache_info()
    assert after.hits == before.hits + 1
    assert after.misses == before.misses


def test_the_vendored_schemas_are_in_the_repository() -> None:
    # The clone alone runs every schema test: no ../shared, no environment variable.
    assert Path(__file__).resolve().parents[1] / "schemas" == SCHEMAS
    for rel in vendored_files():
        assert (SCHEMAS / rel).is_file(), f"{rel}: run tests/schemas/refresh.py --from DIR"


def test_the_copy_is_exactly_what_the_validator_reads() -> None:
    own = {"README.md", "refresh.py", "examples"}
    copied = {str(p.relative_to(SCHEMAS)) for p in SCHEMAS.rglob("*")
              if p.is_file() and p.relative_to(SCHEMAS).parts[0] not in own and "__pycache__" not in p.parts}
    assert copied == set(vendored_files()), "unused files in tests/schemas: run refresh.py, which drops them"


@pytest.mark.parametrize("rel", vendored_files())
def test_every_vendored_file_names_its_source_in_the_readme(rel: str) -> None:
    assert f"`{rel}`" in README, f"tests/schemas/README.md: name the project, version and upstream path of {rel}"


def test_a_missing_schema_fails_and_says_how_to_recopy(tmp_path: Path) -> None:
    with pytest.raises(SchemasNotFoundError, match=r"refresh\.py --from DIR"):
        kube_schemas._read(str(tmp_path), "argo-workflows/schema.json")
