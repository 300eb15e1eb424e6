"""An MLflow that MLFLOW_TRACKING_URI names is used, never started or stopped: `ferry up` waits for it to answer
(a real HTTP server on loopback here, answering /health like MLflow's) and records nothing for it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ferry.local.errors import LocalError
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import service_status, start_services, stop_services
from ferry.settings import Settings


class _Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tracking_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _settings(home: Path, uri: str | None, port: int = 5000) -> Settings:
    return Settings(home=home, mlflow_port=port, **({"MLFLOW_TRACKING_URI": uri} if uri else {}))


@pytest.mark.parametrize(("uri", "external"), [
    (None, False),
    ("http://127.0.0.1:5000", False),  # what ferry_env hands its own children: the local server
    ("http://127.0.0.1:5000/", False),
    ("http://127.0.0.1:5001", True),
    ("https://mlflow.example.com", True),
    ("sqlite:////tmp/mlflow.db", True),
])
def test_only_a_tracking_uri_other_than_the_local_server_is_external(tmp_path: Path, uri: str | None,
                                                                     external: bool) -> None:
    settings = _settings(tmp_path, uri)
    assert settings.mlflow_is_external is external
    assert settings.mlflow_uri == (uri or "http://127.0.0.1:5000")


def test_an_external_server_is_waited_for_and_never_started_or_stopped(tmp_path: Path, tracking_server: str) -> None:
    settings = _settings(tmp_path, tracking_server)
    [status] = start_services(settings, include=["mlflow"], timeout_s=10)
    assert (status.state, status.url, status.pid) == ("external", tracking_server, None)
    assert "MLFLOW_TRACKING_URI" in status.message
    assert not (settings.state_dir / "services" / "mlflow.json").exists()  # no record: `ferry down` stops nothing
    assert [s.state for s in service_status(settings) if s.name == "mlflow"] == ["external"]
    stop_services(settings)
    assert procs.http_ok(f"{tracking_server}/health")  # still answering


def test_an_external_server_that_does_not_answer_is_a_clear_error(tmp_path: Path) -> None:
    silent = f"http://127.0.0.1:{procs.free_port()}"
    with pytest.raises(LocalError, match=r"MLFLOW_TRACKING_URI names .* did not answer .*/health within 1s: "
                                         r"start it, or unset MLFLOW_TRACKING_URI"):
        start_services(_settings(tmp_path, silent), include=["mlflow"], timeout_s=1)


def test_a_tracking_uri_that_is_no_server_has_nothing_to_wait_for(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    [status] = start_services(_settings(tmp_path, uri), include=["mlflow"], timeout_s=1)
    assert (status.state, status.url) == ("external", uri)


def test_credentials_in_the_uri_are_never_shown(tmp_path: Path) -> None:
    uri = f"http://alice:s3cret@127.0.0.1:{procs.free_port()}"  # pragma: allowlist secret (a fake one)
    with pytest.raises(LocalError) as raised:
        start_services(_settings(tmp_path, uri), include=["mlflow"], timeout_s=1)
    assert "s3cret" not in str(raised.value) and "***@127.0.0.1" in str(raised.value)
    [shown] = [s for s in service_status(_settings(tmp_path, uri)) if s.name == "mlflow"]
    assert shown.url is not None and "s3cret" not in shown.url and shown.url.startswith("http://***@127.0.0.1:")
