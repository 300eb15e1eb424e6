"""Serving under load, faults and bad input, measured: a real Ray head, MLflow server (and, in full mode,
Prometheus) on free loopback ports in a throwaway home, the router deployed with `deploy_local` exactly
as `ferry up` does (plus fault injection allowed, for the canary scenarios), and bounded open-loop load
from `loadgen` (loopback only; bounded in count, time and in-flight requests).

CI runs the short form (bad payloads, ~10 s of load, a replica killed under load, listeners, pickle);
`task reliability` (RELIABILITY_MODE=full) runs every scenario at full length, the canary ones included.
Each scenario states its bound and records what it measured (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from ferry.adapters.registry import NotServable
from ferry.contract import names
from ferry.local.supervisor import procs
from ferry.local.supervisor.services import service_processes, start_services
from ferry.render.rayservice import ROUTER_DEPLOYMENT
from ferry.rollout.policy import Action
from ferry.serving.deploy import LOCAL_REQUEST_TIMEOUT_S
from ferry.settings import Settings
from tests.integration.test_canary import Lab, canary_spec, describe, lab_settings, start_lab
from tests.integration.test_serving import POLL_S
from tests.reliability.conftest import FULL, Record, scaled
from tests.reliability.loadgen import LoadResult, by_second, outage, run_load
from tests.support.local_stack import restored_environ, stopping, wait_for_value
from tests.support.serving_fakes import transaction, transactions

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.timeout(1800 if FULL else 420)]
full_only = pytest.mark.skipif(not FULL, reason="full length only: task reliability (RELIABILITY_MODE=full)")

RATE = scaled(25.0, 50.0)
SUSTAINED_S = scaled(10.0, 120.0)
P99_BOUND_MS = 250.0  # 2 shared cores: a Serve hop plus a torch.export forward, with GC and scrapes around it
# A stall (a full GC pass, a blocked event loop) shows as a tail far from the run's own median; a machine that is
# slower all through (a CI run measured p50 46 ms, p99 269 ms) moves both. The bound is the larger of the two.
P99_OVER_P50 = 8.0
# CI runs this module beside two others on 2 cores (task test: -n 3), each with its own Ray head: there a
# latency percentile measures the neighbours (a fresh-clone CI run measured p50 142 ms, p99 1443 ms, all
# 250 answered, the slowest in 1.5 s). Latency is a benchmark figure (`task reliability` runs alone and holds
# the p99 bound); the shared run holds what contention cannot excuse: every request answered, none within
# half of the local request timeout (past it, Serve answers 408).
STALL_BOUND_MS = LOCAL_REQUEST_TIMEOUT_S * 1000 / 2
CLIENT_TIMEOUT_S = 10.0
# A killed replica is back once Serve has noticed (at its next health check of it: <= 1.1 x 2 s locally,
# ferry.serving.deploy) and a new replica process has imported torch, MLflow and FastAPI and loaded the
# champion from the registry. Measured on 2 cores: idle, the new process 4.5 s after the kill, answers at
# 9.9 s, normal latency at 10.2 s; shared with other work (load 4-7), 3.6-4.5 s and 14.6-24.9 s. The
# bounds are about twice the idle figures plus room for a busy machine; the CI run is long enough to hold
# them (40 s of load, the kill at 5 s, the last 5 s all 200). With Serve's 10 s health check, noticing
# the dead replica alone could take 11 s (the 18.9 s outage issue #12 saw). Recovery ends with the last
# disturbed second (loadgen.outage), so one slow answer long after is not the outage. A CI run measured
# 31.4 s under the older rule (the last slow answer); its record cannot tell a long stall from one late
# slow answer, so on a failure the assertion now prints the answers second by second.
# Both bounds are timings, so they are held where the machine is not shared: `task reliability` runs alone.
# Beside two other modules on 2 cores (task test: -n 3) they measure the neighbours: a fresh-clone CI run
# saw the new process 10.0 s after the kill and answers at 17.3 s; another, answers at 12.4 s and slow ones
# to the end of the run (40.2 s). The shared run holds what contention cannot excuse: a new replica, each
# failure retriable and answered, the last failure within RECOVERY_BOUND_S, the last 5 s all 200.
REPLACED_BOUND_S = 8.0
RETRIABLE = {"408", "500", "502", "503", "504"}  # what Serve answers for a dead replica; clients retry these
RECOVERY_BOUND_S = 30.0


def payload(i: int) -> dict[str, Any]:
    return transaction(customer_id=(i * 7919) % 10**6, amount=float(i % 300))


@dataclass
class Bench:
    lab: Lab
    prometheus: bool

    @property
    def predict(self) -> str:
        return f"{self.lab.url}/predict/features"


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    settings = lab_settings(tmp_path_factory.mktemp("reliability-home"))
    spec = canary_spec()  # steps 20/50/100 every 5 s, hold_timeout 2m (the Prometheus scenario passes 40 s)
    services = ("ray", "mlflow", "prometheus") if FULL else ("ray", "mlflow")
    with restored_environ(), stopping(settings):
        yield Bench(start_lab(settings, spec, services), prometheus=FULL)


# --- bad input -----------------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}


def _cases(url: str) -> dict[str, tuple[str, str, dict[str, Any], set[int]]]:
    """name → (method, url, httpx kwargs, accepted statuses)."""
    one, batch = f"{url}/predict/features", f"{url}/predict/features/batch"
    over = json.dumps(transactions(200)).encode()  # ~80 kB against max_body_bytes 16 kB

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit must be counted while reading
        for start in range(0, len(over), 4096):
            yield over[start:start + 4096]

    return {
        "truncated JSON": ("POST", one, {"content": b'{"customer_id": 1,', "headers": JSON}, {422}),
        "not JSON": ("POST", one, {"content": b"hello", "headers": JSON}, {422}),
        "empty body": ("POST", one, {"content": b"", "headers": JSON}, {422}),
        "JSON null": ("POST", one, {"content": b"null", "headers": JSON}, {422}),
        "text/plain content-type": ("POST", one, {"content": json.dumps(transaction()).encode(),
                                                  "headers": {"content-type": "text/plain"}}, {415, 422}),
        "form-encoded body": ("POST", one, {"data": {"customer_id": "1"}}, {415, 422}),
        "a list to /predict": ("POST", one, {"json": [transaction()]}, {422}),
        "an object to /predict/batch": ("POST", batch, {"json": transaction()}, {422}),
        "empty batch": ("POST", batch, {"json": []}, {422}),
        "batch over max_batch_rows (11 > 10)": ("POST", batch, {"json": transactions(11)}, {422}),
        "unknown field": ("POST", one, {"json": transaction(coupon="x")}, {422}),
        "missing field": ("POST", one, {"json": {"customer_id": 1}}, {422}),
        "wrong type": ("POST", one, {"json": transaction(tx_amount="a lot")}, {422}),
        "negative customer_id": ("POST", one, {"json": transaction(customer_id=-1)}, {422}),
        "NaN literal": ("POST", one, {"content": json.dumps(transaction(tx_amount=float("nan"))).encode(),
                                      "headers": JSON}, {422}),
        "Infinity in an unbounded field": ("POST", one, {"content": json.dumps(transaction(
            customer_id_avg_amount_30day_window=float("inf"))).encode(), "headers": JSON}, {422}),
        "Infinity in a batch row": ("POST", batch, {"content": json.dumps([*transactions(2), transaction(
            customer_id_avg_amount_30day_window=float("inf"))]).encode(), "headers": JSON}, {422}),
        "literal overflowing to infinity (1e400)": ("POST", one, {"content": json.dumps(transaction(
            customer_id_avg_amount_30day_window="MARK")).replace('"MARK"', "1e400").encode(),
            "headers": JSON}, {422}),
        "huge finite numbers (1e308)": ("POST", one, {"json": transaction(
            customer_id_avg_amount_30day_window=1e308, customer_id_nb_tx_30day_window=1e308)}, {200, 422}),
        "deeply nested JSON (5000 levels, 10 kB)": ("POST", one, {"content": b"[" * 5000 + b"]" * 5000,
                                                                  "headers": JSON}, {400, 422}),
        "body over max_body_bytes, Content-Length": ("POST", batch, {"content": over, "headers": JSON}, {413}),
        "body over max_body_bytes, chunked": ("POST", batch, {"content": chunks(), "headers": JSON}, {413}),
        "GET /predict": ("GET", one, {}, {405}),
        "unknown path": ("POST", f"{url}/nope", {"json": {}}, {404}),
    }


def _raw(port: int, request: bytes, timeout_s: float = 5.0) -> int:
    """Send raw bytes; the status of the answer, or 0 when the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        try:
            head = sock.recv(64)
        except TimeoutError:
            return 0
    return int(head.split()[1]) if head.startswith(b"HTTP/") else 0


