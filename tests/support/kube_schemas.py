"""Strict offline validation of rendered Kubernetes manifests against the vendored schemas.

The upstream schemas are vendored in ``tests/schemas`` (its README names each source and version;
``tests/schemas/refresh.py`` recopies :func:`vendored_files`). A missing file is an error, never a skip: a
clone must run every schema test. None of the schemas reject unknown fields and several mistype
IntOrString/Quantity, so every schema is patched once per process before use: a misspelt field must fail
here, because the API server would silently prune it and the platform would run with a default instead.

Public API: :func:`schemas_dir`, :func:`vendored_files`, :func:`validate_object`,
:func:`validate_grafana_dashboard`, :func:`validate_yaml_documents`, :func:`supported_kinds`,
:class:`SchemasNotFoundError`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft4Validator, Draft7Validator, Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

Schema = dict[str, Any]

_SWAGGER = "kubernetes/v1.36.2/swagger-definitions.json"
_ARGO_WORKFLOWS = "argo-workflows/schema.json"
_ARGO_EVENTS = "argo-events/schema.json"
_GRAFANA = "grafana/dashboard.jsonschema.json"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_WF = "io.argoproj.workflow.v1alpha1"
_EV = "io.argoproj.events.v1alpha1"

# (apiVersion, kind) -> (family, target). Core kinds need no entry: any single-GVK swagger definition is found
# through _core_index, so Ingress, CronJob, PDB, ... work as soon as a manifest uses them.
_KINDS: dict[tuple[str, str], tuple[str, str]] = {
    **{
        ("argoproj.io/v1alpha1", k): ("argo", f"{_WF}.{k}")
        for k in (
            "Workflow",
            "WorkflowTemplate",
            "CronWorkflow",
            "ClusterWorkflowTemplate",
            "WorkflowEventBinding",
        )
    },
    **{("argoproj.io/v1alpha1", k): ("events", f"{_EV}.{k}") for k in ("EventSource", "Sensor", "EventBus")},
    ("argoproj.io/v1alpha1", "Application"): ("crd", "argo-cd/application-crd.yaml"),
    ("argoproj.io/v1alpha1", "ApplicationSet"): ("crd", "argo-cd/applicationset-crd.yaml"),
    ("argoproj.io/v1alpha1", "AppProject"): ("crd", "argo-cd/appproject-crd.yaml"),
    ("ray.io/v1", "RayJob"): ("crd", "kuberay/ray.io_rayjobs.yaml"),
    ("ray.io/v1", "RayService"): ("crd", "kuberay/ray.io_rayservices.yaml"),
    **{
        ("monitoring.coreos.com/v1", k): (
            "crd",
            f"prometheus-operator/monitoring.coreos.com_{k.lower()}s.yaml",
        )
        for k in ("PrometheusRule", "PodMonitor")
    },
}
# Only the CRDs of kinds ferry renders are vendored (RayCluster and ServiceMonitor are not): a new kind is a
# new entry here plus `tests/schemas/refresh.py`, and until then every manifest using it fails validation.

_COMBINATORS = ("allOf", "anyOf", "oneOf")
_SCHEMA_MAPS = ("properties", "patternProperties", "definitions", "$defs", "dependentSchemas")
_SCHEMA_SINGLE = (
    "additionalProperties",
    "items",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "additionalItems",
    "unevaluatedItems",
    "unevaluatedProperties",
)
_SCHEMA_LISTS = (*_COMBINATORS, "prefixItems", "items")
_IDENT = re.compile(r"[A-Za-z_$][\w$-]*\Z")
_RE2_LEADING_FLAGS = re.compile(r"\^(\(\?[a-zA-Z]+\))")
_MAX_MESSAGE = 240


class SchemasNotFoundError(FileNotFoundError):
    """A vendored schema file is missing from tests/schemas: the test fails (never skips) and says how to
    recopy it."""


# -------------------------------------------------------------------------------------- locating files

_SCHEMAS = Path(__file__).resolve().parents[1] / "schemas"


def schemas_dir() -> Path:
    """``tests/schemas``: the upstream schemas vendored with the project (nothing outside the repo)."""
    return _SCHEMAS


def vendored_files() -> tuple[str, ...]:
    """Every upstream file the validator reads, relative to :func:`schemas_dir`: what refresh.py copies."""
    crds = {target for family, target in _KINDS.values() if family == "crd"}
    return tuple(sorted({_SWAGGER, _ARGO_WORKFLOWS, _ARGO_EVENTS, _GRAFANA, *crds}))


def _read(root: str, rel: str) -> Any:
    path = Path(root, rel)
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise SchemasNotFoundError(
            f"{path} is missing: recopy the vendored schemas with `python tests/schemas/refresh.py --from DIR` "
            "(tests/schemas/README.md names each upstream source and version)"
        ) from exc
    with fh:
        if path.suffix == ".json":
            return json.load(fh)
        # The CRDs are megabytes of YAML: the C loader is ~10x faster than the pure-Python one.
        return yaml.load(fh, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


# ------------------------------------------------------------------------------------- schema patching


def _walk(node: Any, visit: Callable[[Schema], None]) -> None:
    """Call ``visit`` on every subschema, pre-order. Only keyword positions that hold schemas are followed, so
    data keywords (enum, default, examples) and property *names* such as ``properties: {not: ...}`` are never
    mistaken for schemas."""
    if not isinstance(node, dict):
        return
    visit(node)
    for key in _SCHEMA_MAPS:
        if isinstance(node.get(key), dict):
            for sub in node[key].values():
                _walk(sub, visit)
    for key in _SCHEMA_SINGLE:
        _walk(node.get(key), visit)
    for key in _SCHEMA_LISTS:
        if isinstance(node.get(key), list):
            for sub in node[key]:
                _walk(sub, visit)


def _deref(schema: Schema, defs: Schema) -> Schema:
    ref = schema.get("$ref", "")
    if isinstance(ref, str) and ref.startswith("#/definitions/"):
        return defs.get(ref.removeprefix("#/definitions/"), {})
    return schema


def _names(schema: Any, defs: Schema) -> set[str]:
    return set(_deref(schema, defs).get("properties", {})) if isinstance(schema, dict) else set()


def _reconcile_compositions(node: Schema, defs: Schema) -> None:
    """``additionalProperties`` only sees the ``properties`` beside it, so once parent and branches are strict
    they would reject each other's fields. The parent accepts every branch's names; an allOf branch applies
    whichever alternative is taken, so it accepts all names; an anyOf/oneOf branch accepts the parent's and
    the allOf names but not its sibling alternatives' (that is what tells the alternatives apart)."""
    own = set(node.get("properties", {}))
    names = {key: set().union(*(_names(b, defs) for b in node.get(key, []))) for key in _COMBINATORS}
    for key in _COMBINATORS:
        allowed = own | names["allOf"] | (names["anyOf"] | names["oneOf"] if key == "allOf" else set())
        for branch in node.get(key, []):
            extra = allowed - _names(branch, defs)
            if not isinstance(branch, dict) or not extra or "properties" not in _deref(branch, defs):
                continue
            if "$ref" in branch:
                # A shared definition cannot be widened for one use site; no vendored schema needs it.
                raise NotImplementedError(
                    f"strict composition over a $ref with sibling fields: {branch['$ref']}"
                )
            for name in extra:
                branch["properties"].setdefault(name, {})
    if "properties" in node:
        for name in set().union(*names.values()):
            node["properties"].setdefault(name, {})


