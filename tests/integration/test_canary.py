"""The canary for real: a Ray head and Prometheus on free loopback ports in a throwaway home, the test process'
MLflow server (the model under a name of this module's own), a tiny champion deployed with `deploy_local` (fault
injection allowed), bounded synthetic traffic, and `ferry.rollout.controller.Controller` deciding from the real
`prometheus_observer`.

A healthy challenger walks the steps and is promoted without one failed request or a redeploy; one with
injected errors, and one with injected latency, are rolled back naming the failed check; one that gets
no traffic is never promoted and is rolled back after hold_timeout.

The rollout steps are short (20/50/100, checks every 5 s, 2 min hold timeout, 100 requests per variant
before any judgement) and the limits are the spec's defaults: error rate at most 1 point above the
champion's at 5 % significance (promotion needs the upper confidence bound under it), p99 under P99_LIMIT_MS,
score PSI under 0.2. Prometheus scrapes every 10 s and Ray exports replica metrics every 10 s, the local
defaults; a check every 5 s therefore often finds no new data, which the controller must not count.
`benchmarks/bench_canary.py` uses the same helpers.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from tests.integration.test_serving import register_version, serving_spec
from tests.support.local_stack import renamed, restored_environ, serve_errors, stopping
from tests.support.serving_fakes import transaction

from ferry.adapters.prometheus import Prometheus
from ferry.adapters.registry import Registry
from ferry.adapters.tls import tls_context
from ferry.contract import names
from ferry.contract.names import TAG_FAULT_ERROR_RATE, TAG_FAULT_LATENCY_MS
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import start_services, use_ray_client_env
from ferry.rollout.controller import Controller, RolloutOutcome, prometheus_observer
from ferry.rollout.metrics import RolloutMetrics
from ferry.rollout.observe import requests_by_version
from ferry.rollout.policy import Action, Observation
from ferry.serving.deploy import deploy_local
from ferry.settings import Settings
from ferry.spec.models import ModelSpec, RolloutSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(480)]

PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port",
         "prometheus_port", "alertmanager_port", "rollout_metrics_port")
POLL_S = 1.0
RATE = 50.0  # requests per second from the load generator
MIN_REQUESTS = 100
ROLLOUT: dict[str, Any] = {"steps": [20, 50, 100], "interval": "5s", "hold_timeout": "2m",
                           "analysis": {"min_requests": MIN_REQUESTS, "failure_limit": 2, "max_p99_latency_ms": 100}}
# The tests' p99 limit. The champion itself goes over ROLLOUT's 100 ms (which bench_canary.py keeps) on a slow hour of
# a CI machine that three integration modules keep busy: p99 133-149 ms in one run, whose healthy challenger was
# rolled back on latency. 200 ms stays a bucket boundary (metrics.LATENCY_BOUNDARIES_MS) well under the
# injected 250 ms, so the latency test still finds every request of the slow challenger over it.
P99_LIMIT_MS = 200
CHAMPION_SEED = 1  # a healthy challenger is the same tiny network registered again: same scores, same speed
BAD_ERROR_RATE = 0.05  # a challenger 5 points worse than the champion (which fails nothing)
VISIBLE_S = 30.0  # how far back champion_visible looks for the champion's requests


def canary_spec(**rollout: Any) -> ModelSpec:
    base = serving_spec()
    merged = {**ROLLOUT, **rollout, "analysis": {**ROLLOUT["analysis"], **rollout.get("analysis", {})}}
    body = base.spec.model_copy(update={"rollout": RolloutSpec.model_validate(merged)})
    return base.model_copy(update={"spec": body})


# --- traffic -------------------------------------------------------------------------------------------

@dataclass
class Load:
    """Open-loop synthetic traffic: `rate` requests/s spread over `threads` paced workers, each request a
    random customer (so the sticky split sees many keys). Stops by itself after `max_s` or `max_requests`."""

    url: str
    rate: float = RATE
    threads: int = 6
    max_s: float = 180.0
    max_requests: int = 20_000
    seed: int = 0
    results: list[tuple[float, int, str, str]] = field(default_factory=list)  # (t, status, version, variant)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self.started = 0.0

    def __enter__(self) -> Load:
        self.started = time.monotonic()
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), name=f"canary-load-{index}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(15)

    def _run(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        period = self.threads / self.rate
        deadline = self.started + self.max_s
        next_at = self.started + index * period / self.threads
        with httpx.Client(trust_env=False, timeout=5.0, verify=tls_context()) as client:
            while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < self.max_requests:
                wait = next_at - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
                next_at = max(next_at + period, time.monotonic() - period)  # never burst to catch up
                payload = transaction(customer_id=rng.randrange(10**7), amount=rng.uniform(0, 300))
                try:
                    response = client.post(f"{self.url}/predict/features", json=payload)
                    row = (time.monotonic(), response.status_code, *answered_by(response))
                except (httpx.HTTPError, ValueError):
                    row = (time.monotonic(), 0, "", "")
                with self._lock:
                    self.results.append(row)

    def statuses(self, since: float = 0.0) -> Counter[int]:
        return Counter(status for t, status, _, _ in list(self.results) if t >= since)

    def served_by(self, version: str, since: float = 0.0) -> int:
        return sum(1 for t, status, v, _ in list(self.results) if t >= since and status == 200 and v == version)

    def last_answer_by(self, version: str) -> float | None:
        """When `version` last answered (a prediction, or an injected 500 naming it)."""
        return max((t for t, _, v, _ in list(self.results) if v == version), default=None)


def answered_by(response: httpx.Response) -> tuple[str, str]:
    """(version, variant) of a prediction, or of an injected fault (its message names them)."""
    body = response.json()
    if response.status_code == 200:
        return str(body.get("version", "")), str(body.get("variant", ""))
    found = re.search(r"injected fault: (\w+) version (\S+) ", str(body.get("detail", "")))
    return (found.group(2), found.group(1)) if found else ("", "")


# --- the lab -------------------------------------------------------------------------------------------

@dataclass
class Run:
    outcome: RolloutOutcome
    seconds: float
    observations: list[tuple[float, Observation]]  # every look at Prometheus, stale ones included
    tags: dict[str, str]
    started_unix: float

    def checks(self) -> list[dict[str, Any]]:
        return [json.loads(v) for k, v in sorted(self.tags.items()) if k.startswith(names.TAG_ROLLOUT_CHECK_PREFIX)]


@dataclass
class Lab:
    settings: Settings
    spec: ModelSpec
    url: str

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def registry(self) -> Registry:
        return Registry(self.settings.mlflow_uri)

    def register(self, seed: int = CHAMPION_SEED, error_rate: float = 0.0, latency_ms: float = 0.0) -> str:
        version = register_version(self.settings, self.name, seed)
        faults = {TAG_FAULT_ERROR_RATE: error_rate} if error_rate else {}
        faults |= {TAG_FAULT_LATENCY_MS: latency_ms} if latency_ms else {}
        if faults:
            self.registry.tag_version(self.name, version, faults)
        return version

    def aliases(self) -> tuple[str | None, str | None]:
        found = [self.registry.alias(self.name, a) for a in (names.ALIAS_CHAMPION, names.ALIAS_CHALLENGER)]
        return found[0].version if found[0] else None, found[1].version if found[1] else None

    def champion(self) -> str:
        champion = self.aliases()[0]
        assert champion is not None
        return str(champion)

    def tags(self, version: str) -> dict[str, str]:
        return dict(self.registry.client.get_model_version(names.registered_model_name(self.name), version).tags)

    def info(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/info", timeout=5, trust_env=False, verify=tls_context()).json())

    def champion_visible(self, minimum: float, timeout_s: float = 60.0) -> bool:
        """Wait until Prometheus holds `minimum` champion requests of the last VISIBLE_S (bounded)."""
        prom = Prometheus(self.settings.prometheus_url)
        champion = self.champion()

        def enough() -> bool:
            counts = requests_by_version(prom, self.name, (champion, champion), time.time() - VISIBLE_S)
            return counts.get(champion, {}).get("ok", 0.0) >= minimum

        try:
            return procs.wait_until(enough, timeout_s, 1.0)
        finally:
            prom.close()

    def rollout(self, version: str, spec: ModelSpec | None = None) -> Run:
        """Run the controller as `ferry step rollout` does (same observer), timing it."""
        spec = spec or self.spec
        prom = Prometheus(self.settings.prometheus_url)
        observer = prometheus_observer(prom, self.name)
        seen: list[tuple[float, Observation]] = []
        started, started_unix = time.monotonic(), time.time()

        def observe(champion: str, challenger: str, since: float) -> Observation:
            observation = observer(champion, challenger, since)
            seen.append((time.monotonic() - started, observation))
            return observation

        try:
            outcome = Controller(self.registry, spec, observe, metrics=RolloutMetrics()).run(version)
        finally:
            prom.close()
        return Run(outcome, time.monotonic() - started, seen, self.tags(version), started_unix)


def describe(run: Run) -> str:
    """The outcome and every recorded check (what `ferry rollout status` shows), seconds from the start."""
    lines = [f"{run.outcome.action} after {run.seconds:.1f}s / {run.outcome.checks} checks: {run.outcome.reason}"]
    for check in run.checks():
        seen = ""
        if "requests" in check:
            (n_c, n_h), (e_c, e_h), (p_c, p_h) = check["requests"], check["errors"], check["p99_ms"]
            seen = (f"champion {n_c:.0f} req {e_c:.0f} err p99 {p_c}; challenger {n_h:.0f} req {e_h:.0f} err "
                    f"p99 {p_h}; upper {check.get('error_rate_upper')}; psi {check.get('score_psi')} ")
        lines.append(f"  t={check['at'] - run.started_unix:5.1f}s [{check['verdict']}] {seen}→ {check['action']} "
                     f"{check['weight']}: {check['reason']}")
    return "\n".join(lines)


def lab_settings(home: Any, mlflow_uri: str | None = None) -> Settings:
    """Free ports for every service; the MLflow server at `mlflow_uri` instead of one of the lab's own when given."""
    ports = {name: procs.free_port() for name in PORTS}
    return Settings(home=home, ray_cpus=1, ready_timeout_s=120, MLFLOW_TRACKING_URI=mlflow_uri,
                    **ports)  # type: ignore[arg-type]


