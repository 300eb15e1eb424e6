"""A client of a cluster's Argo Server for `ferry runs`, `ferry logs` and `ferry submit`, through the
argo-workflows Python SDK (the Argo Server's generated OpenAPI client).

Requests are built by pure functions (`list_kwargs`, `create_request`, `log_kwargs`) so tests can check
them against Argo's JSON Schema. Responses are kept as plain dicts in Argo's JSON shape, read with
`_preload_content=False`: local mode already stores runs in exactly that shape, so the printing is shared,
and the SDK's generated models reject fields a newer server adds (a v4 server behind a v3.7 SDK).

The bearer token comes from the environment at call time and is never written anywhere.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from argo_workflows.api.workflow_service_api import WorkflowServiceApi
from argo_workflows.api.workflow_template_service_api import WorkflowTemplateServiceApi
from argo_workflows.api_client import ApiClient
from argo_workflows.configuration import Configuration
from argo_workflows.exceptions import ApiException, OpenApiException
from argo_workflows.model.io_argoproj_workflow_v1alpha1_arguments import IoArgoprojWorkflowV1alpha1Arguments
from argo_workflows.model.io_argoproj_workflow_v1alpha1_parameter import IoArgoprojWorkflowV1alpha1Parameter
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow import IoArgoprojWorkflowV1alpha1Workflow
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_create_request import (
    IoArgoprojWorkflowV1alpha1WorkflowCreateRequest,
)
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_spec import IoArgoprojWorkflowV1alpha1WorkflowSpec
from argo_workflows.model.io_argoproj_workflow_v1alpha1_workflow_template_ref import (
    IoArgoprojWorkflowV1alpha1WorkflowTemplateRef,
)
from argo_workflows.model.object_meta import ObjectMeta
from urllib3.exceptions import HTTPError

from ferry.contract import names
from ferry.contract.errors import FerryError

# The variables the Argo CLI reads too, so one `export` serves both tools.
ENV_SERVER = "FERRY_ARGO_SERVER"
ENV_NAMESPACE = "FERRY_ARGO_NAMESPACE"
ENV_TOKENS = ("FERRY_ARGO_TOKEN", "ARGO_TOKEN")
ENV_INSECURE = "FERRY_ARGO_INSECURE_SKIP_VERIFY"
DEFAULT_NAMESPACE = "ferry"
# What `ferry runs` prints: asking only for these keeps a list of big Workflows (every node's status) small.
LIST_FIELDS = ("metadata.continue", "items.metadata.name", "items.metadata.labels",
               "items.status.phase", "items.status.startedAt", "items.status.finishedAt",
               "items.status.progress", "items.status.message")
PAGE_SIZE = 100
MAX_PAGES = 50  # 5000 runs: a bound, so a misbehaving server cannot keep the CLI paging forever
POD_NAME_MAX = 253 - 10 - 1  # Argo: k8s name limit, minus the hash and its dash


class ArgoServerError(FerryError):
    """The Argo Server could not be reached or refused a request; the message says what to do."""


@dataclass(frozen=True)
class ArgoTarget:
    """Which Argo Server to talk to. The token is read from the environment and only ever held in memory."""

    url: str
    namespace: str = DEFAULT_NAMESPACE
    token: str | None = field(default=None, repr=False)
    verify_tls: bool = True
    ca_cert: str | None = None
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, url: str, namespace: str | None = None, environ: Mapping[str, str] = os.environ,
                 **options: Any) -> ArgoTarget:
        token = next((environ[name] for name in ENV_TOKENS if environ.get(name)), None)
        insecure = environ.get(ENV_INSECURE, "").lower() in ("1", "true", "yes")
        return cls(url=url.rstrip("/"), namespace=namespace or environ.get(ENV_NAMESPACE) or DEFAULT_NAMESPACE,
                   token=token, verify_tls=not insecure, **options)


# ----------------------------------------------------------------------------------- requests (pure)

def run_selector(model: str | None = None) -> str:
    """Label selector for ferry's pipeline runs (the labels `ferry render` and `ferry submit` set)."""
    selector = f"app.kubernetes.io/part-of={names.PART_OF},app.kubernetes.io/component=pipeline-run"
    return f"{selector},{names.LABEL_MODEL}={model}" if model else selector