def _nullable_to_type(node: Schema) -> None:
    # OpenAPI's `nullable` is no JSON Schema keyword (KubeRay's lastUpdateTime uses it).
    if node.pop("nullable", False) is not True:
        return
    kind = node.get("type")
    if isinstance(kind, str):
        node["type"] = [kind, "null"]
    if isinstance(node.get("enum"), list) and None not in node["enum"]:
        node["enum"] = [*node["enum"], None]
    if "anyOf" in node:
        node["anyOf"] = [*node["anyOf"], {"type": "null"}]


def _python_pattern(pattern: str) -> str:
    # RE2 accepts inline flags after '^' (PrometheusRule: ^(?i)(abort|warn)?$); Python's re wants them first.
    match = _RE2_LEADING_FLAGS.match(pattern)
    return f"{match.group(1)}^{pattern[match.end() :]}" if match else pattern


def _drop_defaulted_required(node: Schema) -> None:
    # The API server applies CRD `default`s before validating, so a defaulted field is never missing
    # (KubeRay workerGroupSpecs require minReplicas/maxReplicas but default them to 0/2147483647).
    props, required = node.get("properties"), node.get("required")
    if isinstance(props, dict) and isinstance(required, list):
        node["required"] = [
            r for r in required if not (isinstance(props.get(r), dict) and "default" in props[r])
        ]