def payload_bound(expected: dict[str, set[int]]) -> str:
    """The bound the doc states, from the statuses each case accepts (so the two cannot disagree)."""
    assert all(code < 500 for codes in expected.values() for code in codes), "a case accepts a 5xx"
    extreme = [name for name, codes in expected.items() if any(200 <= code < 300 for code in codes)]
    malformed = [codes for name, codes in expected.items() if name not in extreme]
    assert all(code == 0 or 400 <= code < 500 for codes in malformed for code in codes)
    allowed = "/".join(str(code) for code in sorted(set().union(*(expected[name] for name in extreme))))
    return (f"never 5xx; each of {len(malformed)} malformed cases 4xx (or closed), limits 413/422; "
            f"valid but extreme input ({', '.join(extreme)}) {allowed}")


def test_malformed_and_oversized_payloads_are_4xx_never_5xx(bench: Bench, record: Record) -> None:
    lab = bench.lab
    got: dict[str, int] = {}
    with httpx.Client(trust_env=False, timeout=10) as client:
        for name, (method, url, kwargs, _) in _cases(lab.url).items():
            response = client.request(method, url, **kwargs)
            got[name] = response.status_code
            if response.status_code in (413, 422):
                assert response.json()["detail"], name  # a message, not an empty error
    route = lab.spec.spec.serving.route
    port = lab.settings.serve_port
    body = json.dumps(transaction()).encode()
    got["Content-Length not a number (raw)"] = _raw(port, (
        f"POST {route}/predict/features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: ten\r\n\r\n"
    ).encode() + body)
    got["Content-Length longer than the body, then EOF (raw)"] = _raw(port, (
        f"POST {route}/predict/features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 9999\r\n\r\n"
    ).encode() + body)
    expected = {name: case[3] for name, case in _cases(lab.url).items()}
    expected["Content-Length not a number (raw)"] = {400}
    expected["Content-Length longer than the body, then EOF (raw)"] = {0, 400}  # closed without an answer
    wrong = {name: status for name, status in got.items() if status not in expected[name]}
    record("bad payloads to the serving API", payload_bound(expected), cases=len(got), unexpected=wrong,
           statuses=got)
    assert not wrong, wrong
    assert httpx.get(f"{lab.url}/readyz", trust_env=False).status_code == 200  # and it still serves


