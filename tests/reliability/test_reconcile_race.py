"""Two `ferry up`s racing on one model (a `--watch` and a manual run, two terminals): both succeed, exactly
one registration. The full-length scenario runs two real CLI processes together against one Ray head and
one MLflow server (a tiny pipeline takes a minute or two on two cores). The CI-length one pins down the
race that made one of them exit 1 within seconds: both found a service (Prometheus, the receiver)
unrecorded and both spawned it, and the second lost the port; it forces that interleaving every time.
The runner-kill and Ray-Train-worker-kill scenarios live in tests/integration (test_pipeline.py,
test_train_resume.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.adapters.registry import Registry
from ferry.contract import names
from ferry.local.errors import LocalError
from ferry.local.supervisor import procs, services
from ferry.local.supervisor.service_defs import ServiceSpec
from ferry.local.supervisor.services import ServiceStatus, ferry_env, start_services, stop_services
from ferry.settings import Settings
from ferry.spec import load_spec_file, spec_hash
from tests.integration.test_pipeline import PORT_FIELDS, write_spec
from tests.reliability.conftest import FULL, Record
from tests.support.local_stack import stopping

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(1200)]
full_only = pytest.mark.skipif(not FULL, reason="full length only: task reliability (RELIABILITY_MODE=full)")
MODEL = "tiny-race"
CHECK_PORTS_S = 1.0  # how long each starter dwells between "no record" and its spawn (the race window)


def web_spec(settings: Settings) -> ServiceSpec:
    """A stand-in service that starts in a second and, like every real one, fails when its port is taken."""
    port = settings.receiver_port
    return ServiceSpec(name="receiver", argv=[sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                       ports={"http": (port, "receiver_port")}, url=f"http://127.0.0.1:{port}",
                       ready_url=f"http://127.0.0.1:{port}/")


def test_two_processes_starting_services_at_once_start_each_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record: Record) -> None:
    """Two starters at once, each dwelling CHECK_PORTS_S after finding no record (so without the services
    lock both would spawn, every time): one starts the service, the other waits, says so, and adopts it."""
    settings = Settings(home=tmp_path, ready_timeout_s=30, receiver_port=procs.free_port())
    check_ports = services._check_ports

    def slow_check(spec: ServiceSpec, settings: Settings) -> None:
        check_ports(spec, settings)
        time.sleep(CHECK_PORTS_S)

    monkeypatch.setattr(services, "build_spec", lambda name, settings, included: web_spec(settings))
    monkeypatch.setattr(services, "_check_ports", slow_check)
    results: dict[int, list[ServiceStatus] | BaseException] = {}
    waits: list[str] = []

    def start(i: int) -> None:
        try:
            results[i] = start_services(settings, include=["receiver"], on_wait=waits.append)
        except LocalError as exc:
            results[i] = exc

    starters = [threading.Thread(target=start, args=(i,)) for i in range(2)]
    try:
        for starter in starters:
            starter.start()
        for starter in starters:
            starter.join(60)
        states = sorted(r[0].state if isinstance(r, list) else repr(r) for r in results.values())
        record("two processes starting the local services at once", "both succeed: one starts each service, "
               "the other waits for it (one progress line) and adopts it", states=states, waits=waits)
        assert states == ["running", "started"], results
        assert len(waits) == 1 and waits[0].startswith("Waiting for the lock on the local services (held by pid")
    finally:
        stop_services(settings)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("race-home")
    (home / "gitops/models").mkdir(parents=True)
    write_spec(home, MODEL)
    settings = Settings(home=home, ready_timeout_s=120, **{f: procs.free_port() for f in PORT_FIELDS})
    with stopping(settings):
        start_services(settings, include=["ray", "mlflow"])
        yield settings


@full_only
def test_two_racing_ups_register_exactly_one_version(settings: Settings, record: Record) -> None:
    spec, _ = load_spec_file(settings.home / "gitops/models" / f"{MODEL}.yaml")
    assert spec is not None
    digest = spec_hash(spec.model)
    env = {**os.environ, **ferry_env(settings), "COLUMNS": "200"}
    logs = [settings.home / f"up-{i}.log" for i in range(2)]
    started = time.monotonic()
    runners = []
    for log in logs:
        with log.open("wb") as out:
            runners.append(subprocess.Popen([sys.executable, "-m", "ferry.cli.app", "up", MODEL], env=env,
                                            cwd=settings.home, stdout=out, stderr=subprocess.STDOUT))
    seconds = []
    try:
        for runner in runners:
            runner.wait(timeout=900)
            seconds.append(round(time.monotonic() - started, 1))
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
    texts = [Path(log).read_text(errors="replace") for log in logs]
    versions = Registry(settings.mlflow_uri).client.search_model_versions(
        f"name = '{names.registered_model_name(MODEL)}'")
    same_hash = [v for v in versions if v.tags.get(names.TAG_SPEC_HASH) == digest]
    waited = [line.strip() for t in texts for line in t.splitlines() if line.startswith("Waiting for")]
    record("two reconciles racing on one model", "both exit 0; exactly 1 registered version; the second "
           "waits for the first (a progress line) and reports up-to-date",
           exit_codes=[r.returncode for r in runners], seconds=seconds, versions=len(versions),
           versions_with_hash=len(same_hash), up_to_date=sum("up-to-date" in t for t in texts), waited=waited)
    assert [r.returncode for r in runners] == [0, 0], [t[-2000:] for t in texts]
    assert len(versions) == len(same_hash) == 1, versions
    [second] = [t for t in texts if "up-to-date" in t]
    assert f"Waiting for the lock on model {MODEL}" in second, [t[-1500:] for t in texts]
