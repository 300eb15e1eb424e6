"""A loopback stand-in for a cluster's Argo Server, for unit tests of `ferry runs|logs|submit --argo-server`.

Argo cannot run here, so this serves the handful of Argo Server REST routes ferry calls, with bodies in
Argo's JSON shape (tests validate them against the vendored schema), and records every request it receives
so tests assert on what the SDK really sent: path, query, headers and JSON body.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any = None


@dataclass
class ArgoState:
    """What the fake cluster holds; tests fill it in."""

    namespace: str = "ferry"
    token: str = "test-token"
    workflows: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: dict[str, dict[str, Any]] = field(default_factory=dict)
    logs: dict[str, list[str]] = field(default_factory=dict)  # pod name -> lines of its main container
    page_size: int = 2  # small, so listing really pages through `continue`
    requests: list[Request] = field(default_factory=list)
    generated: int = 0


def _error(code: int, message: str) -> tuple[int, dict[str, Any]]:
    # The gRPC-gateway error body the Argo Server answers with.
    grpc = {400: 3, 401: 16, 403: 7, 404: 5, 409: 6}.get(code, 2)
    return code, {"code": grpc, "message": message}


class _Handler(BaseHTTPRequestHandler):
    state: ArgoState

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        return

    def _record(self) -> Request:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        request = Request(self.command, parts.path, parse_qs(parts.query), dict(self.headers.items()),
                          json.loads(raw) if raw else None)
        self.state.requests.append(request)
        return request

    def _send(self, code: int, body: Any, content_type: str = "application/json") -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        request = self._record()
        if request.headers.get("Authorization") != f"Bearer {self.state.token}":
            self._send(*_error(401, "token not valid"))
            return
        parts = request.path.strip("/").split("/")
        if len(parts) < 4 or parts[:2] != ["api", "v1"]:
            self._send(*_error(404, f"no route {request.path}"))
            return
        if parts[3] != self.state.namespace:
            self._send(*_error(403, f"not allowed in namespace {parts[3]}"))
            return
        route = (request.method, parts[2], len(parts))
        handlers = {("GET", "workflows", 4): self._list, ("GET", "workflows", 5): self._get,
                    ("GET", "workflows", 6): self._log, ("POST", "workflows", 4): self._create,
                    ("GET", "workflow-templates", 5): self._template}
        handler = handlers.get(route)
        if handler is None:
            self._send(*_error(404, f"no route {request.method} {request.path}"))
            return
        handler(request, parts)

    def _list(self, request: Request, parts: list[str]) -> None:
        wanted = dict(kv.split("=", 1) for kv in request.query.get("listOptions.labelSelector", [""])[0].split(",")
                      if "=" in kv)
        items = [w for w in self.state.workflows.values()
                 if all(w["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())]
        start = int(request.query.get("listOptions.continue", ["0"])[0])
        page = items[start:start + self.state.page_size]
        more = start + self.state.page_size < len(items)
        metadata = {"resourceVersion": "100", **({"continue": str(start + self.state.page_size)} if more else {})}
        self._send(200, {"metadata": metadata, "items": [copy.deepcopy(w) for w in page]})

    def _get(self, request: Request, parts: list[str]) -> None:
        workflow = self.state.workflows.get(parts[4])
        if workflow is None:
            self._send(*_error(404, f'workflows.argoproj.io "{parts[4]}" not found'))
            return
        self._send(200, workflow)

    def _log(self, request: Request, parts: list[str]) -> None:
        if parts[4] not in self.state.workflows or parts[5] != "log":
            self._send(*_error(404, f'workflows.argoproj.io "{parts[4]}" not found'))
            return
        pod = request.query.get("podName", [""])[0]
        lines = [json.dumps({"result": {"content": line, "podName": pod}}) for line in self.state.logs.get(pod, [])]
        self._send(200, ("\n".join(lines) + "\n").encode(), "application/json")

    def _template(self, request: Request, parts: list[str]) -> None:
        template = self.state.templates.get(parts[4])
        if template is None:
            self._send(*_error(404, f'workflowtemplates.argoproj.io "{parts[4]}" not found'))
            return
        self._send(200, template)

    def _create(self, request: Request, parts: list[str]) -> None:
        workflow = copy.deepcopy((request.body or {}).get("workflow") or {})
        metadata = workflow.setdefault("metadata", {})
        if not metadata.get("name"):
            self.state.generated += 1
            metadata["name"] = f"{metadata.get('generateName', 'workflow-')}{self.state.generated:05d}"
        if metadata["name"] in self.state.workflows:
            self._send(*_error(409, f'workflows.argoproj.io "{metadata["name"]}" already exists'))
            return
        metadata.pop("generateName", None)
        metadata.update(namespace=self.state.namespace, uid=f"uid-{metadata['name']}", resourceVersion="101")
        workflow["status"] = {"phase": "Pending"}
        self.state.workflows[metadata["name"]] = workflow
        self._send(200, workflow)


@dataclass
class FakeArgoServer:
    url: str
    state: ArgoState


def serve(state: ArgoState) -> Iterator[FakeArgoServer]:
    """Serve `state` on 127.0.0.1 (a free port) until the generator is closed."""
    handler = type("Handler", (_Handler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield FakeArgoServer(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
