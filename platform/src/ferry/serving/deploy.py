"""Run a model's Serve application on the local Ray head, and ask it for a prediction.

The caller (the CLI) makes this process a client of the local head first (`use_ray_client_env`); this
module takes settings as parameters and never imports ferry.local (layer rule). The application and its
deployment options are the ones the prod RayService's serveConfigV2 carries (ferry.render.rayservice).

Idempotent: the router reports its configuration fingerprint on `<route>/info`, and a deploy whose
fingerprint is already serving returns without touching Serve. A changed configuration is a Serve
update of the running application (new replicas start before old ones stop).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from ferry.adapters.tls import tls_context
from ferry.contract.errors import FerryError
from ferry.render.rayservice import app_args, state_store_args
from ferry.serving.schemas import DEFAULT_POLL_INTERVAL_S, AppArgs
from ferry.settings import Settings
from ferry.spec.models import ModelSpec

DEPLOY_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 10.0


class ServingError(FerryError):
    """A deploy or a request failed; the message says what and where to look."""


LOCAL_CPUS_PER_REPLICA = 0.1
# When a replica dies (killed, OOM), Serve's controller notices at its next health check of it and only
# then starts a new one; the proxy holds every request meant for it until then, with no bound by default.
# Locally the replica is checked every 2 s instead of Serve's 10 s (a no-op actor call, so cheap), and no
# request waits at the proxy longer than 5 s: past that it is answered 408 (Serve's timeout answer, which
# clients retry), never left hanging until the client gives up. 5 s is 50x the p99 the canary analysis
# allows, half of what `predict_once` waits, and above every fault latency the tests inject.
LOCAL_HEALTH_CHECK_PERIOD_S = 2.0
LOCAL_REQUEST_TIMEOUT_S = 5.0
# `ferry up` deploys each model from its own thread as soon as its run is over: the driver's connection and Serve's
# client calls go one at a time (two threads would both find Ray uninitialised and both call ray.init); the wait
# for the replicas to answer, most of a deploy, does not.
_SERVE_CLIENT = threading.Lock()


def local_args(settings: Settings, spec: ModelSpec, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
               allow_fault_injection: bool = False) -> AppArgs:
    """On one machine replicas share the CPUs with training: a replica that reserved a whole CPU per model
    would leave Tune and Train nothing to schedule on, so local replicas reserve a tenth of one."""
    serving = spec.spec.serving
    local = spec.model_copy(update={"spec": spec.spec.model_copy(update={"serving": serving.model_copy(
        update={"cpus_per_replica": min(serving.cpus_per_replica, LOCAL_CPUS_PER_REPLICA)})})})
    return AppArgs.model_validate({**app_args(local, settings.mlflow_uri), "poll_interval_s": poll_interval_s,
                                   "allow_fault_injection": allow_fault_injection,
                                   "state_store": local_state_store(settings, spec),
                                   "prediction_log": {"uri": settings.prediction_log_uri}})


def local_state_store(settings: Settings, spec: ModelSpec) -> dict[str, Any] | None:
    """The Redis `ferry up` started, when it did (redis-server installed): its password file exists."""
    if not settings.redis_password_file.exists():
        return None
    return state_store_args(spec, settings.host, settings.redis_port,
                            password_file=str(settings.redis_password_file.resolve()))


def serve_url(settings: Settings, spec: ModelSpec) -> str:
    return f"http://{settings.host}:{settings.serve_port}{spec.spec.serving.route}"


def deploy_local(settings: Settings, spec: ModelSpec, poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
                 timeout_s: float = DEPLOY_TIMEOUT_S, allow_fault_injection: bool = False) -> str:
    """Deploy (or update) `spec`'s router on the local head; return its URL once `/readyz` answers 200.
    `allow_fault_injection` makes the router honour the ferry.fault.* version tags (tests, reliability
    runs; see ferry.serving.faults); the CLI never sets it."""
    args = local_args(settings, spec, poll_interval_s, allow_fault_injection)
    url = serve_url(settings, spec)
    if _fingerprint(url) == args.fingerprint():  # this very configuration serves (or starts: `start_local`)
        _await_readyz(url, timeout_s)
        return url
    _submit(settings, spec, args)
    _await_ready(spec.name, url, timeout_s)
    return url


def start_local(settings: Settings, spec: ModelSpec) -> bool:
    """Start `spec`'s router on the local head without waiting for it, when nothing answers on its route yet; True
    when it did. `ferry up` calls this as a model's run starts, as Argo CD applies a model's RayService
    beside its Workflow on a cluster: the replica starts (its imports, Serve's proxy) while the model trains,
    answers 503 until rollout sets a champion, and `deploy_local` (same defaults) then finds its configuration
    serving and waits for `/readyz` alone. A route that answers already stays as it is until the run is over."""
    url = serve_url(settings, spec)
    if _fingerprint(url) is not None:
        return False
    _submit(settings, spec, local_args(settings, spec))
    return True


def remove_local(settings: Settings, app: str) -> None:
    """Delete an application `start_local` started for a run that registered no champion: serving is left as it
    was before that run, with no route for the model."""
    from ray import serve

    with _SERVE_CLIENT:
        _connect(settings)
        serve.delete(app)


def _submit(settings: Settings, spec: ModelSpec, args: AppArgs) -> None:
    from ray import serve

    from ferry.serving.app import build_app

    with _SERVE_CLIENT:
        _connect(settings)
        serve.start(http_options={"host": settings.host, "port": settings.serve_port,
                                  "request_timeout_s": LOCAL_REQUEST_TIMEOUT_S})
        # serve.run() would wait for RUNNING without a bound; run_many is the same call with the wait ours.
        app = build_app(args.model_dump(mode="json"), {"health_check_period_s": LOCAL_HEALTH_CHECK_PERIOD_S})
        target = serve.RunTarget(target=app, name=spec.name, route_prefix=spec.spec.serving.route)
        serve.run_many([target], wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)


def _connect(settings: Settings) -> None:
    import ray

    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # the CLI prints its own progress
    if not ray.is_initialized():
        try:
            ray.init(address=settings.ray_address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            raise ServingError(f"cannot reach the Ray head at {settings.ray_address} ({exc}); "
                               "start it with `ferry up`") from exc


def _fingerprint(url: str) -> str | None:
    try:
        response = httpx.get(f"{url}/info", timeout=2.0, trust_env=False, verify=tls_context())
        return response.json().get("fingerprint") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def _await_ready(app: str, url: str, timeout_s: float) -> None:
    """Poll the app's status (fail fast on DEPLOY_FAILED) and then `/readyz`, within one deadline."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    status, message = "UNKNOWN", ""
    while time.monotonic() < deadline:
        found = serve.status().applications.get(app)
        if found is not None:
            status, message = str(found.status), found.message
        if status.endswith("DEPLOY_FAILED"):
            raise ServingError(f"Serve could not deploy {app}: {message.strip()[-2000:]}")
        if status.endswith("RUNNING") and _ready(url):
            return
        time.sleep(0.5)
    raise ServingError(f"{app} was not ready within {timeout_s:.0f}s (status {status}; {url}/readyz not 200). "
                       f"{message.strip()[-500:]} See the replica logs under the Ray session's logs/serve folder; "
                       "a champion alias must exist in the registry and the head needs a free CPU per replica.")


def _await_readyz(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not _ready(url):
        if time.monotonic() > deadline:
            raise ServingError(f"{url}/readyz did not answer 200 within {timeout_s:.0f}s: a champion alias must "
                               "exist in the registry; see the replica logs under the Ray session's logs/serve folder")
        time.sleep(0.25)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2.0, trust_env=False, verify=tls_context()).status_code == 200
    except httpx.HTTPError:
        return False


def predict_once(url: str, payload: dict[str, Any], timeout_s: float = HTTP_TIMEOUT_S,
                 path: str = "/predict") -> dict[str, Any]:
    """POST one row to `<url><path>`; the parsed response, or a ServingError naming the status and detail."""
    try:
        response = httpx.post(f"{url}{path}", json=payload, timeout=timeout_s, trust_env=False,
                              verify=tls_context())
    except httpx.HTTPError as exc:
        raise ServingError(f"no answer from {url}{path}: {exc}") from exc
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text[:500]
    if response.status_code != 200:
        detail = body.get("detail", body) if isinstance(body, dict) else body
        raise ServingError(f"{url}{path} answered {response.status_code}: {detail}")
    return dict(body)


def ask_example(settings: Settings, spec: ModelSpec, url: str) -> tuple[str, dict[str, Any]]:
    """`ferry up`'s served answer: the path asked and what it answered (`example_call`)."""
    path, payload = example_call(settings, spec)
    return path, predict_once(url, payload, path=path)


def example_call(settings: Settings, spec: ModelSpec) -> tuple[str, dict[str, Any]]:
    """Where `ferry up` asks the served model, with what: a ranking workload's example request on its endpoint; the
    example raw request when the model takes raw requests and the feature state store runs; else the example
    features (on `/predict/features` for a model that takes raw requests)."""
    from ferry.adapters.workloads import load_workload
    from ferry.serving.online import takes_raw_requests
    from ferry.serving.ranking import ranks

    workload: Any = load_workload(spec.spec.workload)  # raw requests are optional: not in the Workload protocol
    if ranks(workload):
        return f"/{workload.endpoint.strip('/')}", workload.example_request()
    if not takes_raw_requests(workload):
        return "/predict", workload.example_request()
    if local_state_store(settings, spec) is not None:
        return "/predict", workload.example_raw_request()
    return "/predict/features", workload.example_request()
