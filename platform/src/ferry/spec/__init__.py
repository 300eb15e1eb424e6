"""The model spec: pydantic models of the gitops YAML, its loader, semantic checks and hash."""

from ferry.spec.errors import SpecError, SpecInvalid
from ferry.spec.hashing import spec_hash
from ferry.spec.loader import LoadedSpec, load_spec_file, load_spec_text, load_specs
from ferry.spec.models import ModelSpec

__all__ = [
    "LoadedSpec",
    "ModelSpec",
    "SpecError",
    "SpecInvalid",
    "load_spec_file",
    "load_spec_text",
    "load_specs",
    "spec_hash",
]
