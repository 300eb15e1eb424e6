"""What each local service is: its command line, ports, readiness probe and generated config files.

Kept apart from the start/stop machinery in services.py so the commands can be read (and tested) as
plain data. Every service binds 127.0.0.1 only, on the ports of `Settings`.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import yaml

from ferry.contract import metrics
from ferry.local.errors import LocalError
from ferry.local.supervisor import local_ingress, procs
from ferry.render import alerting, alerts
from ferry.settings import Settings

SERVICES = ("ray", "mlflow", "redis", "prometheus", "alertmanager", "receiver")
OPTIONAL = ("redis", "prometheus", "alertmanager")
BINARIES = {"ray": ("ray",), "mlflow": ("mlflow",), "redis": ("redis-server",), "prometheus": ("prometheus",),
            "alertmanager": ("prometheus-alertmanager", "alertmanager")}  # Debian's name first
SKIP_HINT = "skipped: install the Debian packages redis-server, prometheus, prometheus-alertmanager (task setup)"
# Ports Ray opens beyond the ones in Settings (its defaults would be 52365, 44217 and 44227). Another Ray on this
# machine (a second checkout, a test module running in parallel) may hold or be about to take them: "the default
# when free" raced there (two heads starting together both took 52365, and one had no agent to submit jobs to),
# and Ray would advertise the other cluster's metrics endpoints in its Prometheus discovery file. So each is a
# free ephemeral port, chosen at start (Prometheus finds them through Ray's discovery file).
RAY_SIDE_PORTS = ("dashboard-agent", "autoscaler-metrics", "dashboard-metrics")
# Ray writes this (a symlink into the current session) under its temp dir; see metrics_agent.py.
RAY_SD_FILE = "prom_metrics_service_discovery.json"


class MissingBinary(LocalError):
    """A service's executable is not installed."""


@dataclass(frozen=True)
class ServiceSpec:
    """One service as `ferry up` starts it. `ports` maps a role to (port, Settings field for the hint)."""

    name: str
    argv: list[str]
    ports: dict[str, tuple[int, str]]
    url: str
    ready_url: str
    ready_headers: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    side_ports: dict[str, int] = field(default_factory=dict)  # chosen free at start; not user-facing
    leader_first: bool = False  # SIGTERM only the leader, which shuts its own children down in order
    grace_s: float = 15.0
    prepare: Callable[[], None] | None = None

    @property
    def main_port(self) -> int:
        return next(iter(self.ports.values()))[0]


def find_binary(name: str, *alternatives: str) -> str:
    """The executable next to this interpreter (the venv ferry runs in), else the first one on PATH."""
    for candidate in (name, *alternatives):
        beside = Path(sys.executable).parent / candidate
        if beside.is_file():
            return str(beside)
        found = shutil.which(candidate)
        if found:
            return found
    names = " or ".join(f"`{n}`" for n in (name, *alternatives))
    raise MissingBinary(f"{names} not found next to {sys.executable} or on PATH")


# --- Ray token -------------------------------------------------------------------------------------

def ray_token_path(settings: Settings) -> Path:
    return settings.state_dir / "ray" / "auth_token"