def _tighten(node: Schema, defs: Schema) -> None:
    """Patch one subschema in place: nullable, RE2 pattern, defaults, compositions, strictness."""
    _nullable_to_type(node)
    if isinstance(node.get("pattern"), str):
        node["pattern"] = _python_pattern(node["pattern"])
    _drop_defaulted_required(node)
    _reconcile_compositions(node, defs)
    if "properties" not in node or node.get("x-kubernetes-preserve-unknown-fields") is True:
        return  # preserve-unknown is not inherited: its children are still tightened by _walk
    if node.get("x-kubernetes-embedded-resource") is True:
        for name in ("apiVersion", "kind"):
            node["properties"].setdefault(name, {"type": "string"})
        node["properties"].setdefault("metadata", {"type": "object"})
    node.setdefault("additionalProperties", False)


def _harden(schema: Schema, defs: Schema) -> None:
    _walk(schema, lambda node: _tighten(node, defs))


def _patch_k8s_scalars(defs: Schema) -> None:
    """Fix the k8s scalar wrappers that the generators type as plain string."""
    defs["io.k8s.apimachinery.pkg.util.intstr.IntOrString"] = {
        "type": ["string", "integer"]
    }  # targetPort: 8080
    defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = {"type": ["string", "number"]}  # cpu: 2
    # kubectl create --dry-run and kustomize emit `creationTimestamp: null`, which the server accepts.
    defs[f"{_META}.Time"] = {"type": ["string", "null"]}


@functools.cache
def _swagger_definitions(root: str) -> Schema:
    defs: Schema = _read(root, _SWAGGER)["definitions"]
    _patch_k8s_scalars(defs)
    for definition in defs.values():
        _harden(definition, defs)
    return defs


@functools.cache
def _argo_definitions(root: str, rel: str) -> Schema:
    defs: Schema = _read(root, rel)["definitions"]
    _patch_k8s_scalars(defs)
    if rel == _ARGO_EVENTS:
        # Over-strict `required` (every Go field without omitempty): the usual webhook has no `url`.
        for name in ("WebhookContext", "WebhookEventSource"):
            defs[f"{_EV}.{name}"]["required"] = [r for r in defs[f"{_EV}.{name}"]["required"] if r != "url"]
    for definition in defs.values():
        _harden(definition, defs)
    return defs


@functools.cache
def _core_index(root: str) -> dict[tuple[str, str], str]:
    """(apiVersion, kind) -> swagger definition, for definitions that are exactly one kind."""
    index: dict[tuple[str, str], str] = {}
    for name, definition in _read(root, _SWAGGER)["definitions"].items():
        gvks = definition.get("x-kubernetes-group-version-kind", [])
        if len(gvks) == 1:  # DeleteOptions, WatchEvent, ... list many GVKs and are no standalone kind
            gvk = gvks[0]
            api_version = f"{gvk['group']}/{gvk['version']}" if gvk["group"] else gvk["version"]
            index[(api_version, gvk["kind"])] = name
    return index


# ------------------------------------------------------------------------------------------ validators