# --- security ------------------------------------------------------------------------------------------

def test_every_listener_of_the_serving_stack_is_loopback(bench: Bench, record: Record) -> None:
    """Ray head, raylet, GCS, dashboard, Serve controller, proxy and replica workers, MLflow: every TCP
    listener of every process `ferry up` started (and their children) is on 127.0.0.1 -- except one that
    Ray 2.60 hard-codes: each replica's inter-deployment gRPC server binds `[::]:0`
    (ray/serve/_private/replica.py, not configurable). Ray attaches its token interceptor to that server
    when token auth is on, so the exception is allowed only while a call without the token is refused."""
    trees = service_processes(bench.lab.settings)
    pids = [pid for tree in trees.values() for pid in tree]
    sockets = procs.listening_sockets(pids)
    outside = sorted({(addr, port, _title(pid or 0)[:60]) for addr, port, pid in sockets if addr != "127.0.0.1"})
    replica_grpc = [port for _, port, title in outside if title.startswith("ray::ServeReplica:")]
    refused = {port: _grpc_without_token(port) for port in replica_grpc}
    record("every local server binds 127.0.0.1", "0 listeners off loopback, except Ray's replica gRPC "
           "([::], hard-coded) which must refuse calls without the Ray token", processes=len(pids),
           listeners=len(sockets), off_loopback=outside, unauthenticated_grpc_call=refused)
    assert bench.lab.settings.serve_port in {port for _, port, _ in sockets}
    assert [entry for entry in outside if entry[1] not in replica_grpc] == [], outside
    assert all(code == "UNAUTHENTICATED" for code in refused.values()), refused