def ensure_secret_file(path: Path) -> str:
    """Create a 256-bit secret once in `path` (0600, in a 0700 folder) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def ensure_ray_token(settings: Settings) -> str:
    """Create the cluster token once (0600, 256 bits like `ray get-auth-token --generate`) and return it."""
    return ensure_secret_file(ray_token_path(settings))


def read_ray_token(settings: Settings) -> str:
    try:
        return ray_token_path(settings).read_text().strip()
    except FileNotFoundError as exc:
        raise LocalError(f"no Ray token at {ray_token_path(settings)}: start the services with `ferry up`") from exc


def ray_auth_headers(settings: Settings) -> dict[str, str]:
    """What an HTTP client of the Ray dashboard (jobs, serve, state API) sends."""
    return {"Authorization": f"Bearer {read_ray_token(settings)}"}


def ray_temp_dir(settings: Settings) -> Path:
    """Ray's --temp-dir, one per checkout: short (Ray's unix sockets live below it and paths are capped
    near 107 bytes) and not the shared /tmp/ray, so two checkouts or a test never share a session."""
    return settings.short_temp_dir("ray")


def ray_sd_file(settings: Settings) -> Path:
    return ray_temp_dir(settings) / RAY_SD_FILE


# The local head is one node on a laptop or a CI machine, kept up between runs; its processes inherit these
# (Ray reads them there, in the raylet's workers). What the served stack costs at rest: docs/benchmarks/up.md.
LOCAL_HEAD_ENV = {
    # Draining only matters with several nodes; locally `down` should not wait the default 30 s.
    "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "5",
    # Ray Train starts a PreemptionWatcher actor (a process) per run to follow node draining, which a single
    # node that no autoscaler drains never does. Clusters keep it: their RayJobs do not get this env.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Serve's controller loops every 0.1 s (the busiest idle process); 0.5 s delays a deploy, a replica
    # replacement or an autoscaling step by at most 0.4 s. Canary weights do not go through it (router tags).
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.5",
    # The log monitor lists the session's log folder every 0.1 s while it holds fewer than this many files (a
    # glob per loop, its whole cost at rest); at 0 it lists it every 0.5 s. A new worker's first lines reach
    # their driver up to 0.4 s later; lines of files it already follows are read every 0.1 s as before.
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    # The dashboard agent samples every worker process (psutil) this often for the node's metrics; every 5 s by
    # default, twice per scrape of the local Prometheus (10 s), where only the last sample is ever read.
    "REPORTER_UPDATE_INTERVAL_MS": "10000",
}


# --- the services ------------------------------------------------------------------------------------

def ray_spec(settings: Settings) -> ServiceSpec:
    host = settings.host
    side = {role: procs.free_port(host) for role in RAY_SIDE_PORTS}
    argv = [find_binary(*BINARIES["ray"]), "start", "--head", "--block", f"--node-ip-address={host}",
            "--port", str(settings.ray_port),
            "--dashboard-host", host, "--dashboard-port", str(settings.ray_dashboard_port),
            "--metrics-export-port", str(settings.ray_metrics_port),
            "--ray-client-server-port", str(settings.ray_client_port),
            "--dashboard-agent-listen-port", str(side["dashboard-agent"]),
            "--include-dashboard", "true", "--temp-dir", str(ray_temp_dir(settings)),
            "--disable-usage-stats"]
    if settings.ray_cpus is not None:
        argv += ["--num-cpus", str(settings.ray_cpus)]
    env = {**LOCAL_HEAD_ENV, "AUTOSCALER_METRIC_PORT": str(side["autoscaler-metrics"]),
           "DASHBOARD_METRIC_PORT": str(side["dashboard-metrics"])}
    prepare = None
    if local_ingress.uses_haproxy(settings):
        hap_ports = local_ingress.side_ports(settings)
        side, env = {**side, **hap_ports}, {**env, **local_ingress.head_env(settings, hap_ports)}
        prepare = partial(local_ingress.write_launcher, settings)
    return ServiceSpec(
        name="ray", argv=argv,
        ports={"gcs": (settings.ray_port, "ray_port"),
               "dashboard": (settings.ray_dashboard_port, "ray_dashboard_port"),
               "metrics": (settings.ray_metrics_port, "ray_metrics_port"),
               "client": (settings.ray_client_port, "ray_client_port")},
        url=settings.ray_dashboard_url,
        # /api/version is not public under token auth: a 200 also proves our token is the cluster's.
        ready_url=f"{settings.ray_dashboard_url}/api/version",
        ready_headers=ray_auth_headers(settings) if ray_token_path(settings).exists() else {},
        env=env, side_ports=side, leader_first=True, grace_s=40.0, prepare=prepare,
    )


def mlflow_spec(settings: Settings) -> ServiceSpec:
    root = settings.state_dir / "mlflow"
    port, host = settings.mlflow_port, settings.host
    argv = [find_binary(*BINARIES["mlflow"]), "server",
            "--backend-store-uri", f"sqlite:///{(root / 'mlflow.db').resolve()}",
            "--serve-artifacts", "--artifacts-destination", str((root / "artifacts").resolve()),
            "--host", host, "--port", str(port), "--workers", "1",
            # Only the loopback names; the defaults would also accept every private-network Host header.
            "--allowed-hosts", f"{host}:{port},localhost:{port},{host},localhost",
            "--cors-allowed-origins", f"http://{host}:{port},http://localhost:{port}"]
    return ServiceSpec(
        name="mlflow", argv=argv, ports={"http": (port, "mlflow_port")},
        url=f"http://{host}:{port}", ready_url=f"http://{host}:{port}/health",
        # ferry uses no server-side MLflow jobs; they would start seven huey consumers on a laptop.
        env={"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        prepare=lambda: (root / "artifacts").mkdir(parents=True, exist_ok=True),
    )


# --- Redis (the online feature state) -----------------------------------------------------------------



def redis_config(settings: Settings, password: str) -> str:
    """Loopback only, a password, and an append-only file (fsync every second: a crash loses at most the last
    second of state; a clean stop loses nothing), so state survives a restart of the store and of `ferry up`.
    The password is in this 0600 file, not on the command line where any local user's `ps` would see it."""
    root = (settings.state_dir / "redis").resolve()
    return "\n".join([
        "# Generated by `ferry up`; regenerated on every start. Do not edit.",
        f"bind {settings.host}", f"port {settings.redis_port}", "protected-mode yes",
        f'requirepass "{password}"', f'dir "{root}"', "appendonly yes", "appendfsync everysec", 'save ""',
        "daemonize no", 'logfile ""',
    ]) + "\n"


