"""`ferry up` / `ferry down` for real: a Ray head (token auth on) and an MLflow server on free loopback
ports in a throwaway home; Prometheus and Alertmanager too when their binaries are installed."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from tests.support.binaries import system_command, venv_command

from ferry.adapters.tls import tls_context
from ferry.local.errors import LocalError
from ferry.local.supervisor import procs, service_defs
from ferry.local.supervisor.service_defs import SKIP_HINT, MissingBinary, ray_temp_dir
from ferry.local.supervisor.services import ferry_env, service_processes, service_status, start_services, stop_services
from ferry.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PORT_FIELDS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port",
               "prometheus_port", "alertmanager_port", "receiver_port", "redis_port")


def free_port_settings(home: Path, **extra: object) -> Settings:
    """Settings on ports nobody uses, so the test never meets a developer's own `ferry up`."""
    ports = {field: procs.free_port() for field in PORT_FIELDS}
    return Settings(home=home, ray_cpus=1, ready_timeout_s=90, **{**ports, **extra})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    settings = free_port_settings(tmp_path_factory.mktemp("home"))
    try:
        yield settings
    finally:
        stop_services(settings)
        shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)


@pytest.fixture(scope="module")
def started(settings: Settings) -> dict[str, str]:
    return {s.name: s.state for s in start_services(settings)}


@pytest.mark.parametrize("service", service_defs.OPTIONAL)
def test_optional_services_are_installed(service: str) -> None:
    """`ferry up` skips Prometheus and Alertmanager when they are missing, and so would every assertion
    about them here: under CI that must fail instead (tests/support/binaries.py)."""
    if not service_defs.installed(service):
        system_command(service_defs.BINARIES[service][0])  # Debian's name


def test_up_starts_ray_and_mlflow_ready(settings: Settings, started: dict[str, str]) -> None:
    assert started["ray"] == "started" and started["mlflow"] == "started"
    for name in service_defs.OPTIONAL:
        assert started[name] == ("started" if service_defs.installed(name) else "skipped")
    mlflow = httpx.get(f"http://127.0.0.1:{settings.mlflow_port}/health", timeout=5, trust_env=False,
                       verify=tls_context())
    assert mlflow.status_code == 200
    assert {s.name: s.state for s in service_status(settings)}["ray"] == "running"
    for name in ("ray", "mlflow"):
        assert (settings.logs_dir / f"{name}.log").stat().st_size > 0
        assert (settings.state_dir / "services" / f"{name}.json").exists()