def start_lab(settings: Settings, spec: ModelSpec, services: tuple[str, ...] = ("ray", "mlflow", "prometheus")) -> Lab:
    """Ray, MLflow and Prometheus, a registered champion, the router deployed with fault injection allowed."""
    start_services(settings, include=list(services))
    registry = Registry(settings.mlflow_uri)
    registry.ensure_registered_model(spec.name, "test")
    champion = register_version(settings, spec.name, CHAMPION_SEED)
    registry.set_alias(spec.name, names.ALIAS_CHAMPION, champion)
    registry.tag_version(spec.name, champion, {names.TAG_ROLLOUT_STATE: "promoted"})
    use_ray_client_env(settings)
    url = deploy_local(settings, spec, poll_interval_s=POLL_S, timeout_s=240, allow_fault_injection=True)
    return Lab(settings, spec, url)


# --- tests ---------------------------------------------------------------------------------------------

MODEL = "fraud-canary"  # this module's own name on its test process' shared MLflow server


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, mlflow_uri: str) -> Iterator[Lab]:
    settings = lab_settings(tmp_path_factory.mktemp("canary-home"), mlflow_uri)
    with restored_environ(), stopping(settings):
        yield start_lab(settings, renamed(canary_spec(analysis={"max_p99_latency_ms": P99_LIMIT_MS}), MODEL))