def _pin_type_meta(schema: Schema, api_version: str, kind: str, metadata: Schema | None = None) -> Schema:
    """Copy the top-level schema with apiVersion/kind fixed (enum: Draft 4 has no const) and required."""
    props = {
        **schema.get("properties", {}),
        "apiVersion": {"type": "string", "enum": [api_version]},
        "kind": {"type": "string", "enum": [kind]},
    }
    if metadata is not None:
        props["metadata"] = metadata
    required = sorted({*schema.get("required", []), "apiVersion", "kind"})
    return {**schema, "properties": props, "required": required, "additionalProperties": False}


def _argo_validator(root: str, rel: str, definition: str, api_version: str, kind: str) -> Validator:
    defs = _argo_definitions(root, rel)
    top = _pin_type_meta(defs[definition], api_version, kind)
    return Draft202012Validator({**top, "definitions": defs})


def _crd_validator(root: str, rel: str, api_version: str) -> Validator:
    spec = _read(root, rel)["spec"]
    version = api_version.rpartition("/")[2]
    matches = [v for v in spec["versions"] if v["name"] == version]
    if not matches:
        raise ValueError(f"{rel} has no version {version!r}")
    schema: Schema = matches[0]["schema"]["openAPIV3Schema"]
    _harden(schema, {})
    # apiVersion/kind come from the CRD itself, so a registry entry naming the wrong file shows up as errors.
    # CRD `metadata` is only `type: object`; the strict swagger ObjectMeta catches `metadata.lables` too.
    meta = {"$ref": f"#/definitions/{_META}.ObjectMeta"}
    top = _pin_type_meta(schema, f"{spec['group']}/{version}", spec["names"]["kind"], meta)
    return Draft202012Validator({**top, "definitions": _swagger_definitions(root)})


def _core_validator(root: str, definition: str, api_version: str, kind: str) -> Validator:
    defs = _swagger_definitions(root)
    top = _pin_type_meta(defs[definition], api_version, kind)
    return Draft4Validator({**top, "definitions": defs})


@functools.cache
def _validator(root: str, api_version: str, kind: str) -> Validator | None:
    """Build (once per kind per process: the schemas are megabytes) the strict validator for a kind."""
    family, target = _KINDS.get((api_version, kind), ("core", _core_index(root).get((api_version, kind), "")))
    if family == "argo":
        return _argo_validator(root, _ARGO_WORKFLOWS, target, api_version, kind)
    if family == "events":
        return _argo_validator(root, _ARGO_EVENTS, target, api_version, kind)
    if family == "crd":
        return _crd_validator(root, target, api_version)
    return _core_validator(root, target, api_version, kind) if target else None


@functools.cache
def _grafana_validator(root: str) -> Validator:
    return Draft7Validator(_read(root, _GRAFANA))  # already strict: additionalProperties false upstream


def supported_kinds() -> frozenset[tuple[str, str]]:
    """Every (apiVersion, kind) that :func:`validate_object` has a schema for."""
    root = str(schemas_dir())
    return frozenset(_KINDS) | frozenset(_core_index(root))


# -------------------------------------------------------------------------------------- error messages