def _grpc_without_token(port: int) -> str:
    """Call the replica's ASGIService (the method Serve's router uses) with no token: the status code."""
    import grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/ray.serve.ASGIService/HandleRequest")
        try:
            call(b"", timeout=5)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return "OK"


def test_models_are_loaded_without_pickle(bench: Bench, record: Record, tmp_path: Any) -> None:
    import mlflow
    import mlflow.pytorch
    import torch

    lab = bench.lab
    registry = lab.registry
    champion = lab.champion()
    # Listing a run's artifacts resolves its logged models through MLflow's process-wide client, which
    # ignores the client's own URI: point the global at this test's server first.
    mlflow.set_tracking_uri(lab.settings.mlflow_uri)
    files = registry.client.list_artifacts(registry.client.get_model_version(
        names.registered_model_name(lab.name), champion).run_id, "model/data")
    assert {f.path.rsplit("/", 1)[-1] for f in files} >= {"model.pt2"} and not any(
        f.path.endswith((".pth", ".pkl")) for f in files)
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(torch.nn.Linear(15, 1), name="model", serialization_format="pickle",
                                        pip_requirements=["torch"])
    pickled = mlflow.register_model(info.model_uri, names.registered_model_name(lab.name)).version
    with pytest.raises(NotServable, match=r"not a torch\.export"):
        registry.load_pytorch_version(lab.name, str(pickled))
    # Aliased as a 50 % challenger, the pickled version is never loaded: the router keeps scoring everything
    # with the champion (and logs the refusal), rather than unpickling or failing requests.
    registry.tag_version(lab.name, str(pickled), {names.TAG_ROLLOUT_WEIGHT: 50})
    registry.set_alias(lab.name, names.ALIAS_CHALLENGER, str(pickled))
    try:
        time.sleep(3 * POLL_S + 1)
        answers = [httpx.post(bench.predict, json=payload(i), timeout=10, trust_env=False) for i in range(40)]
        info = lab.info()
    finally:
        registry.client.delete_registered_model_alias(names.registered_model_name(lab.name), names.ALIAS_CHALLENGER)
    assert [a.status_code for a in answers] == [200] * 40
    assert {a.json()["version"] for a in answers} == {champion} and info["challenger"] is None, info
    record("models loaded without pickle", "pt2 only; a pickled version is refused, also when aliased as a "
           "challenger (all requests still answered by the champion)",
           champion_artifacts=sorted(f.path for f in files), pickled_version=str(pickled),
           answered_by_champion=f"{len(answers)}/{len(answers)}")


# --- load and faults -----------------------------------------------------------------------------------

def test_sustained_load(bench: Bench, record: Record) -> None:
    result = run_load(bench.predict, payload, rate=RATE, duration_s=SUSTAINED_S, max_requests=int(RATE * SUSTAINED_S))
    summary = result.summary()
    latency = (f"p99 < {P99_BOUND_MS:g} ms or < {P99_OVER_P50:g}x the run's p50, whichever is larger" if FULL
               else f"every answer < {STALL_BOUND_MS:g} ms (shared CI run: latency is measured at full length)")
    record("sustained load", f"{RATE:g} req/s for {SUSTAINED_S:g} s: 0 failed, {latency}", **summary)
    assert result.sent >= 0.95 * RATE * SUSTAINED_S and result.dropped == 0, summary
    assert not result.failed, summary
    if FULL:
        assert summary["p99_ms"] < max(P99_BOUND_MS, P99_OVER_P50 * summary["p50_ms"]), summary
    else:
        assert summary["max_ms"] < STALL_BOUND_MS, summary


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _replica_pids(settings: Settings, app: str) -> list[int]:
    """Ray names a replica's worker process `ray::ServeReplica:<app>:<deployment>` (its process title)."""
    pids = [pid for tree in service_processes(settings).values() for pid in tree]
    return sorted(pid for pid in pids if _title(pid).startswith(f"ray::ServeReplica:{app}:{ROUTER_DEPLOYMENT}"))