def last_deployed(lab: Lab) -> float:
    from ray import serve

    return float(serve.status().applications[lab.name].last_deployed_time_s)


def test_healthy_challenger_is_promoted_without_a_failed_request_or_redeploy(lab: Lab) -> None:
    old = lab.champion()
    deployed = last_deployed(lab)
    challenger = lab.register()
    with Load(lab.url) as load:
        assert lab.champion_visible(MIN_REQUESTS, timeout_s=90), "no champion metrics"
        run = lab.rollout(challenger)
        after = time.monotonic()
        procs.wait_until(lambda: lab.info()["champion"] == challenger, 10 * POLL_S, 0.25)
        time.sleep(2 * POLL_S)
    print(describe(run))
    assert run.outcome.action is Action.PROMOTE, describe(run)
    assert lab.aliases() == (challenger, None)
    assert run.tags[names.TAG_ROLLOUT_STATE] == "promoted" and run.tags[names.TAG_ROLLOUT_WEIGHT] == "100"
    assert lab.tags(old)[names.TAG_ROLLOUT_STATE] == "retired"
    checks = run.checks()
    assert len(checks) == run.outcome.checks >= 2
    assert [c["action"] for c in checks if c["action"] != "hold"] == ["advance", "promote"]
    # promoted on evidence of no harm, at the spec's PSI limit, each step judged from its own start
    final = checks[-1]
    assert final["verdict"] == "pass" and final["error_rate_upper"] < 0.01 and final["score_psi"] <= 0.2
    advance = next(c for c in checks if c["action"] == "advance")
    assert final["since"] > advance["at"] and advance["since"] < advance["at"]
    # (d) the split moved 20 → 50 → 100 through registry tags only: no request failed, nothing redeployed
    statuses = load.statuses()
    assert statuses == {200: sum(statuses.values())}, (statuses, serve_errors(lab.settings))
    assert load.served_by(challenger) > 0 and load.served_by(old, since=after + 2 * POLL_S) == 0
    assert last_deployed(lab) == deployed


