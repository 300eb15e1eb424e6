"""The local services `ferry up` starts, watches and `ferry down` stops: a Ray head, an MLflow tracking
server and, when installed, Prometheus and Alertmanager. All bind 127.0.0.1 on the ports of `Settings`.

Each service runs detached in its own session (start_new_session), logs to `.ferry/logs/<name>.log`
and is recorded in `.ferry/services/<name>.json` (pid, process start time, command, ports). `up` leaves
a recorded service that is alive and answering alone; `down` stops exactly the recorded process trees.

Ray 2.60 token authentication, as read in ray/_private/authentication and ray/scripts/scripts.py:

- The mode comes from the environment variable ``RAY_AUTH_MODE`` (``token`` | ``disabled``); it cannot be
  set through ``_system_config``. ``ray.init()`` *starting* a cluster turns it on by default, but
  ``ray start --head`` only turns it on when a token already exists (otherwise it warns and starts
  without auth), and a client given an explicit address (``ray.init(address=...)``, ``RAY_ADDRESS``,
  ``ray status --address``, JobSubmissionClient) never auto-enables it.
- The token is looked up (C++ AuthenticationTokenLoader) in ``RAY_AUTH_TOKEN`` (the value), then
  ``RAY_AUTH_TOKEN_PATH`` (a file), then ``~/.ray/auth_token``. ``ray get-auth-token --generate`` writes
  64 hex characters (``secrets.token_hex(32)``) to the latter.
- gRPC (GCS, raylet, workers) checks it; the dashboard HTTP API checks ``Authorization: Bearer <token>``
  (or ``X-Ray-Authorization``, or the ``ray-authentication-token`` cookie) except on a few public paths
  (``/api/healthz``, ``/api/gcs_healthz``, ``/api/authentication_mode``, ...). JobSubmissionClient and the
  ``serve``/``ray job`` CLIs add the header themselves when RAY_AUTH_MODE=token and a token is found, or
  use a caller's own ``Authorization`` header unchanged.
- Processes the head starts (raylet, workers, job drivers) inherit its environment, so drivers
  connect without extra setup.

So ferry keeps auth on by generating its own token once at ``.ferry/ray/auth_token`` (0600) and giving
every process it starts, the head included, ``RAY_AUTH_MODE=token`` and ``RAY_AUTH_TOKEN_PATH`` (the path,
not the value: the value would show up in job runtime_envs and process listings). Without both variables
a client fails with "Authentication token is missing or incorrect" (gRPC) or HTTP 401 (dashboard).
Clients inside ferry pass the header explicitly (`ray_auth_headers`) because Ray caches the auth mode
per process at import time. Ray's metrics endpoint and the Serve HTTP proxy do not check the token.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import ferry
from ferry.local.errors import LocalError
from ferry.local.supervisor import local_ingress, locks, procs
from ferry.local.supervisor.service_defs import (
    OPTIONAL,
    SERVICES,
    SKIP_HINT,
    MissingBinary,
    ServiceSpec,
    build_spec,
    ensure_ray_token,
    installed,
    ray_auth_headers,
    ray_token_path,
)
from ferry.settings import Settings

__all__ = ["LocalError", "ServiceStatus", "ferry_env", "service_processes", "service_status", "start_services",
           "stop_services", "use_ray_client_env"]

OnWait = Callable[[str], None]
SERVICES_LOCK = "services"
LOCK_SLACK_S = 30.0  # beyond the holder's own bound: its spawns, config files and record writes

# Settings fields a child process must not inherit through FERRY_* (set per node, or by alias).
_NOT_EXPORTED = {"mlflow_uri_override", "outputs_dir"}


@dataclass(frozen=True)
class ServiceStatus:
    """What happened to (or is true of) one service; `state` is one of
    started | running | stopped | not running | skipped | unhealthy | dead | external (MLflow only: a tracking
    server MLFLOW_TRACKING_URI names, which ferry uses and neither starts nor stops)."""

    name: str
    state: str
    url: str | None = None
    pid: int | None = None
    ports: dict[str, int] = field(default_factory=dict)
    log: Path | None = None
    message: str = ""


def ferry_env(settings: Settings) -> dict[str, str]:
    """The environment every child process ferry starts gets on top of its own (steps, Ray head, jobs)."""
    env = {f"FERRY_{name.upper()}": str(value.resolve() if isinstance(value, Path) else value)
           for name, value in settings.model_dump().items()
           if name not in _NOT_EXPORTED and value is not None}
    loopback = "127.0.0.1,localhost"
    no_proxy = ",".join(p for p in (os.environ.get("NO_PROXY", ""), loopback) if p)
    env.update({
        "FERRY_HOME": str(settings.home.resolve()),
        "MLFLOW_TRACKING_URI": settings.mlflow_uri,
        "RAY_ADDRESS": settings.ray_address,
        "RAY_API_SERVER_ADDRESS": settings.ray_dashboard_url,  # `ray job ...`
        "RAY_DASHBOARD_ADDRESS": settings.ray_dashboard_url,  # `serve deploy/status ...`
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(ray_token_path(settings).resolve()),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # else Ray swaps 127.0.0.1 for the host address
        "NO_PROXY": no_proxy, "no_proxy": no_proxy,  # a proxy from the shell must not see loopback
        "PYTHONPATH": _pythonpath(),
    })
    return env


def use_ray_client_env(settings: Settings) -> None:
    """Make *this* process a client of the local head (ray.init, Serve, the job SDK without headers).

    Best called before `import ray`. Ray reads RAY_AUTH_MODE and RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when
    it is imported, so when it already is, its config and cached token are re-read the way Ray does when
    it turns auth on itself, and the loopback switch is set on the module that holds it (private Ray
    names, hence best-effort). Child processes should get `ferry_env` instead.
    """
    os.environ.update({k: v for k, v in ferry_env(settings).items() if k.startswith("RAY_")})
    if "ray" not in sys.modules:
        return
    with contextlib.suppress(ImportError, AttributeError):
        from ray._private import ray_constants
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
        ray_constants.ENABLE_RAY_CLUSTER = False  # else the driver announces the host address, not 127.0.0.1


def _pythonpath() -> str:
    """Children run `python -m ferry.cli.app`: make them import the same ferry as this process."""
    root = str(Path(ferry.__file__).resolve().parent.parent)
    rest = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    return os.pathsep.join([root, *rest])


# --- records ---------------------------------------------------------------------------------------

def _record_path(settings: Settings, name: str) -> Path:
    return settings.state_dir / "services" / f"{name}.json"


def _log_path(settings: Settings, name: str) -> Path:
    return settings.logs_dir / f"{name}.log"


def _read_record(settings: Settings, name: str) -> dict[str, Any] | None:
    try:
        return json.loads(_record_path(settings, name).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_record(settings: Settings, name: str, record: dict[str, Any]) -> None:
    path = _record_path(settings, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def _alive(record: dict[str, Any]) -> bool:
    return procs.is_alive(record.get("pid"), record.get("start_ticks"))


def _probe(settings: Settings, name: str, ready_url: str) -> bool:
    if name == "redis":
        password = settings.redis_password_file
        return password.exists() and procs.redis_ok(settings.host, settings.redis_port, password.read_text().strip())
    headers = ray_auth_headers(settings) if name == "ray" and ray_token_path(settings).exists() else {}
    return procs.http_ok(ready_url, headers)


def _status(settings: Settings, record: dict[str, Any], state: str, message: str = "") -> ServiceStatus:
    return ServiceStatus(name=record["name"], state=state, url=record.get("url"), pid=record.get("pid"),
                         ports=record.get("ports", {}), log=_log_path(settings, record["name"]),
                         message=message)


# --- up ----------------------------------------------------------------------------------------------

def start_services(settings: Settings, include: Iterable[str] | None = None, timeout_s: float | None = None,
                   on_wait: OnWait | None = None) -> list[ServiceStatus]:
    """Start the selected services (default: all) and wait until each answers; idempotent.

    Prometheus and Alertmanager are skipped with a hint when not installed; Ray and MLflow are required.
    Two processes starting services at once (two `ferry up`s, `ferry up` and `ferry retrain --local`)
    would both find a service unrecorded and both spawn it, and the second would fail on the taken port:
    so the whole start happens under one lock, and a second caller waits (`on_wait` is told once) and
    then finds every service recorded and answering. The services start side by side (none needs another to
    start); the first failure is raised once every start has ended, and the rest stay recorded for `ferry down`.
    """
    names = _selected(include)
    timeout = settings.ready_timeout_s if timeout_s is None else timeout_s
    with _services_lock(settings, len(names) * timeout, on_wait):
        settings.logs_dir.mkdir(parents=True, exist_ok=True)
        if "ray" in names:
            ensure_ray_token(settings)
        with ThreadPoolExecutor(max_workers=len(names) or 1, thread_name_prefix="ferry-service") as pool:
            futures = [pool.submit(_start_named, name, names, settings, timeout) for name in names]
        return [future.result() for future in futures]


def _services_lock(settings: Settings, holder_bound_s: float,
                   on_wait: OnWait | None) -> contextlib.AbstractContextManager[None]:
    """The one lock around starting and stopping services. Its holder waits at most `holder_bound_s` for
    readiness (each service is bounded), so a waiter gives up a little after that, naming the holder."""
    return locks.exclusive(locks.lock_path(settings, SERVICES_LOCK), what="the lock on the local services",
                           timeout_s=holder_bound_s + LOCK_SLACK_S, on_wait=on_wait)


def _start_named(name: str, names: tuple[str, ...], settings: Settings, timeout_s: float) -> ServiceStatus:
    if name == "mlflow" and settings.mlflow_is_external:
        return _await_external_mlflow(settings, timeout_s)
    try:
        spec = build_spec(name, settings, names)
    except MissingBinary as exc:
        if name in OPTIONAL:
            return ServiceStatus(name=name, state="skipped", message=SKIP_HINT)
        raise LocalError(f"cannot start {name}: {exc}. Install ferry's ML extras: "
                         "pip install -e '.[ml]'") from exc
    return _start_one(spec, settings, timeout_s)


def _selected(include: Iterable[str] | None) -> tuple[str, ...]:
    wanted = set(SERVICES if include is None else include)
    unknown = wanted - set(SERVICES)
    if unknown:
        raise LocalError(f"unknown service(s) {', '.join(sorted(unknown))}; known: {', '.join(SERVICES)}")
    return tuple(name for name in SERVICES if name in wanted)


def _start_one(spec: ServiceSpec, settings: Settings, timeout_s: float) -> ServiceStatus:
    record = _read_record(settings, spec.name)
    if record and _alive(record):
        return _adopt(spec, record, settings, timeout_s)
    if record:  # it died: clear whatever of its tree is left before judging ports
        procs.terminate_tree(record["pid"], record.get("start_ticks"), leader_first=False, grace_s=5)
        _record_path(settings, spec.name).unlink(missing_ok=True)
    _check_ports(spec, settings)
    if spec.prepare:
        spec.prepare()
    proc = _spawn(spec, settings)
    record = {"name": spec.name, "pid": proc.pid, "start_ticks": procs.start_ticks(proc.pid),
              "command": spec.argv,
              "ports": {**{role: port for role, (port, _) in spec.ports.items()}, **spec.side_ports},
              "url": spec.url, "ready_url": spec.ready_url, "log": str(_log_path(settings, spec.name)),
              "leader_first": spec.leader_first, "grace_s": spec.grace_s,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _write_record(settings, spec.name, record)
    _await_ready(spec, proc, settings, timeout_s)
    return _status(settings, record, "started")


def _adopt(spec: ServiceSpec, record: dict[str, Any], settings: Settings, timeout_s: float) -> ServiceStatus:
    """A recorded service is alive: leave it alone once it answers (it may still be starting)."""
    wanted = {role: port for role, (port, _) in spec.ports.items()}
    running = {role: port for role, port in record.get("ports", {}).items() if role in wanted}
    if running != wanted:
        raise LocalError(f"{spec.name} (pid {record['pid']}) already runs with ports {running}, but the settings "
                         f"ask for {wanted}; run `ferry down` first to restart it on the new ports")
    sides = set(record.get("ports", {})) - set(wanted)
    if sides and sides != set(spec.side_ports):  # chosen at start: only which ones there are can differ
        raise LocalError(f"{spec.name} (pid {record['pid']}) was started with other side ports than "
                         f"FERRY_LOCAL_INGRESS={settings.local_ingress} takes now (another Serve ingress, or an "
                         "older ferry); run `ferry down` first to restart it with them")
    if procs.wait_until(lambda: _probe(settings, spec.name, record["ready_url"]), timeout_s, 0.5):
        return _status(settings, record, "running", "already running")
    raise LocalError(f"{spec.name} (pid {record['pid']}) is running but does not answer on "
                     f"{record['ready_url']} after {timeout_s:.0f}s; see {_log_path(settings, spec.name)} "
                     "and run `ferry down` to stop it")


def _check_ports(spec: ServiceSpec, settings: Settings) -> None:
    for role, (port, setting) in spec.ports.items():
        if not procs.port_free(port, settings.host):
            raise LocalError(
                f"port {port} on {settings.host} ({spec.name} {role}) is already in use by a process ferry "
                f"did not start; stop that process or choose another port with FERRY_{setting.upper()}")


def _spawn(spec: ServiceSpec, settings: Settings) -> subprocess.Popen[bytes]:
    log_path = _log_path(settings, spec.name)
    env = {**os.environ, **ferry_env(settings), **spec.env}
    with log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"\n=== {stamp} ferry up: {' '.join(spec.argv)}\n".encode())
        log.flush()
        try:
            return subprocess.Popen(spec.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, cwd=settings.home, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise LocalError(f"could not start {spec.name} ({spec.argv[0]}): {exc}; check that it is installed "
                             "and executable (`task setup`)") from exc


def _await_ready(spec: ServiceSpec, proc: subprocess.Popen[bytes], settings: Settings, timeout_s: float) -> None:
    def done() -> bool:
        return proc.poll() is not None or _probe(settings, spec.name, spec.ready_url)

    procs.wait_until(done, timeout_s, 0.5)
    code = proc.poll()
    if code is None and _probe(settings, spec.name, spec.ready_url):
        return
    procs.terminate_tree(proc.pid, procs.start_ticks(proc.pid), leader_first=spec.leader_first,
                         grace_s=spec.grace_s)
    proc.poll()
    _record_path(settings, spec.name).unlink(missing_ok=True)
    why = f"exited with code {code}" if code is not None else f"did not answer within {timeout_s:.0f}s"
    raise LocalError(f"{spec.name} {why} ({spec.ready_url}); last lines of {_log_path(settings, spec.name)}:\n"
                     + _tail(_log_path(settings, spec.name)))


def _await_external_mlflow(settings: Settings, timeout_s: float) -> ServiceStatus:
    """An MLflow that MLFLOW_TRACKING_URI names (a team's server, or one a test session shares): wait until it
    answers, start nothing. A URI that is no server (sqlite:, file:) has nothing to wait for."""
    uri = settings.mlflow_uri
    if urlparse(uri).scheme in ("http", "https"):
        health = f"{uri.rstrip('/')}/health"
        if not procs.wait_until(lambda: procs.http_ok(health), timeout_s, 0.5):
            raise LocalError(f"the MLflow server MLFLOW_TRACKING_URI names ({_shown(uri)}) did not answer "
                             f"{_shown(health)} within {timeout_s:.0f}s: start it, or unset MLFLOW_TRACKING_URI so "
                             "that `ferry up` starts MLflow itself")
    return _external_status(settings)


def _external_status(settings: Settings) -> ServiceStatus:
    return ServiceStatus(name="mlflow", state="external", url=_shown(settings.mlflow_uri),
                         message="MLFLOW_TRACKING_URI: used, not started or stopped by ferry")


def _shown(uri: str) -> str:
    """`uri` without the user and password it may carry before an @, for messages and `ferry status`."""
    parts = urlparse(uri)
    return parts._replace(netloc=f"***@{parts.netloc.rsplit('@', 1)[1]}").geturl() if "@" in parts.netloc else uri


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --- down / status -------------------------------------------------------------------------------------

def stop_services(settings: Settings, timeout_s: float = 60.0,
                  on_wait: OnWait | None = None) -> list[ServiceStatus]:
    """Stop what `up` recorded, newest first: SIGTERM, bounded wait, SIGKILL; then check the ports.
    Under the services lock, so a service another process is starting right now is recorded (and stopped)
    by the time this reads the records."""
    with _services_lock(settings, len(SERVICES) * settings.ready_timeout_s, on_wait):
        return [_stop_one(settings, name, timeout_s) for name in reversed(SERVICES)][::-1]


def _stop_one(settings: Settings, name: str, timeout_s: float) -> ServiceStatus:
    record = _read_record(settings, name)
    if record is None:
        return ServiceStatus(name=name, state="not running")
    killed = procs.terminate_tree(record["pid"], record.get("start_ticks"),
                                  leader_first=bool(record.get("leader_first")),
                                  grace_s=min(float(record.get("grace_s", 15.0)), timeout_s))
    busy = _ports_still_busy(settings, record)
    _record_path(settings, name).unlink(missing_ok=True)
    if name == "ray":  # HAProxy's launcher, config and sockets, if the head ran it: nothing there outlives it
        shutil.rmtree(local_ingress.haproxy_dir(settings), ignore_errors=True)
    notes = [f"needed SIGKILL for pid(s) {', '.join(map(str, killed))}"] if killed else []
    if busy:
        notes.append(f"port(s) {', '.join(map(str, busy))} still in use by another process")
    return _status(settings, record, "stopped", "; ".join(notes))


def _ports_still_busy(settings: Settings, record: dict[str, Any]) -> list[int]:
    ports = list(record.get("ports", {}).values())
    procs.wait_until(lambda: all(procs.port_free(p, settings.host) for p in ports), 10.0, 0.25)
    return [p for p in ports if not procs.port_free(p, settings.host)]


def service_processes(settings: Settings) -> dict[str, list[int]]:
    """The live pids of each recorded service's tree (for status views, and tests that check sockets)."""
    result = {}
    for name in SERVICES:
        record = _read_record(settings, name)
        if record and _alive(record):
            result[name] = sorted(procs.process_tree(record["pid"]))
    return result


def service_listeners(settings: Settings) -> list[tuple[str, int, str]]:
    """(address, port, process title) of every TCP listener of the services' process trees."""
    pids = [pid for tree in service_processes(settings).values() for pid in tree]
    return [(addr, port, procs.process_title(pid)) for addr, port, pid in procs.listening_sockets(pids)]


def service_status(settings: Settings) -> list[ServiceStatus]:
    """One line per service: running (answers), unhealthy (alive, silent), dead (recorded, gone), stopped."""
    results = []
    for name in SERVICES:
        record = _read_record(settings, name)
        if record is None and name == "mlflow" and settings.mlflow_is_external:
            results.append(_external_status(settings))
        elif record is None and name in OPTIONAL and not installed(name):
            results.append(ServiceStatus(name=name, state="skipped", message=SKIP_HINT))
        elif record is None:
            results.append(ServiceStatus(name=name, state="stopped", log=_log_path(settings, name)))
        elif not _alive(record):
            results.append(_status(settings, record, "dead",
                                   f"recorded pid {record['pid']} is gone; `ferry up` restarts it"))
        elif _probe(settings, name, record["ready_url"]):
            results.append(_status(settings, record, "running"))
        else:
            results.append(_status(settings, record, "unhealthy", f"no answer on {record['ready_url']}"))
    return results

