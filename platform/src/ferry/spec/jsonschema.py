"""The JSON Schema of a spec file, offered to editors (yaml-language-server) and committed to docs."""

from __future__ import annotations

import json

from ferry.spec.models import ModelSpec

SCHEMA_PATH = "docs/reference/model.schema.json"
SCHEMA_ID = "https://ferry.dev/schemas/model-v1.json"


def model_schema_text() -> str:
    schema = ModelSpec.model_json_schema(mode="validation")
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
              **schema, "title": "ferry Model (ferry.dev/v1)"}
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