def redis_spec(settings: Settings) -> ServiceSpec:
    binary = find_binary(*BINARIES["redis"])
    config = settings.state_dir / "redis" / "redis.conf"
    port, host = settings.redis_port, settings.host

    def prepare() -> None:
        password = ensure_secret_file(settings.redis_password_file)  # clients read it from this file
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(redis_config(settings, password))

    return ServiceSpec(name="redis", argv=[binary, str(config.resolve())], ports={"redis": (port, "redis_port")},
                       url=f"redis://{host}:{port}", ready_url=f"redis://{host}:{port}", prepare=prepare)


def prometheus_config(settings: Settings, with_alertmanager: bool) -> str:
    """Scrape Ray through the file Ray keeps up to date, and evaluate ferry's rules (monitoring/ in the checkout).

    refresh_interval makes Prometheus re-read the file: it is a symlink into the current Ray session,
    and a restarted head changes the target without touching the link Prometheus watches. Every local Ray
    target is on the head node, labelled so like the cluster's PodMonitor labels its head pods, so the
    same rules (FerryRayHeadDown) work in both places.
    """
    home = settings.home.resolve()
    lines = [
        "# Generated by `ferry up`; regenerated on every start. Do not edit.",
        "global:", "  scrape_interval: 10s", "  evaluation_interval: 10s",
        # Per-model rules rendered from gitops/models and the platform rules (`ferry generate`).
        "rule_files:", *(f"- '{home / pattern}'" for pattern in alerts.RULE_FILE_GLOBS),
        "scrape_configs:",
        f"- job_name: {metrics.JOB_RAY}", "  file_sd_configs:", f"  - files: ['{ray_sd_file(settings)}']",
        "    refresh_interval: 30s",
        "  relabel_configs:", f"  - target_label: {metrics.TARGET_NODE_TYPE}", "    replacement: head",
        "- job_name: prometheus", "  static_configs:",
        f"  - targets: ['{settings.host}:{settings.prometheus_port}']",
        # The rollout step exports its checks and decisions here while a canary runs.
        f"- job_name: {metrics.JOB_ROLLOUT}", "  static_configs:",
        f"  - targets: ['{settings.host}:{settings.rollout_metrics_port}']",
        # ferry's webhook receiver: pipeline-run counts and its own counters (ferry.contract.metrics.LOCAL).
        f"- job_name: {metrics.JOB_RECEIVER}", "  static_configs:",
        f"  - targets: ['{settings.host}:{settings.receiver_port}']",
    ]
    if with_alertmanager:
        lines += ["alerting:", "  alertmanagers:", "  - static_configs:",
                  f"    - targets: ['{settings.host}:{settings.alertmanager_port}']"]
    return "\n".join(lines) + "\n"


