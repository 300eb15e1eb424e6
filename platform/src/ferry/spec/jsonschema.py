"""The JSON Schema of a spec file, offered to editors (yaml-language-server) and committed to docs.

Workload parameters are typed by the installed workloads' own models: for each workload an if/then rule
on `spec.workload` points `data.params` and `training.params` at that workload's models (copied into
`$defs` as `<workload>.<Model>`) and limits the tune space to its tunable params.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from ferry.spec.checks import WorkloadFacts
from ferry.spec.models import ModelSpec

SCHEMA_PATH = "docs/reference/model.schema.json"
SCHEMA_ID = "https://ferry.dev/schemas/model-v1.json"


def model_schema(workloads: Mapping[str, WorkloadFacts]) -> dict[str, Any]:
    schema = ModelSpec.model_json_schema(mode="validation")
    defs = schema["$defs"]
    rules = [_workload_rule(name, facts, defs) for name, facts in sorted(workloads.items())]
    if rules:
        defs["ModelBody"]["allOf"] = rules
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            **schema, "title": "ferry Model (ferry.dev/v1)"}


def model_schema_text(workloads: Mapping[str, WorkloadFacts]) -> str:
    return json.dumps(model_schema(workloads), indent=2, sort_keys=True) + "\n"


def _workload_rule(name: str, facts: WorkloadFacts, defs: dict[str, Any]) -> dict[str, Any]:
    training = _add_model(defs, name, facts.training_params)
    space = {"propertyNames": {"enum": list(facts.tunable_params)},
             "properties": {key: {"properties": {"choice": {"items": _ref(f"{training}/properties/{key}")}}}
                            for key in facts.tunable_params}}
    return {
        "if": {"properties": {"workload": {"const": name}}, "required": ["workload"]},
        "then": {"properties": {
            "data": {"properties": {"params": _ref(_add_model(defs, name, facts.data_params))}},
            "training": {"properties": {"params": _ref(training), "tune": {"properties": {"space": space}}}},
        }},
    }


def _add_model(defs: dict[str, Any], workload: str, model: type[BaseModel]) -> str:
    """Put `model`'s schema (and the models it nests) into `defs` under the workload's prefix; its key."""
    prefix = f"{workload}."
    schema = model.model_json_schema(mode="validation", ref_template=f"#/$defs/{prefix}{{model}}")
    defs.update({f"{prefix}{key}": nested for key, nested in schema.pop("$defs", {}).items()})
    defs[f"{prefix}{model.__name__}"] = schema
    return f"{prefix}{model.__name__}"


def _ref(key: str) -> dict[str, str]:
    return {"$ref": f"#/$defs/{key}"}