def list_kwargs(model: str | None = None, continue_token: str | None = None) -> dict[str, str]:
    """Keyword arguments of WorkflowServiceApi.list_workflows for one page of ferry's runs."""
    kwargs = {"list_options_label_selector": run_selector(model), "list_options_limit": str(PAGE_SIZE),
              "fields": ",".join(LIST_FIELDS)}
    if continue_token:
        kwargs["list_options_continue"] = continue_token
    return kwargs


def create_request(namespace: str, model: str, spec_hash: str, *, retrain: bool,
                   reason: str) -> IoArgoprojWorkflowV1alpha1WorkflowCreateRequest:
    """A Workflow that runs the model's WorkflowTemplate, as a WorkflowCreateRequest.

    Without `retrain` it is the run Argo CD creates for this spec hash (trigger `spec`, the same name, so an
    existing run is found, not repeated); with it a fresh name (trigger `manual`, Argo's generateName), so
    every step runs again and a new version may be registered, as a drift alert's retraining does."""
    trigger = names.TRIGGER_MANUAL if retrain else names.TRIGGER_SPEC
    labels = {**names.labels(model, "pipeline-run", spec_hash), names.LABEL_TRIGGER: trigger}
    naming = ({"generate_name": names.retrain_workflow_prefix(model, trigger)} if retrain
              else {"name": names.workflow_name(model, spec_hash)})
    metadata = ObjectMeta(namespace=namespace, labels=labels,
                          annotations={names.ANNOTATION_REASON: reason, names.ANNOTATION_SUBMITTER: "ferry-cli"},
                          **naming)
    parameters = [IoArgoprojWorkflowV1alpha1Parameter(name=names.PARAM_SPEC_HASH, value=spec_hash),
                  IoArgoprojWorkflowV1alpha1Parameter(name=names.PARAM_TRIGGER, value=trigger)]
    spec = IoArgoprojWorkflowV1alpha1WorkflowSpec(
        workflow_template_ref=IoArgoprojWorkflowV1alpha1WorkflowTemplateRef(
            name=names.workflow_template_name(model)),
        arguments=IoArgoprojWorkflowV1alpha1Arguments(parameters=parameters))
    workflow = IoArgoprojWorkflowV1alpha1Workflow(api_version="argoproj.io/v1alpha1", kind="Workflow",
                                                  metadata=metadata, spec=spec)
    return IoArgoprojWorkflowV1alpha1WorkflowCreateRequest(namespace=namespace, workflow=workflow)


def request_json(model: Any) -> dict[str, Any]:
    """A request model as the JSON the SDK puts on the wire (for `--dry-run`-style checks and tests)."""
    body: dict[str, Any] = ApiClient.sanitize_for_serialization(model)
    return body


def log_kwargs(pod_name: str) -> dict[str, str]:
    """Keyword arguments of WorkflowServiceApi.workflow_logs for the main container of one pod."""
    return {"pod_name": pod_name, "log_options_container": "main"}


# ---------------------------------------------------------------------------------- responses (pure)

def summarize(workflow: Mapping[str, Any]) -> dict[str, Any]:
    """The row `ferry runs` prints, with the same keys as a local run's summary."""
    metadata, status = workflow.get("metadata") or {}, workflow.get("status") or {}
    return {"name": metadata.get("name", ""), "model": (metadata.get("labels") or {}).get(names.LABEL_MODEL, ""),
            "phase": status.get("phase", "Pending"), "startedAt": status.get("startedAt"),
            "finishedAt": status.get("finishedAt"), "progress": status.get("progress", ""),
            "message": status.get("message", "")}


def template_spec_hash(template: Mapping[str, Any]) -> str | None:
    """The spec hash a deployed WorkflowTemplate runs with (its `spec-hash` parameter's default)."""
    for param in ((template.get("spec") or {}).get("arguments") or {}).get("parameters") or []:
        if param.get("name") == names.PARAM_SPEC_HASH and param.get("value"):
            return str(param["value"])
    return None


