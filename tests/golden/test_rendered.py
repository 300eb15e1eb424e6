"""Golden tests: committed rendered output equals a fresh render, and every object is schema-valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.support.kube_schemas import validate_object

from ferry.adapters.workloads import workload_facts
from ferry.render.bundle import render_files, render_objects
from ferry.spec import load_specs
from ferry.spec.jsonschema import SCHEMA_PATH, model_schema_text

ROOT = Path(__file__).resolve().parents[2]
ENVS = ("local", "prod")


def models():
    specs, errors = load_specs([ROOT / "gitops/models"])
    assert errors == []
    return [s.model for s in specs]


@pytest.mark.parametrize("env", ENVS)
def test_committed_render_is_current(env: str) -> None:
    wanted = render_files(models(), env)
    folder = ROOT / "gitops/rendered" / env
    committed = {p.relative_to(folder).as_posix(): p.read_text() for p in folder.rglob("*") if p.is_file()}
    assert committed.keys() == wanted.keys(), "run `task golden:update`"
    stale = [path for path in wanted if committed[path] != wanted[path]]
    assert not stale, f"stale rendered files {stale}: run `task golden:update`"


@pytest.mark.parametrize("env", ENVS)
def test_render_is_deterministic(env: str) -> None:
    assert render_files(models(), env) == render_files(list(reversed(models())), env)


def test_json_schema_is_current() -> None:
    assert (ROOT / SCHEMA_PATH).read_text() == model_schema_text(workload_facts()), "run `ferry schema`"


def all_objects():
    for env in ENVS:
        for path, docs in render_objects(models(), env).items():
            for doc in docs:
                yield f"{env}/{path}", doc
                for template in doc.get("spec", {}).get("templates", []):
                    if "resource" in template:
                        yield f"{env}/{path}#{template['name']}", yaml.safe_load(template["resource"]["manifest"])


@pytest.mark.parametrize(("where", "obj"), list(all_objects()), ids=lambda v: v if isinstance(v, str) else "")
def test_rendered_object_is_schema_valid(where: str, obj: dict) -> None:
    assert validate_object(obj) == [], where


def test_misspelt_field_fails_validation() -> None:
    doc = render_objects(models(), "prod")["fraud-detector/workflowtemplate.yaml"][0]
    doc["spec"]["templates"][1]["container"]["imagePullPolicyy"] = "Always"
    assert validate_object(doc)
