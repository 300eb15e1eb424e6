"""#15's closed loop end to end, for real: every service `ferry up` starts (Ray, MLflow, Redis, Prometheus,
Alertmanager, ferry's receiver) on free loopback ports in a throwaway home, and a model whose spec trains on its
own traffic (`data.source: log`) and rolls out through a shadow stage judged on labels (`rollout.shadow`,
`rollout.outcomes`).

1. Bootstrap. A model trained on its own traffic needs traffic first: a stand-in champion (trained in-process)
   serves five weeks of the simulator's payments, replayed through the router with their labels a week later
   (the label delay). Its alias is then removed, and `ferry up` trains the spec's first version on the log
   window; a first version is promoted directly and the router serves it.
2. Drift. The same cards and terminals go on paying with amounts twice as large (`amount_scale: 2`),
   replayed at a steady pace: the router's PSI crosses the limit, FerryModelDriftHigh fires in Prometheus,
   Alertmanager's `retrain` route delivers it to the receiver, and the receiver starts a retraining run.
3. The retraining run reads the newest labelled window: its dataset digest differs from the first version's and
   its window lies in the drift. Its version goes through the shadow stage while the drifted payments keep
   coming, is judged on their labels paired with the champion's scores on the same payments, then on errors
   and latency at each weight, and is promoted. Its scores move away from the champion's (score PSI far over
   the default limit): the labels that found it better outrank PSI.
4. A worse challenger. A change puts the spec's data back on the static simulator (normal amounts, the lite
   spec's data): its model passes its offline gate on its own test week, scores the drifted payments without
   an error and fast, and is rolled back in its shadow stage on their labels; the champion and the traffic
   stay as they were.

Timings are printed (`ferry.bench.loop`).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.integration.test_drift_e2e import write_rules
from tests.integration.test_serving import trained_version
from tests.support.local_stack import restored_environ, stopping, wait_for_value

from ferry.adapters.registry import Registry
from ferry.contract import metrics, names
from ferry.local import reconcile
from ferry.local.alerts.store import AlertStore
from ferry.local.engine.state import load_run
from ferry.local.errors import LocalError
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import start_services, use_ray_client_env
from ferry.serving.deploy import deploy_local
from ferry.serving.replay import ReplayLimits, ReplayReport, ReplayStream, history_stream, replay
from ferry.settings import Settings
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1500)]

ROOT = Path(__file__).resolve().parents[2]
MODEL = "loop"
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port",
         "prometheus_port", "alertmanager_port", "receiver_port", "rollout_metrics_port", "redis_port")
# Small enough to keep CI's payments down, large enough that a 21-day window holds thousands of labelled payments
# and each sticky half at 50 % ~500 cards (score PSI is judged against the noise of halves that size).
WORLD = {"customers": 1000, "terminals": 2000, "days": 125, "seed": 1, "start_date": "2018-04-01"}
DRIFT_STARTS = "2018-05-06"  # five weeks of normal payments, then amounts twice as large
AMOUNT_SCALE = 2.0
# Four drifted weeks at once: a 21-day window's first (training) week then lies in the drift.
STEADY_FROM = "2018-06-05"
LABEL_DELAY_DAYS = 7
AT_ONCE = ReplayLimits(batch_rows=256, rate_per_s=50_000, limit=10**6, timeout_s=300)
DRIFTED_RATE = 150.0  # payments a second after that: ~13 s an event day, labels ~90 s after their payment
SPEC_CHANGES = {
    "name: fraud-detector-lite": f"name: {MODEL}",
    "route: /fraud-detector-lite": f"route: /{MODEL}",
    '    source: simulator\n    params: {customers: 300, terminals: 600, days: 40, seed: 1}\n'
    '    split: {train_start: "2018-04-16", train_days: 7, delay_days: 7, test_days: 7}':
        "    source: log\n    window: {days: 21, label_delay_days: 7, min_labelled_rows: 1000}\n"
        "    split: {train_days: 7, delay_days: 7, test_days: 7}",
    "    replicas: {min: 1, max: 1}": "    replicas: {min: 1, max: 1}\n    cpus_per_replica: 0.5",
    "    steps: [50, 100]\n    interval: 15s":
        "    steps: [50, 100]\n    interval: 5s\n    hold_timeout: 4m\n    shadow: {duration: 10s, sample: 1.0}\n"
        "    outcomes: {metrics: [average_precision], min_labelled: 300, min_positives: 10}\n"
        # One machine of 2 cores runs the replay, the router, Redis, Prometheus, Ray and the rollout's bootstrap on
        # labels: both variants' p99 reached 140 ms there (a retrain +0.44 better on labels was rolled back on
        # it), which says nothing about the challenger. The limit stays, above what the machine itself adds.
        "    analysis: {max_p99_latency_ms: 400}",
    "    oncall: {team: risk, severity: ticket}": "    oncall: {team: risk, severity: ticket}\n    drift_window: 30s",
}


def loop_spec_text(static_data: bool = False) -> str:
    """The loop's spec; with `static_data` its data section is the lite spec's again (the static simulator)."""
    text = (ROOT / "gitops/models/fraud-detector-lite.yaml").read_text()
    for old, new in SPEC_CHANGES.items():
        assert old in text, old
        text = text.replace(old, old if static_data and old.startswith("    source:") else new)
    return text


def world(**params: Any) -> ReplayStream:
    """The simulated payments and their labels in event-time order, `params` on top of WORLD."""
    from fraud_detection.simulator import SimulatorParams, simulate
    from fraud_detection.workload import FraudDetectionWorkload

    frame = simulate(SimulatorParams(**{**WORLD, **params}))
    return history_stream(*FraudDetectionWorkload().raw_history(frame), "tx_datetime")


def between(stream: ReplayStream, start: str | None, end: str | None) -> ReplayStream:
    def at(day: str | None, default: int) -> int:
        return default if day is None else int(np.searchsorted(stream.event_ns, np.datetime64(day, "ns").astype(
            np.int64)))

    a, b = at(start, 0), at(end, len(stream.requests))
    return ReplayStream(stream.requests[a:b], stream.labels[a:b], stream.event_ns[a:b])


@dataclass
class Loop:
    settings: Settings
    spec: ModelSpec
    url: str
    first: str  # the version `ferry up` trained on the normal weeks


@contextlib.contextmanager
def bootstrapped(home: Path) -> Iterator[Loop]:
    """Every service on free loopback ports in `home`, the loop's spec, and its first version trained by `ferry up`
    on five normal weeks a stand-in champion served (step 1 above). Stops the services on exit."""
    from fraud_detection.features import add_features
    from fraud_detection.simulator import SimulatorParams, simulate

    (home / "gitops/models").mkdir(parents=True)
    (home / f"gitops/models/{MODEL}.yaml").write_text(loop_spec_text())
    [loaded], problems = load_specs([home / f"gitops/models/{MODEL}.yaml"])
    assert not problems, problems
    spec = loaded.model
    settings = Settings(home=home, ray_cpus=2, ready_timeout_s=120,
                        **{port: procs.free_port() for port in PORTS})  # type: ignore[arg-type]
    write_rules(settings, spec)
    with restored_environ(), stopping(settings):
        start_services(settings)
        registry = Registry(settings.mlflow_uri)
        registry.ensure_registered_model(MODEL, "test")
        stand_in = trained_version(settings, MODEL, add_features(simulate(SimulatorParams(
            customers=300, terminals=600, days=40, seed=7)), LABEL_DELAY_DAYS), shuffled=False)
        registry.set_alias(MODEL, names.ALIAS_CHAMPION, stand_in)
        use_ray_client_env(settings)
        url = deploy_local(settings, spec, poll_interval_s=1.0, timeout_s=240)
        send_all(url, between(world(), None, DRIFT_STARTS))
        registry.delete_alias(MODEL, names.ALIAS_CHAMPION)  # hand the model over to its log-trained first version
        [first] = reconcile.up(settings, [MODEL]).models
        assert first.phase == "Succeeded", first.message
        version = registry.alias(MODEL, names.ALIAS_CHAMPION)
        assert version is not None and version.version != stand_in
        assert procs.wait_until(lambda: _served(url) == version.version, 30, 0.5)
        yield Loop(settings, spec, url, version.version)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    with bootstrapped(tmp_path_factory.mktemp("loop-home")) as found:
        yield found


def send_all(url: str, stream: ReplayStream) -> None:
    """Replay `stream` at once, then post the labels its event-time clock had not reached (its last week's):
    in production they come back later; a replay that stops there would leave them missing for good, and
    a window over those days would count their frauds as genuine."""
    import httpx

    sent = replay(url, stream, LABEL_DELAY_DAYS, AT_ONCE)
    assert sent.scored == len(stream.requests) and not sent.failed, sent
    rest = stream.labels[sent.labels_sent:]
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as client:
        for start in range(0, len(rest), AT_ONCE.batch_rows):
            answer = client.post("/labels", json=rest[start:start + AT_ONCE.batch_rows])
            assert answer.status_code == 200, answer.text


def _served(url: str) -> str | None:
    import httpx

    try:
        return httpx.get(f"{url}/info", timeout=5, trust_env=False).json().get("champion")
    except httpx.HTTPError:
        return None


class _Stopped(Exception):
    pass


class Traffic:
    """The drifted payments, replayed in a thread at DRIFTED_RATE; bounded by the stream and `timeout_s`, and
    stopped when the test is done with it."""

    def __init__(self, url: str, stream: ReplayStream, timeout_s: float) -> None:
        self.report: ReplayReport | None = None
        self.stop = threading.Event()
        limits = ReplayLimits(batch_rows=50, rate_per_s=DRIFTED_RATE, limit=10**6, timeout_s=timeout_s)
        self.thread = threading.Thread(target=self._run, args=(url, stream, limits), name="loop-traffic", daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)

    def _run(self, url: str, stream: ReplayStream, limits: ReplayLimits) -> None:
        def progress(report: ReplayReport) -> None:
            self.report = report
            if self.stop.is_set():
                raise _Stopped

        with contextlib.suppress(_Stopped):
            self.report = replay(url, stream, LABEL_DELAY_DAYS, limits, on_progress=progress)


def retraining_started(settings: Settings) -> str | None:
    for alert in AlertStore.open(settings).alerts(model=MODEL, firing=True):
        if alert.alertname == names.ALERT_DRIFT_HIGH:
            for trigger in alert.retraining:
                if trigger["result"] == "started" and trigger.get("workflow"):
                    return str(trigger["workflow"])
    return None


def finished(settings: Settings, workflow: str) -> dict[str, Any] | None:
    try:
        run = load_run(settings, workflow)
    except LocalError:  # not written yet
        return None
    return run if run["status"].get("phase") in ("Succeeded", "Failed", "Error") else None


def test_drifted_traffic_retrains_on_the_new_window_the_retrain_is_promoted_and_a_worse_one_rolled_back(
        loop: Loop) -> None:
    figures = drift_and_retrain(loop)
    print(f"ferry.bench.loop {json.dumps(figures)}")


def drift_and_retrain(loop: Loop) -> dict[str, Any]:
    """Steps 2-4 above; the figures they measured (seconds count from the start of the steady drifted stream)."""
    drifted = between(world(amount_scale=AMOUNT_SCALE), DRIFT_STARTS, None)
    # Four drifted weeks at once (the window a retrain reads then trains on drifted days), then a steady stream.
    fast, steady = between(drifted, None, STEADY_FROM), between(drifted, STEADY_FROM, None)
    send_all(loop.url, fast)
    started = time.monotonic()
    with Traffic(loop.url, steady, timeout_s=1200) as traffic:
        figures = retrain_is_promoted(loop, started, traffic)
        figures |= stale_challenger_is_rolled_back(loop, figures["version"], started)
    assert traffic.report is not None and not traffic.report.failed, traffic.report
    return figures


def retrain_is_promoted(loop: Loop, started: float, traffic: Traffic) -> dict[str, Any]:
    registry = Registry(loop.settings.mlflow_uri)
    first = registry.version(MODEL, loop.first)
    workflow = wait_for_value(lambda: retraining_started(loop.settings), 300, 1.0)
    alert_s = time.monotonic() - started
    assert workflow is not None, [a.retraining for a in AlertStore.open(loop.settings).alerts()]
    run = wait_for_value(lambda: finished(loop.settings, workflow), 600, 2.0)
    done_s = time.monotonic() - started
    assert run is not None, f"{workflow} did not finish; traffic: {traffic.report}"
    steps = {n["displayName"]: n for n in run["status"]["nodes"].values() if "(" not in n["displayName"]}
    outputs = {name: {p["name"]: p.get("value") for p in (n.get("outputs") or {}).get("parameters", [])}
               for name, n in steps.items()}
    assert run["status"]["phase"] == "Succeeded", {k: (n["phase"], n.get("message")) for k, n in steps.items()}
    version = outputs["register"]["model-version"]
    retrained = registry.version(MODEL, version)
    assert retrained.tags[names.TAG_DATASET_DIGEST] != first.tags[names.TAG_DATASET_DIGEST]
    window_start = date.fromisoformat(retrained.tags[names.TAG_LINEAGE_DATA_WINDOW].split("/")[0])
    assert window_start >= date.fromisoformat(DRIFT_STARTS), retrained.tags[names.TAG_LINEAGE_DATA_WINDOW]
    assert retrained.tags[names.TAG_LINEAGE_PARENT] == loop.first
    checks = rollout_checks(registry, version)
    judged = [c for c in checks if c.get("outcomes", {}).get("labelled", 0) >= 300]
    assert checks[0]["weight"] == 0 and judged, checks  # a shadow stage first, and a judgement on labels
    assert judged[0]["shadow_rows"][0] > 0 == judged[0]["shadow_rows"][1], judged[0]
    policy = loop.spec.spec.rollout.outcomes
    assert policy is not None
    decision, margin = outputs["rollout"]["decision"], policy.margin
    _, lower, _ = judged[-1]["outcomes"]["average_precision"]
    # Trained on the drifted weeks, the retrain must beat the champion trained before them, and be promoted only
    # after the labels said so and the traffic checks passed at a weight above 0.
    assert decision == names.STATE_PROMOTED and lower >= -margin, (outputs["rollout"], judged[-1])
    assert registry.alias(MODEL, names.ALIAS_CHAMPION).version == version
    assert any(c["weight"] > 0 and "requests" in c for c in checks), checks
    return {"version": version, "workflow": workflow, "drifted_traffic_to_retraining_started_s": round(alert_s, 1),
            "drifted_traffic_to_decision_s": round(done_s, 1), "decision": decision,
            "window": retrained.tags[names.TAG_LINEAGE_DATA_WINDOW],
            "labelled_at_decision": judged[-1]["outcomes"]["labelled"],
            "score_psi": score_psi_outcome(checks)}


def score_psi_outcome(checks: list[dict[str, Any]]) -> str:
    """What score PSI did in the retrain's rollout: over its limit (and outranked by the labels), unjudged (too
    few scored rows at a weight to tell from chance), or within its limit at every weight."""
    outranked = [c["reason"] for c in checks if "outranked by the labels" in c["reason"]]
    if any(re.search(r"score PSI [\d.]+ > ", reason) for reason in outranked):
        return "over"
    return "unjudged" if any("too few scored rows to judge PSI" in reason for reason in outranked) else "within"


def stale_challenger_is_rolled_back(loop: Loop, champion: str, started: float) -> dict[str, Any]:
    """Back on the static simulator's normal amounts, a model passes its offline gate, then scores the drifted
    payments worse than the champion trained on them: rolled back in shadow on labels, nothing else changes."""
    registry = Registry(loop.settings.mlflow_uri)
    (loop.settings.home / f"gitops/models/{MODEL}.yaml").write_text(loop_spec_text(static_data=True))
    [outcome] = reconcile.up(loop.settings, [MODEL]).models
    assert outcome.phase == "Succeeded", outcome.message
    # Its own test week (normal amounts) found nothing wrong; the rollout judged it worse on the drifted payments.
    assert outcome.outputs[f"{names.STEP_EVALUATE}.{names.OUTPUT_PASSED}"] == "true", outcome.outputs
    assert outcome.outputs[f"{names.STEP_ROLLOUT}.{names.OUTPUT_DECISION}"] == names.STATE_ROLLED_BACK
    version = registry.version_for_workflow(MODEL, outcome.workflow)
    assert version is not None and version.version != champion
    checks = rollout_checks(registry, version.version)
    last = checks[-1]
    assert last["action"] == metrics.ACTION_ROLLBACK and last["weight"] == 0, checks  # never served a user
    assert "worse on labels" in last["reason"], last
    assert max(c["shadow_rows"][1] for c in checks if c.get("shadow_rows")) == 0, checks  # no failure in shadow
    assert registry.alias(MODEL, names.ALIAS_CHAMPION).version == champion
    assert _served(loop.url) == champion
    return {"worse_version": version.version, "worse_challenger_decision_s": round(time.monotonic() - started, 1),
            "worse_labelled_at_decision": last["outcomes"]["labelled"],
            "worse_average_precision_delta": last["outcomes"]["average_precision"]}


def rollout_checks(registry: Registry, version: str) -> list[dict[str, Any]]:
    checks = [json.loads(v) for k, v in sorted(registry.version(MODEL, version).tags.items())
              if k.startswith(names.TAG_ROLLOUT_CHECK_PREFIX)]
    print(f"v{version} checks:", *(f"{c['weight']}% {c['action']}: {c['reason']}" for c in checks), sep="\n  ")
    return checks