def test_ray_keeps_token_auth_on(settings: Settings, started: dict[str, str]) -> None:
    url = f"{settings.ray_dashboard_url}/api/version"
    assert httpx.get(url, timeout=5, trust_env=False, verify=tls_context()).status_code == 401
    token = (settings.state_dir / "ray" / "auth_token").read_text().strip()
    assert oct((settings.state_dir / "ray" / "auth_token").stat().st_mode & 0o777) == "0o600"
    authed = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=5, trust_env=False,
                       verify=tls_context())
    assert authed.status_code == 200 and authed.json()["ray_version"] == "2.60.0"
    mode = httpx.get(f"{settings.ray_dashboard_url}/api/authentication_mode", timeout=5, trust_env=False,
                     verify=tls_context())
    assert mode.json()["authentication_mode"] == "token"
    # The `ray` CLI works with ferry's environment and is refused without the token variables.
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    status = [venv_command("ray"), "status", "--address", settings.ray_address]  # .venv's, not PATH's
    ok = subprocess.run(status, env={**base, **ferry_env(settings)}, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr[-2000:]
    no_token = {**base, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "HOME": str(settings.home)}
    refused = subprocess.run(status, env=no_token, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "uthentication" in refused.stdout + refused.stderr


def test_redis_keeps_state_behind_a_password(settings: Settings, started: dict[str, str]) -> None:
    """The feature state store: loopback, a password only the owner can read, and an append-only file."""
    password_file = settings.redis_password_file
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    config = settings.state_dir / "redis" / "redis.conf"
    assert oct(config.stat().st_mode & 0o777) == "0o600"
    assert not any(password_file.read_text().strip() in part for part in service_defs.redis_spec(settings).argv)
    assert procs.redis_ok("127.0.0.1", settings.redis_port, password_file.read_text().strip())
    assert not procs.redis_ok("127.0.0.1", settings.redis_port, "not-the-password")
    with socket.create_connection(("127.0.0.1", settings.redis_port), timeout=5) as anonymous:
        anonymous.sendall(b"*1\r\n$4\r\nPING\r\n")
        assert anonymous.recv(256).startswith(b"-NOAUTH")
    assert (settings.state_dir / "redis" / "appendonlydir").is_dir()


def test_everything_listens_on_loopback_only(settings: Settings, started: dict[str, str]) -> None:
    pids = [pid for tree in service_processes(settings).values() for pid in tree]
    sockets = procs.listening_sockets(pids)
    ports = {port for _, port, _ in sockets}
    assert {settings.mlflow_port, settings.ray_port, settings.ray_dashboard_port, settings.ray_metrics_port,
            settings.ray_client_port, settings.redis_port} <= ports
    assert {addr for addr, _, _ in sockets} == {"127.0.0.1"}, sockets


def test_up_twice_leaves_running_services_alone(settings: Settings, started: dict[str, str]) -> None:
    before = {s.name: s.pid for s in service_status(settings)}
    again = start_services(settings)
    assert {s.name: s.state for s in again if s.state != "skipped"} == {
        name: "running" for name, state in started.items() if state != "skipped"}
    assert {s.name: s.pid for s in service_status(settings)} == before
    moved = settings.model_copy(update={"mlflow_port": procs.free_port()})
    with pytest.raises(LocalError, match=r"mlflow .* already runs with ports .*ferry down"):
        start_services(moved, include=["mlflow"])


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        other = free_port_settings(tmp_path / "other", mlflow_port=port)
        with pytest.raises(LocalError, match=rf"port {port} on 127.0.0.1 \(mlflow http\).*FERRY_MLFLOW_PORT"):
            start_services(other, include=["mlflow"])
    assert not (other.state_dir / "services" / "mlflow.json").exists()


def test_generated_commands_and_configs(tmp_path: Path) -> None:
    """What `up` would run, without running it: loopback everywhere, Ray's discovery file scraped."""
    other = free_port_settings(tmp_path / "cfg")
    mlflow = service_defs.mlflow_spec(other).argv
    for flag in ("--serve-artifacts", "--artifacts-destination", "--allowed-hosts", "--cors-allowed-origins"):
        assert flag in mlflow
    assert mlflow[mlflow.index("--host") + 1] == "127.0.0.1" and mlflow[mlflow.index("--workers") + 1] == "1"
    assert mlflow[mlflow.index("--backend-store-uri") + 1] == f"sqlite:///{other.state_dir.resolve()}/mlflow/mlflow.db"
    ray = service_defs.ray_spec(other)
    assert "--node-ip-address=127.0.0.1" in ray.argv and ray.argv[ray.argv.index("--dashboard-host") + 1] == "127.0.0.1"
    assert set(ray.side_ports) == {"dashboard-agent", "autoscaler-metrics", "dashboard-metrics", "haproxy-stats",
                                   "haproxy-metrics", "serve-fallback-http", "serve-fallback-grpc"}  # the default
    # ingress: HAProxy, its side ports and Serve's backup proxy's on loopback
    redis = service_defs.redis_config(other, "secret-for-the-test")  # pragma: allowlist secret
    for line in ("bind 127.0.0.1", f"port {other.redis_port}", "protected-mode yes", "appendonly yes",
                 'requirepass "secret-for-the-test"'):  # pragma: allowlist secret
        assert line in redis.splitlines()
    config = yaml.safe_load(service_defs.prometheus_config(other, with_alertmanager=True))
    assert config["scrape_configs"][0]["file_sd_configs"][0]["files"] == [
        str(ray_temp_dir(other) / "prom_metrics_service_discovery.json")]
    assert config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{other.alertmanager_port}"]


def test_missing_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(name: str, *alternatives: str) -> str:
        raise MissingBinary(f"`{name}` not found")

    monkeypatch.setattr(service_defs, "find_binary", nothing)
    other = free_port_settings(tmp_path / "bare")
    assert [(s.name, s.state, s.message) for s in start_services(other, include=service_defs.OPTIONAL)] == [
        ("redis", "skipped", SKIP_HINT), ("prometheus", "skipped", SKIP_HINT), ("alertmanager", "skipped", SKIP_HINT)]
    with pytest.raises(LocalError, match="cannot start mlflow: `mlflow` not found"):
        start_services(other, include=["mlflow"])


def test_down_leaves_nothing_behind(settings: Settings, started: dict[str, str]) -> None:
    trees = service_processes(settings)
    pids = [pid for tree in trees.values() for pid in tree]
    ports = [getattr(settings, field) for field in PORT_FIELDS]
    assert pids
    stopped = stop_services(settings)
    assert {s.name: s.state for s in stopped if s.name in trees} == {name: "stopped" for name in trees}
    assert [pid for pid in pids if procs.is_alive(pid)] == []
    assert procs.listening_sockets(pids) == []
    assert all(procs.port_free(port) for port in ports)
    assert {s.state for s in service_status(settings)} == {"stopped"}
    assert {s.state for s in stop_services(settings)} == {"not running"}  # down twice is fine too