def _kill_bound() -> str:
    retriable = (f"failures only among requests in flight at the kill or sent after it, each a retriable answer "
                 f"(500 at once, 408 after {LOCAL_REQUEST_TIMEOUT_S:g} s at the proxy), none left to the client's "
                 f"{CLIENT_TIMEOUT_S:g} s timeout; every request in the last 5 s answered 200")
    if FULL:
        return (f"a new replica process within {REPLACED_BOUND_S:g} s and normal answers again within "
                f"{RECOVERY_BOUND_S:g} s of the kill; {retriable}")
    return (f"a new replica process, and the last failed answer within {RECOVERY_BOUND_S:g} s of the kill; "
            f"{retriable} (shared CI run: how fast, {REPLACED_BOUND_S:g} s to a new process and "
            f"{RECOVERY_BOUND_S:g} s to normal latency, is held at full length)")


def test_replica_killed_under_load(bench: Bench, record: Record) -> None:
    """SIGKILL the only router replica mid-load: Serve's controller notices at its next health check of the
    replica (every LOCAL_HEALTH_CHECK_PERIOD_S locally) and starts a new one, which loads the champion from
    the registry again. Meanwhile requests in flight on the killed replica fail at once (500), and the
    proxy holds new ones for at most LOCAL_REQUEST_TIMEOUT_S (then 408): no request hangs until the client
    gives up (its timeout is twice that). Measured: what failed, and when answers were normal again."""
    lab = bench.lab
    [victim] = _replica_pids(lab.settings, lab.name)
    duration, kill_after = scaled(40.0, 60.0), 5.0
    results: list[LoadResult] = []
    load = threading.Thread(target=lambda: results.append(run_load(
        bench.predict, payload, rate=RATE, duration_s=duration, timeout_s=CLIENT_TIMEOUT_S)), daemon=True)
    load.start()
    time.sleep(kill_after)
    killed = time.perf_counter()
    os.kill(victim, signal.SIGKILL)
    replacement = wait_for_value(lambda: [p for p in _replica_pids(lab.settings, lab.name) if p != victim],
                                 duration - kill_after)
    replaced_s = time.perf_counter() - killed
    load.join(duration + 30)
    [result] = results
    kill_s = result.clock(killed)  # the load's own clock: its sent_s start when its client is ready, not here
    lost = outage(result, kill_s)
    tail = [s for s in result.samples if s.sent_s >= duration - 5]
    last_failure_s = max((s.answered_s - kill_s for s in result.failed), default=0.0)
    record("Serve replica killed under load (SIGKILL, 1 replica)", _kill_bound(),
           rate_rps=RATE, duration_s=duration, kill_s=round(kill_s, 2), killed_pid=victim, new_pid=replacement,
           replaced_s=round(replaced_s, 2), **lost, last_failure_s=round(last_failure_s, 2),
           sent=result.sent, failed_total=len(result.failed))
    assert replacement, "Serve started no new replica"
    assert all(s.answered_s >= kill_s for s in result.failed), lost  # nothing failed before the kill
    # the server answered each: none hung to 10 s
    assert set(lost["failure_statuses"]) <= RETRIABLE, (lost, result.failure_examples(), by_second(result, kill_s))
    assert last_failure_s < RECOVERY_BOUND_S, (lost, by_second(result, kill_s))
    if FULL:
        assert replaced_s < REPLACED_BOUND_S, lost
        assert lost["recovery_s"] < RECOVERY_BOUND_S, (lost, by_second(result, kill_s))
    assert tail and all(s.status == 200 for s in tail), (lost, by_second(result, kill_s))


# --- canary scenarios (full mode: they need Prometheus and take minutes) -------------------------------

class Background:
    """Load in a thread beside a scenario, bounded by `max_s`, stopped as soon as the scenario is done."""

    def __init__(self, bench: Bench, max_s: float) -> None:
        self.stop = threading.Event()
        self.results: list[LoadResult] = []
        self.thread = threading.Thread(target=lambda: self.results.append(run_load(
            bench.predict, payload, rate=RATE, duration_s=max_s, stop=self.stop)), daemon=True)

    def __enter__(self) -> Background:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(2)  # a little traffic after the scenario's last step
        self.stop.set()
        self.thread.join(30)

    @property
    def result(self) -> LoadResult:
        [result] = self.results
        return result


