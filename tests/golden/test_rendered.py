"""Golden tests: rendering is deterministic and every rendered object is schema-valid. That the committed
files equal a fresh render is checked with every generated file (test_generated.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.support.kube_schemas import validate_object

from ferry.render.bundle import render_files, render_objects
from ferry.spec import load_specs

ROOT = Path(__file__).resolve().parents[2]
ENVS = ("local", "prod")


def models():
    specs, errors = load_specs([ROOT / "gitops/models"])
    assert errors == []
    return [s.model for s in specs]


@pytest.mark.parametrize("env", ENVS)
def test_render_is_deterministic(env: str) -> None:
    assert render_files(models(), env) == render_files(list(reversed(models())), env)


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