def _fnv32a(text: str) -> int:
    digest = 0x811C9DC5
    for byte in text.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    return digest


def pod_name(workflow: Mapping[str, Any], node: Mapping[str, Any]) -> str:
    """The pod that ran `node` (Argo's v2 pod names, the default since v3.4; v1 used the node id)."""
    annotations = (workflow.get("metadata") or {}).get("annotations") or {}
    wf_name = str((workflow.get("metadata") or {}).get("name", ""))
    if annotations.get("workflows.argoproj.io/pod-name-format") == "v1":
        return str(node["id"])
    prefix = f"{wf_name}-{node.get('templateName', '')}"[:POD_NAME_MAX]
    return f"{prefix}-{_fnv32a(str(node['name']))}"


def step_pods(workflow: Mapping[str, Any], step: str) -> list[str]:
    """The pods of one DAG task, one per attempt, in order; a clear error for an unknown step."""
    nodes = (workflow.get("status") or {}).get("nodes") or {}
    tasks = [n for n in nodes.values() if n.get("boundaryID") and "(" not in str(n.get("displayName", ""))]
    task = next((n for n in tasks if n.get("displayName") == step), None)
    if task is None:
        known = ", ".join(sorted(str(n.get("displayName")) for n in tasks)) or "none started yet"
        name = (workflow.get("metadata") or {}).get("name")
        raise ArgoServerError(f"run {name!r} has no step {step!r} (steps: {known})")
    if task.get("type") == "Pod":
        return [pod_name(workflow, task)]
    attempts = [nodes[c] for c in task.get("children") or [] if c in nodes and nodes[c].get("type") == "Pod"
                and str(nodes[c].get("displayName", "")).startswith(f"{step}(")]
    return [pod_name(workflow, a) for a in attempts]