@full_only
def test_full_canary_rollout_under_load(bench: Bench, record: Record) -> None:
    lab = bench.lab
    old = lab.champion()
    challenger = lab.register()
    with Background(bench, 400.0) as load:
        assert lab.champion_visible(100, timeout_s=90)
        run = lab.rollout(challenger)
    result = load.result
    record("full canary rollout under load", "promoted; 0 failed requests; p99 < 250 ms",
           hold_timeout=lab.spec.spec.rollout.hold_timeout, outcome=run.outcome.action.value,
           rollout_s=round(run.seconds, 1), checks=run.outcome.checks,
           **result.summary())
    assert run.outcome.action is Action.PROMOTE, describe(run)
    assert lab.aliases() == (challenger, None) and lab.tags(old)[names.TAG_ROLLOUT_STATE] == "retired"
    assert not result.failed, result.summary()


def _stop(settings: Settings, service: str) -> float:
    record = json.loads((settings.state_dir / "services" / f"{service}.json").read_text())
    procs.terminate_tree(record["pid"], record.get("start_ticks"), leader_first=False, grace_s=5)
    return time.monotonic()


@full_only
def test_mlflow_stopped_during_rollout(bench: Bench, record: Record) -> None:
    """MLflow goes away 10 s into a rollout for 15 s (plus its restart): the controller's registry writes
    retry (MLflow's client retries, then the controller's 1, 2, 4, 8, 16 s backoff), the router keeps
    serving its last known versions, and the rollout ends in one consistent state (both aliases and the
    weight tag agree)."""
    lab = bench.lab
    old = lab.champion()
    challenger = lab.register()
    runs: list[Any] = []
    errors: list[BaseException] = []

    def rollout() -> None:
        try:
            runs.append(lab.rollout(challenger))
        except BaseException as exc:  # what `ferry step rollout` would exit with
            errors.append(exc)

    with Background(bench, 400.0) as load:
        assert lab.champion_visible(100, timeout_s=90)
        roller = threading.Thread(target=rollout, daemon=True)
        roller.start()
        time.sleep(10)
        stopped = _stop(lab.settings, "mlflow")
        time.sleep(15)
        start_services(lab.settings, include=["mlflow"])
        restarted = time.monotonic()
        roller.join(300)
    result = load.result
    champion, candidate = lab.aliases()
    weight = lab.tags(challenger).get(names.TAG_ROLLOUT_WEIGHT)
    state = lab.tags(challenger).get(names.TAG_ROLLOUT_STATE)
    figures = {"outage_s": round(restarted - stopped, 1), "controller_error": repr(errors[0]) if errors else None,
               "outcome": runs[0].outcome.action.value if runs else None, "aliases": [champion, candidate],
               "challenger_weight": weight, "challenger_state": state, **result.summary()}
    record("MLflow stopped during a rollout (15 s + restart)",
           "rollout ends promoted or rolled back, aliases consistent; 0 failed requests", **figures)
    assert not errors, figures
    assert not result.failed, figures
    if runs[0].outcome.action is Action.PROMOTE:
        assert (champion, candidate, weight, state) == (challenger, None, "100", "promoted"), figures
        assert lab.tags(old)[names.TAG_ROLLOUT_STATE] == "retired"
    else:
        assert (champion, candidate, weight, state) == (old, None, "0", "rolled-back"), figures


@full_only
def test_prometheus_stopped_during_analysis(bench: Bench, record: Record) -> None:
    """No metrics is no evidence: the controller holds, never promotes, and rolls back at hold_timeout."""
    lab = bench.lab
    champion = lab.champion()
    challenger = lab.register()
    with Background(bench, 200.0) as load:
        _stop(lab.settings, "prometheus")
        try:
            run = lab.rollout(challenger, canary_spec(hold_timeout="40s"))
        finally:
            start_services(lab.settings, include=["prometheus"])
    result = load.result
    record("Prometheus stopped during analysis", "never promotes; rolled back at hold_timeout (40 s)",
           outcome=run.outcome.action.value, reason=run.outcome.reason, rollout_s=round(run.seconds, 1),
           checks=run.outcome.checks, failed_requests=len(result.failed))
    assert run.outcome.action is Action.ROLLBACK, describe(run)
    assert all(c["action"] == "hold" for c in run.checks()[:-1]), describe(run)
    assert lab.aliases() == (champion, None)
    assert 40 <= run.seconds < 90 and not result.failed
