"""Every httpx client ferry makes shares the process' one TLS context (ferry.adapters.tls): a client that builds its
own loads the whole CA bundle, ~20 ms of CPU, which a readiness loop polling every 0.25 s paid four times a second."""

from __future__ import annotations

import ast
import ssl
from pathlib import Path

from ferry.adapters.tls import tls_context

ROOT = Path(__file__).resolve().parents[3]
CLIENT_CALLS = {"get", "post", "put", "patch", "delete", "head", "options", "request", "stream", "Client"}


def clients_without_the_shared_context(path: Path, root: Path = ROOT) -> list[str]:
    """`file:line` of each httpx client call (a `httpx.get` makes one) that passes neither `verify` nor a
    `transport` (a test double, or a transport that brings its own context)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in CLIENT_CALLS
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "httpx"
                and not {"verify", "transport"} & {keyword.arg for keyword in node.keywords}):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_every_client_in_ferry_and_its_workloads_uses_the_shared_tls_context() -> None:
    sources = sorted((ROOT / "platform/src").rglob("*.py")) + sorted((ROOT / "workloads/src").rglob("*.py"))
    assert len(sources) > 100
    offenders = [where for path in sources for where in clients_without_the_shared_context(path)]
    assert offenders == [], f"pass verify=tls_context() (ferry.adapters.tls) to: {offenders}"


def test_the_check_finds_a_client_that_builds_its_own_context(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import httpx\nhttpx.get('http://127.0.0.1:1/x', timeout=1)\n"
                      "httpx.Client(verify=False)\nhttpx.post('http://127.0.0.1:1/y', transport=None)\n")
    assert clients_without_the_shared_context(sample, tmp_path) == ["sample.py:2"]


def test_one_context_per_process() -> None:
    assert tls_context() is tls_context()
    assert tls_context().verify_mode == ssl.CERT_REQUIRED  # still httpx's verifying default
