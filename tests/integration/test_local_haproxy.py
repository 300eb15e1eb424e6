"""The local head in HAProxy mode (`FERRY_LOCAL_INGRESS=haproxy`), for real: a Ray head started with Ray's
high-throughput ingress on free loopback ports, a tiny registered champion, the router deployed with
`deploy_local`, then single and batch predictions through HAProxy, no listener beyond loopback but the replicas'
token-guarded gRPC servers, and no HAProxy left once the services stop. Its speed against `mlflow models serve`
is measured by benchmarks/bench_serving.py --ray-high-throughput (docs/benchmarks/serving-high-throughput.md)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.integration.test_serving import register_version, serving_spec
from tests.support.local_stack import restored_environ, stopping
from tests.support.serving_fakes import transaction, transactions

from ferry.adapters.registry import Registry
from ferry.adapters.tls import tls_context
from ferry.contract import names
from ferry.local.supervisor import local_ingress, procs
from ferry.local.supervisor.services import (
    service_listeners,
    service_processes,
    start_services,
    stop_services,
    use_ray_client_env,
)
from ferry.serving import haproxy_launch
from ferry.serving.deploy import deploy_local, predict_once
from ferry.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Iterator[Settings]:
    ports = {field: procs.free_port() for field in PORTS}
    # The session's MLflow (tests/integration/conftest.py): this module's Ray head is what it tests.
    settings = Settings(home=tmp_path_factory.mktemp("haproxy-home"), ray_cpus=1, ready_timeout_s=90,
                        local_ingress="haproxy", MLFLOW_TRACKING_URI=mlflow_uri, **ports)  # type: ignore[arg-type]
    with restored_environ(), stopping(settings):
        yield settings


@pytest.fixture(scope="module")
def served(settings: Settings) -> dict[str, Any]:
    start_services(settings, include=["ray", "mlflow"])
    spec = serving_spec()
    Registry(settings.mlflow_uri).ensure_registered_model(spec.name, "test")
    champion = register_version(settings, spec.name, 1)
    Registry(settings.mlflow_uri).set_alias(spec.name, names.ALIAS_CHAMPION, champion)
    use_ray_client_env(settings)
    return {"url": deploy_local(settings, spec, poll_interval_s=1.0, timeout_s=240), "champion": champion}


def test_haproxy_answers_on_the_serve_port_and_the_router_scores(settings: Settings, served: dict[str, Any]) -> None:
    on_serve_port = [title for _, port, title in service_listeners(settings) if port == settings.serve_port]
    assert on_serve_port and all("haproxy" in title for title in on_serve_port), on_serve_port
    body = predict_once(served["url"], transaction(customer_id=7), path="/predict/features")
    assert body["version"] == served["champion"] and 0 <= body["score"] <= 1
    batch = httpx.post(f"{served['url']}/predict/features/batch", json=transactions(10), timeout=10, trust_env=False,
                       verify=tls_context())
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 10
    bad = httpx.post(f"{served['url']}/predict/features", json=transaction(tx_amount="a lot"), timeout=10,
                     trust_env=False, verify=tls_context())
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "tx_amount"]


def test_no_listener_beyond_loopback_but_the_replicas_grpc(settings: Settings, served: dict[str, Any]) -> None:
    """HAProxy's stats page and Prometheus exporter, which Ray's template binds to every interface, are on
    loopback (ferry.local.supervisor.haproxy_loopback); the replicas' gRPC servers are Ray's own [::] binds,
    token-guarded (tests/reliability/test_serving_reliability.py)."""
    listeners = service_listeners(settings)
    haproxy = [(addr, port) for addr, port, title in listeners if "haproxy" in title]
    assert len(haproxy) >= 3, listeners  # the Serve port, the stats page, the exporter
    outside = [(addr, port, title) for addr, port, title in listeners if addr != settings.host]
    assert [entry for entry in outside if not entry[2].startswith("ray::ServeReplica:")] == [], outside
    config = next(local_ingress.haproxy_dir(settings).rglob("haproxy.cfg")).read_text()
    assert "bind *:" not in config and "bind :" not in config
    assert haproxy_launch.SERVER_CLOSE in config


def test_haproxys_backup_server_is_this_heads_own_serve_proxy(settings: Settings, served: dict[str, Any]) -> None:
    """What answers while no replica is up: Serve's Python proxy of this head, on a port of its own. On Ray's
    fixed 8500 every head's HAProxy named the same backup, whichever head's proxy held the port."""
    record = json.loads((settings.state_dir / "services" / "ray.json").read_text())
    fallback = record["ports"]["serve-fallback-http"]
    config = next(local_ingress.haproxy_dir(settings).rglob("haproxy.cfg")).read_text()
    backups = re.findall(r"^\s*server \S+ (\S+) check backup$", config, re.MULTILINE)
    assert backups == [f"{settings.host}:{fallback}"], config
    listeners = service_listeners(settings)
    assert [title for _, port, title in listeners if port == fallback] == ["ray::ProxyActor"], listeners


def test_a_413_closes_the_clients_connection_and_says_so(served: dict[str, Any]) -> None:
    """The router refuses an oversized body before reading it; HAProxy then closes the client's connection, and the
    client must know before it sends the next request there (ferry.serving.haproxy_launch)."""
    over = json.dumps(transactions(200)).encode()  # ~80 kB against serving_spec's max_body_bytes of 16 kB

    def chunks() -> Iterator[bytes]:  # no Content-Length: refused once the count passes the limit
        for start in range(0, len(over), 4096):
            yield over[start:start + 4096]

    with httpx.Client(trust_env=False, timeout=10, verify=tls_context()) as client:
        for body in (over, chunks()):
            refused = client.post(f"{served['url']}/predict/features/batch", content=body,
                                  headers={"content-type": "application/json"})
            assert refused.status_code == 413 and refused.headers.get("connection") == "close", refused.headers
            after = client.post(f"{served['url']}/predict/features", json=transaction(customer_id=7))
            assert after.status_code == 200


def test_stopping_the_services_leaves_no_haproxy(settings: Settings, served: dict[str, Any]) -> None:
    pids = [pid for tree in service_processes(settings).values() for pid in tree]
    haproxy = [pid for pid in pids if "haproxy" in procs.process_title(pid)]
    assert haproxy
    stop_services(settings)
    assert not [pid for pid in haproxy if "haproxy" in procs.process_title(pid)]  # "" once a process is gone
    assert not local_ingress.haproxy_dir(settings).exists()  # its launcher, config and sockets went with it