def _json_path(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "(root)"


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _unknown_fields(err: ValidationError) -> list[str]:
    schema = err.schema if isinstance(err.schema, dict) else {}
    known = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    instance = err.instance if isinstance(err.instance, dict) else {}
    return [k for k in instance if k not in known and not any(re.search(p, k) for p in patterns)]


def _closest_branch(err: ValidationError) -> tuple[int, list[ValidationError]]:
    """The anyOf/oneOf branch that failed least (fewest errors, then deepest): likely the intended one."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in err.context:
        branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    return min(branches.items(), key=lambda kv: (len(kv[1]), -max(len(e.absolute_path) for e in kv[1])))


def _describe(err: ValidationError) -> list[str]:
    path = list(err.absolute_path)
    if err.validator == "additionalProperties" and err.validator_value is False:
        # Name the offending field in the path: that is what a reader greps the manifest for.
        unknown = _unknown_fields(err)
        if unknown:
            return [f"{_json_path([*path, name])}: unknown field {name!r} (typo?)" for name in unknown]
    if err.validator in ("anyOf", "oneOf") and err.context:
        # The default message dumps the whole instance and says nothing about why; the closest branch's does.
        index, subs = _closest_branch(err)
        head = f"{_json_path(path)}: matches no {err.validator} alternative; closest is #{index}"
        return [f"{head}: {line}" for sub in subs for line in _describe(sub)]
    return [f"{_json_path(path)}: {_shorten(err.message)}"]


def _format(errors: Iterable[ValidationError]) -> list[str]:
    messages: list[str] = []
    for err in errors:
        messages.extend(m for m in _describe(err) if m not in messages)
    return sorted(messages)


# ------------------------------------------------------------------------------------------ public API


def validate_object(obj: Any) -> list[str]:
    """Strictly validate one Kubernetes object; return errors as ``<json.path>: <problem>``, [] if valid."""
    if not isinstance(obj, dict):
        return [f"(root): expected a Kubernetes object (mapping), got {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return [f"(root): apiVersion and kind must be strings, got {api_version!r} / {kind!r}"]
    validator = _validator(str(schemas_dir()), api_version, kind)
    if validator is None:
        known = sorted(v for v, k in supported_kinds() if k == kind)
        hint = f" (known apiVersions for {kind}: {', '.join(known)})" if known else ""
        return [f"(root): no schema is known for apiVersion {api_version!r} kind {kind!r}{hint}"]
    return _format(validator.iter_errors(obj))


def validate_grafana_dashboard(dashboard: Any) -> list[str]:
    """Validate a classic (schemaVersion) Grafana dashboard JSON model."""
    return _format(_grafana_validator(str(schemas_dir())).iter_errors(dashboard))


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader without the YAML 1.1 timestamp rule: like the API server's decoder, keep dates as strings.
    (yes/on still become booleans, as they do for kubectl, so those mistakes are still caught.)"""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _objects(docs: list[Any]) -> Iterator[tuple[str, Any]]:
    """(label, object) per document, 0-based; `kind: List` items are labelled ``<doc>.items[<i>]``."""
    for index, doc in enumerate(docs):
        if doc is None:
            continue
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            for item_index, item in enumerate(doc["items"]):
                yield f"{index}.items[{item_index}]", item
        else:
            yield str(index), doc


def _identity(obj: Any) -> str:
    if not isinstance(obj, dict):
        return "?/?"
    meta: dict[str, Any] = obj["metadata"] if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") or (f"{meta['generateName']}*" if meta.get("generateName") else "<unnamed>")
    return f"{obj.get('kind', '?')}/{name}"


def validate_yaml_documents(path: Path | str) -> list[str]:
    """Validate every object of a multi-document YAML file; errors read ``file:doc Kind/name: problem``."""
    path = Path(path)
    try:
        docs = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_ManifestLoader))
    except yaml.YAMLError as exc:
        return [f"{path}: invalid YAML: {exc}"]
    errors: list[str] = []
    for label, obj in _objects(docs):
        errors.extend(f"{path}:{label} {_identity(obj)}: {msg}" for msg in validate_object(obj))
    return errors


def argo_definitions() -> Schema:
    """The hardened (strict) Argo Workflows definitions, keyed like ``io.argoproj.workflow.v1alpha1.Workflow``."""
    return _argo_definitions(str(schemas_dir()), _ARGO_WORKFLOWS)


def validate_argo_definition(obj: Any, definition: str) -> list[str]:
    """Strictly validate an Argo Server API object that is no Kubernetes kind (a request body such as
    WorkflowCreateRequest, a WorkflowList page, a LogEntry) against its definition in the vendored schema.
    A bare name (``WorkflowCreateRequest``) means ``io.argoproj.workflow.v1alpha1.<name>``."""
    name = definition if "." in definition else f"{_WF}.{definition}"
    defs = argo_definitions()
    if name not in defs:
        return [f"(root): no Argo Workflows definition {name!r}"]
    validator = Draft202012Validator({"$ref": f"#/definitions/{name}", "definitions": defs})
    return _format(validator.iter_errors(obj))
