"""Two `ferry up`s racing on one model (a `--watch` and a manual run, two terminals): exactly one
registration. Real processes: two CLI invocations started together against one Ray head and one MLflow
server. Full length only (a tiny pipeline takes a minute or two on two cores); the runner-kill and
Ray-Train-worker-kill scenarios live in tests/integration (test_pipeline.py, test_train_resume.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ferry.adapters.registry import Registry
from ferry.contract import names
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import ferry_env, start_services
from ferry.settings import Settings
from ferry.spec import load_spec_file, spec_hash
from tests.integration.test_pipeline import PORT_FIELDS, write_spec
from tests.reliability.conftest import FULL, Record
from tests.support.local_stack import stopping

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(1200),
              pytest.mark.skipif(not FULL, reason="full length only: task reliability (RELIABILITY_MODE=full)")]
MODEL = "tiny-race"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    home = tmp_path_factory.mktemp("race-home")
    (home / "gitops/models").mkdir(parents=True)
    write_spec(home, MODEL)
    settings = Settings(home=home, ready_timeout_s=120, **{f: procs.free_port() for f in PORT_FIELDS})
    with stopping(settings):
        start_services(settings, include=["ray", "mlflow"])
        yield settings


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
    record("two reconciles racing on one model", "both exit 0; exactly 1 registered version",
           exit_codes=[r.returncode for r in runners], seconds=seconds, versions=len(versions),
           versions_with_hash=len(same_hash), up_to_date=sum("up-to-date" in t for t in texts))
    assert [r.returncode for r in runners] == [0, 0], [t[-2000:] for t in texts]
    assert len(versions) == len(same_hash) == 1, versions
    assert sum("up-to-date" in t for t in texts) == 1, [t[-1500:] for t in texts]
