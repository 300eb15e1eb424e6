"""The local head's HAProxy mode (FERRY_LOCAL_INGRESS=haproxy, the default): the Ray head's environment, the
launcher Ray runs as HAProxy, and the rewrite that keeps HAProxy's binds on loopback and closes its replica
connections. The served path itself is measured by benchmarks/bench_serving.py --ray-high-throughput, which lists
every listener off loopback."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from ferry.local.supervisor import haproxy_loopback, local_ingress, service_defs
from ferry.render.rayservice import HIGH_THROUGHPUT_ENV
from ferry.serving import haproxy_launch
from ferry.settings import Settings, load_settings

# The bind lines of Ray 2.60's HAProxy template (ray/serve/_private/haproxy_templates.py), rendered.
RAY_CONFIG = """global
    stats socket /tmp/ferry-hap-0123456789/node/admin.sock mode 666 level admin expose-fd listeners
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind 127.0.0.1:8000
    mode http
listen stats
  bind *:8404
  stats enable
"""


def test_all_interface_binds_move_to_loopback_and_the_rest_is_kept() -> None:
    rewritten = haproxy_loopback.loopback_binds(RAY_CONFIG, "127.0.0.1")
    assert "    bind 127.0.0.1:9101\n" in rewritten and "  bind 127.0.0.1:8404\n" in rewritten
    assert "    bind 127.0.0.1:8000\n" in rewritten
    assert rewritten.replace("127.0.0.1:9101", ":9101").replace("  bind 127.0.0.1:8404", "  bind *:8404") == RAY_CONFIG


def test_a_bind_options_survive_the_rewrite() -> None:
    assert haproxy_loopback.loopback_binds("  bind *:8404 ssl crt x.pem\n", "127.0.0.1") == \
        "  bind 127.0.0.1:8404 ssl crt x.pem\n"


@pytest.mark.parametrize("bind", ["bind 0.0.0.0:9101", "bind [::]:9101", "bind 10.0.0.7:80", "bind localhost:1"])
def test_a_bind_beyond_loopback_that_the_rewrite_does_not_know_is_refused(bind: str) -> None:
    with pytest.raises(haproxy_loopback.BindOffLoopback, match=r"beyond 127\.0\.0\.1"):
        haproxy_loopback.loopback_binds(f"frontend x\n    {bind}\n", "127.0.0.1")


def launch(tmp_path: Path, config_text: str, real_body: str,
           *args: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """The local launcher on a config holding `config_text`, with a shell script of `real_body` as the real
    HAProxy, and HAProxy's arguments `args` (`{config}` stands for the config's path)."""
    config = tmp_path / "haproxy.cfg"
    config.write_text(config_text)
    real = tmp_path / "real-haproxy"
    real.write_text(f"#!/bin/sh\n{real_body}\n")
    real.chmod(0o700)
    done = subprocess.run([sys.executable, "-m", "ferry.local.supervisor.haproxy_loopback", str(real), "127.0.0.1",
                           *(arg.format(config=config) for arg in args)], capture_output=True, text=True, check=False)
    return config, done


def test_the_launcher_rewrites_the_file_then_runs_the_real_binary_with_the_same_arguments(tmp_path: Path) -> None:
    config, done = launch(tmp_path, RAY_CONFIG, 'echo "$@"', "-db", "-f", "{config}", "-dR")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["-db", "-f", str(config), "-dR"]
    assert "bind 127.0.0.1:9101" in config.read_text() and "*:8404" not in config.read_text()
    assert haproxy_launch.SERVER_CLOSE not in RAY_CONFIG  # it has no defaults section: nothing to add to


def test_the_launcher_refuses_to_start_haproxy_that_would_listen_beyond_loopback(tmp_path: Path) -> None:
    _, done = launch(tmp_path, "frontend x\n    bind 0.0.0.0:9101\n", "echo started", "-f", "{config}")
    assert done.returncode == 1 and "started" not in done.stdout
    assert "not starting HAProxy" in done.stderr and "0.0.0.0:9101" in done.stderr


def test_by_default_the_head_runs_haproxy_and_python_keeps_rays_proxy(tmp_path: Path) -> None:
    assert Settings(home=tmp_path).local_ingress == "haproxy"
    spec = service_defs.ray_spec(Settings(home=tmp_path, local_ingress="python"))
    assert not set(spec.env) & {*HIGH_THROUGHPUT_ENV, "RAY_SERVE_HAPROXY_BINARY_PATH"}
    assert spec.prepare is None


def test_the_local_launcher_also_closes_haproxys_replica_connections(tmp_path: Path) -> None:
    config, done = launch(tmp_path, "defaults\n    mode http\nlisten stats\n  bind *:8404\n", "true", "-f", "{config}")
    assert done.returncode == 0, done.stderr
    expected = f"defaults\n{haproxy_launch.SERVER_CLOSE}    mode http\nlisten stats\n  bind 127.0.0.1:8404\n"
    assert config.read_text() == expected


def test_haproxy_mode_sets_rays_high_throughput_env_with_free_loopback_ports_and_a_launcher(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, local_ingress="haproxy")
    spec = service_defs.ray_spec(settings)
    assert {key: spec.env[key] for key in HIGH_THROUGHPUT_ENV} == HIGH_THROUGHPUT_ENV
    stats, exporter = int(spec.env["RAY_SERVE_HAPROXY_STATS_PORT"]), int(spec.env["RAY_SERVE_HAPROXY_METRICS_PORT"])
    assert {stats, exporter} <= set(spec.side_ports.values()) and {stats, exporter}.isdisjoint({8404, 9101})
    # Serve's backup proxy too: on Ray's fixed 8500/9500, a second head's HAProxy fell back to the first head's.
    fallback = {int(spec.env[f"RAY_SERVE_FALLBACK_PROXY_{kind}_PORT"]) for kind in ("HTTP", "GRPC")}
    other = service_defs.ray_spec(Settings(home=tmp_path / "other", local_ingress="haproxy"))
    assert fallback <= set(spec.side_ports.values()) and fallback.isdisjoint({8500, 9500})
    assert fallback.isdisjoint(other.side_ports.values())
    folder = local_ingress.haproxy_dir(settings)
    # Ray adds a 56-character node id folder; HAProxy takes unix socket paths of at most 97 characters.
    assert len(str(folder / ("n" * 56) / "metrics.sock")) <= 97
    assert spec.env["RAY_SERVE_HAPROXY_SOCKET_PATH"] == str(folder / "admin.sock")
    assert spec.prepare is not None
    try:
        spec.prepare()
        launcher = Path(spec.env["RAY_SERVE_HAPROXY_BINARY_PATH"])
        assert launcher.parent == folder and os.access(launcher, os.X_OK)
        assert stat.S_IMODE(launcher.stat().st_mode) == 0o700
        text = launcher.read_text()
        assert "-m ferry.local.supervisor.haproxy_loopback" in text and text.rstrip().endswith('127.0.0.1 "$@"')
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_ingress_is_a_ferry_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_LOCAL_INGRESS", "python")
    assert load_settings().local_ingress == "python"


def test_a_head_running_with_the_other_ingress_is_not_adopted_silently(tmp_path: Path) -> None:
    """Ray reads its ingress when the head starts: asking for HAProxy of a head started with the Python proxy
    (or back) must say so, not serve through the old one."""
    from ferry.local.errors import LocalError
    from ferry.local.supervisor import services

    running = service_defs.ray_spec(Settings(home=tmp_path, local_ingress="python"))
    record = {"pid": 1, "ready_url": running.ready_url,
              "ports": {**{role: port for role, (port, _) in running.ports.items()}, **running.side_ports}}
    wanted = service_defs.ray_spec(Settings(home=tmp_path, local_ingress="haproxy"))
    with pytest.raises(LocalError, match=r"FERRY_LOCAL_INGRESS=haproxy.*ferry down"):
        services._adopt(wanted, record, Settings(home=tmp_path, local_ingress="haproxy"), timeout_s=1)


def test_a_head_an_older_ferry_started_without_its_own_backup_proxy_port_is_not_adopted_silently(
        tmp_path: Path) -> None:
    """A head started before Serve's backup proxy had a port of its own still falls back to Ray's shared 8500."""
    from ferry.local.errors import LocalError
    from ferry.local.supervisor import services

    settings = Settings(home=tmp_path, local_ingress="haproxy")
    wanted = service_defs.ray_spec(settings)
    older = {role: port for role, port in wanted.side_ports.items() if not role.startswith("serve-fallback")}
    record = {"pid": 1, "ready_url": wanted.ready_url,
              "ports": {**{role: port for role, (port, _) in wanted.ports.items()}, **older}}
    with pytest.raises(LocalError, match=r"older ferry.*ferry down"):
        services._adopt(wanted, record, settings, timeout_s=1)