def test_challenger_with_injected_errors_is_rolled_back(lab: Lab) -> None:
    champion = lab.champion()
    challenger = lab.register(error_rate=BAD_ERROR_RATE)
    with Load(lab.url, seed=1) as load:
        assert lab.champion_visible(MIN_REQUESTS)
        run = lab.rollout(challenger)
        ended = time.monotonic()
        procs.wait_until(lambda: lab.info()["challenger"] is None, 10 * POLL_S, 0.25)
        time.sleep(3 * POLL_S)
    print(describe(run))
    assert run.outcome.action is Action.ROLLBACK, describe(run)
    assert "2 failed checks: error rate" in run.outcome.reason
    fails = [c for c in run.checks() if c["verdict"] == "fail"]
    assert len(fails) == 2 and fails[0]["requests"] != fails[1]["requests"]  # two scrapes, not one read twice
    last = load.last_answer_by(challenger)
    assert last is not None and last < ended + 5 * POLL_S  # out of traffic within a few router polls
    assert lab.aliases() == (champion, None)
    assert run.tags[names.TAG_ROLLOUT_WEIGHT] == "0" and run.tags[names.TAG_ROLLOUT_STATE] == "rolled-back"
    assert "error rate" in run.tags[names.TAG_ROLLOUT_REASON]
    assert load.statuses()[500] > 0  # users saw the injected 500s until the rollback
    assert run.seconds < 90, describe(run)


def test_challenger_with_injected_latency_is_rolled_back_naming_p99(lab: Lab) -> None:
    champion = lab.champion()
    challenger = lab.register(latency_ms=250)
    with Load(lab.url, seed=2):
        assert lab.champion_visible(MIN_REQUESTS)
        run = lab.rollout(challenger)
    print(describe(run))
    assert run.outcome.action is Action.ROLLBACK, describe(run)
    assert "p99 latency" in run.outcome.reason and "error rate +" not in run.outcome.reason
    assert lab.aliases() == (champion, None)
    assert run.tags[names.TAG_ROLLOUT_WEIGHT] == "0" and run.tags[names.TAG_ROLLOUT_STATE] == "rolled-back"


def test_without_traffic_nothing_is_promoted_and_hold_timeout_rolls_back(lab: Lab) -> None:
    champion = lab.champion()
    challenger = lab.register()
    run = lab.rollout(challenger, renamed(canary_spec(hold_timeout="30s"), MODEL))
    print(describe(run))
    assert run.outcome.action is Action.ROLLBACK, describe(run)
    assert run.outcome.reason.startswith("no evidence within 30s")
    assert all(c["action"] == "hold" and c["verdict"] in ("inconclusive", "stale") for c in run.checks()[:-1])
    assert 30 <= run.seconds < 60
    assert lab.aliases() == (champion, None)
    assert run.tags[names.TAG_ROLLOUT_STATE] == "rolled-back"