def parse_log_stream(body: bytes | str) -> Iterator[str]:
    """Lines of the Argo Server's log stream: newline-delimited `{"result": {"content": ...}}` objects."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    for raw in text.splitlines():
        if not raw.strip():
            continue
        try:
            entry = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ArgoServerError(f"unexpected log stream line from the Argo Server: {raw[:200]!r}; is "
                                  f"--argo-server / {ENV_SERVER} the Argo Server's URL?") from exc
        if "error" in entry:
            raise ArgoServerError(f"the Argo Server could not stream the log: {entry['error'].get('message')}")
        yield str((entry.get("result") or {}).get("content", ""))


# ------------------------------------------------------------------------------------------------ client

class ArgoServer:
    """The calls ferry makes, each a plain dict in Argo's JSON shape or a clear ArgoServerError."""

    def __init__(self, target: ArgoTarget) -> None:
        self.target = target
        config = Configuration(host=target.url, ssl_ca_cert=target.ca_cert)
        config.verify_ssl = target.verify_tls
        config.retries = 2  # urllib3 retries connection errors; the Argo Server restarts with its pod
        if target.token:
            # The Argo CLI's ARGO_TOKEN carries the scheme ("Bearer v2:..."); a bare token gets it added.
            token = target.token if " " in target.token else f"Bearer {target.token}"
            config.api_key = {"BearerToken": token}
        self._client = ApiClient(config)
        self.workflows = WorkflowServiceApi(self._client)
        self.templates = WorkflowTemplateServiceApi(self._client)

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ArgoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, what: str, method: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            response = method(*args, _preload_content=False, _request_timeout=self.target.timeout_s, **kwargs)
        except ApiException as exc:
            if exc.status:  # the SDK reports TLS failures as status 0: those are "cannot reach"
                raise ArgoServerError(self._refusal(what, exc)) from exc
            raise ArgoServerError(f"cannot reach the Argo Server at {self.target.url} ({what}): {exc.reason}. "
                                  f"Check the URL, or {ENV_INSECURE}=1 for a self-signed certificate") from exc
        except (HTTPError, OpenApiException, OSError) as exc:
            raise ArgoServerError(f"cannot reach the Argo Server at {self.target.url} ({what}): {exc}. "
                                  f"Check --argo-server / {ENV_SERVER} (and port-forward or ingress)") from exc
        return response.data

    def _refusal(self, what: str, exc: ApiException) -> str:
        detail = _server_message(exc.body) or exc.reason
        hint = {401: f"set a valid token in {ENV_TOKENS[0]} or ARGO_TOKEN (`argo auth token`)",
                403: f"the token's ServiceAccount may not do this in namespace {self.target.namespace!r}",
                404: "check the name and --namespace"}.get(exc.status, "")
        return f"the Argo Server refused {what}: HTTP {exc.status} {detail}" + (f"; {hint}" if hint else "")

    def _json(self, what: str, method: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        data = self._call(what, method, *args, **kwargs)
        try:
            parsed: dict[str, Any] = json.loads(data)
        except (TypeError, json.JSONDecodeError) as exc:
            raise ArgoServerError(f"the Argo Server answered {what} with something other than JSON; is "
                                  f"--argo-server / {ENV_SERVER} the Argo Server's URL?") from exc
        return parsed

    def list_runs(self, model: str | None = None) -> list[dict[str, Any]]:
        """Every ferry pipeline run in the namespace (optionally of one model), newest first."""
        runs: list[dict[str, Any]] = []
        token: str | None = None
        for _ in range(MAX_PAGES):
            page = self._json("listing workflows", self.workflows.list_workflows, self.target.namespace,
                              **list_kwargs(model, token))
            runs.extend(summarize(item) for item in page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        return sorted(runs, key=lambda r: r["startedAt"] or "", reverse=True)

    def get_run(self, name: str) -> dict[str, Any]:
        return self._json(f"getting workflow {name!r}", self.workflows.get_workflow, self.target.namespace, name)

    def step_log(self, name: str, step: str) -> str:
        """The main container's log of every attempt of `step`, one after the other."""
        workflow = self.get_run(name)
        pods = step_pods(workflow, step)
        parts = []
        for index, pod in enumerate(pods):
            data = self._call(f"the log of {pod}", self.workflows.workflow_logs, self.target.namespace, name,
                              **log_kwargs(pod))
            header = [f"--- attempt {index} ({pod}) ---"] if len(pods) > 1 else []
            parts.extend([*header, *parse_log_stream(data)])
        return "\n".join(parts) + ("\n" if parts else "")

    def deployed_spec_hash(self, model: str) -> str:
        """The spec hash of the model's WorkflowTemplate as Argo CD synced it."""
        name = names.workflow_template_name(model)
        template = self._json(f"getting WorkflowTemplate {name!r}", self.templates.get_workflow_template,
                              self.target.namespace, name)
        digest = template_spec_hash(template)
        if digest is None:
            raise ArgoServerError(f"WorkflowTemplate {name!r} has no {names.PARAM_SPEC_HASH!r} parameter: "
                                  "was it rendered by `ferry render`?")
        return digest

    def submit(self, model: str, *, retrain: bool, reason: str) -> tuple[dict[str, Any], bool]:
        """Create the run: (the Workflow, True). Without `retrain`, an existing run of the deployed spec hash
        is returned as (it, False) instead: the same hash never trains twice unless asked to."""
        digest = self.deployed_spec_hash(model)
        body = create_request(self.target.namespace, model, digest, retrain=retrain, reason=reason)
        try:
            return self._json(f"creating a run of {model!r}", self.workflows.create_workflow,
                              self.target.namespace, body), True
        except ArgoServerError as exc:
            if retrain or not isinstance(exc.__cause__, ApiException) or exc.__cause__.status != 409:
                raise
        return self.get_run(names.workflow_name(model, digest)), False


def _server_message(body: Any) -> str:
    """The `message` of a gRPC-gateway error body, if the body is one."""
    try:
        return str(json.loads(body).get("message", "")) if body else ""
    except (TypeError, ValueError, AttributeError):
        return ""