def prometheus_spec(settings: Settings, with_alertmanager: bool) -> ServiceSpec:
    binary = find_binary(*BINARIES["prometheus"])
    root = settings.state_dir / "prometheus"
    port, host = settings.prometheus_port, settings.host

    def prepare() -> None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "prometheus.yml").write_text(prometheus_config(settings, with_alertmanager))

    argv = [binary, f"--config.file={root / 'prometheus.yml'}", f"--storage.tsdb.path={root / 'data'}",
            f"--web.listen-address={host}:{port}", "--web.enable-lifecycle"]
    return ServiceSpec(name="prometheus", argv=argv, ports={"http": (port, "prometheus_port")},
                       url=f"http://{host}:{port}", ready_url=f"http://{host}:{port}/-/ready",
                       prepare=prepare)


def alertmanager_config(settings: Settings) -> str:
    """ferry's routing tree (ferry.render.alerting), every route to ferry's webhook receiver on loopback."""
    url = alerting.local_receiver_url(settings.host, settings.receiver_port)
    header = "# Generated by `ferry up`; regenerated on every start. Do not edit (see monitoring/alertmanager).\n"
    return header + yaml.safe_dump(alerting.local_config(url), sort_keys=False)


def alertmanager_spec(settings: Settings) -> ServiceSpec:
    binary = find_binary(*BINARIES["alertmanager"])
    root = settings.state_dir / "alertmanager"
    port, host = settings.alertmanager_port, settings.host

    def prepare() -> None:
        (root / "data").mkdir(parents=True, exist_ok=True)
        (root / "alertmanager.yml").write_text(alertmanager_config(settings))

    argv = [binary, f"--config.file={root / 'alertmanager.yml'}", f"--storage.path={root / 'data'}",
            f"--web.listen-address={host}:{port}",
            "--cluster.listen-address="]  # empty: no HA gossip, which would listen on 0.0.0.0:9094
    return ServiceSpec(name="alertmanager", argv=argv, ports={"http": (port, "alertmanager_port")},
                       url=f"http://{host}:{port}", ready_url=f"http://{host}:{port}/-/ready",
                       prepare=prepare)


def receiver_spec(settings: Settings) -> ServiceSpec:
    """ferry's Alertmanager webhook receiver (ferry.local.alerts.receiver), this interpreter, loopback."""
    port, host = settings.receiver_port, settings.host
    return ServiceSpec(name="receiver", argv=[sys.executable, "-m", "ferry.local.alerts.receiver"],
                       ports={"http": (port, "receiver_port")}, url=f"http://{host}:{port}",
                       ready_url=f"http://{host}:{port}/-/ready", grace_s=10.0,
                       prepare=lambda: (settings.state_dir / "alerts").mkdir(parents=True, exist_ok=True))


def build_spec(name: str, settings: Settings, included: tuple[str, ...]) -> ServiceSpec:
    """The spec of one service; raises MissingBinary when it is not installed."""
    if name == "ray":
        return ray_spec(settings)
    if name == "mlflow":
        return mlflow_spec(settings)
    if name == "redis":
        return redis_spec(settings)
    if name == "prometheus":
        with_am = "alertmanager" in included and installed("alertmanager")
        return prometheus_spec(settings, with_am)
    if name == "alertmanager":
        return alertmanager_spec(settings)
    if name == "receiver":
        return receiver_spec(settings)
    raise LocalError(f"unknown service {name!r}; known: {', '.join(SERVICES)}")


def installed(service: str) -> bool:
    try:
        find_binary(*BINARIES[service])
    except MissingBinary:
        return False
    return True
