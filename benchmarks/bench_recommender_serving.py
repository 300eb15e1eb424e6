"""Benchmark (#16): the recommender served by ferry's router against the same registered program in-process.

Not a test: it prints figures and writes docs/benchmarks/recommender-serving.md. Everything runs on loopback in a
temporary home: a Ray head and an MLflow server (`start_services`), one recommender version trained here on
MovieLens 100K with the committed spec's params (a few epochs: the answers' quality is not measured here, their
cost is, and that depends on the catalogue and the model's size, not on how well it was trained) and registered
the way `ferry step register` does it (the workload's `scoring_module`, a pt2 program with a tuple signature),
then served with `deploy_local` as `ferry up` serves it.

- ferry        wrk against `POST /recommender/recommend` (one user, k=10) and `/recommend/batch` (--batch-rows
               users, k=10), one connection, a pool of known users (a few unknown ones among them: fallback).
- in-process   the same program loaded from the registry as the router loads it, called in this process on one
               torch thread (as a replica runs) on the same requests, with the workload's `answers` building the
               same response lists: the floor without HTTP, Serve's proxy or JSON.

Each cell is run --rounds times, alternating the two systems; histograms are merged. No target is stated in the
issue; the ratios show what serving over HTTP costs on top of ranking itself.

    .venv/bin/python benchmarks/bench_recommender_serving.py            # about 3 minutes
    .venv/bin/python benchmarks/bench_recommender_serving.py --quick    # smoke run, about 2 minutes, no doc
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports ray: stay on 127.0.0.1

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench_serving import Children, tear_down
from serving_load import Sample, run_wrk, wrk_script

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
SPEC_FILE = ROOT / "gitops/models/recommender.yaml"
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port")
MODES = ("single", "batch")
POOL = {"single": 64, "batch": 8}  # distinct request bodies per mode
TRAIN_EPOCHS = 3
UNKNOWN_EVERY = 16  # one request in 16 is for a user the model does not know (the fallback path)
FULL = {"seconds": 10, "rounds": 3, "warmup": 3}
QUICK = {"seconds": 3, "rounds": 1, "warmup": 1}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}, writes no doc")
    parser.add_argument("--batch-rows", type=int, default=256)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        setattr(args, key, value)
    return args


def train_and_register(settings: Any, spec: Any) -> tuple[str, dict[str, Any]]:
    """One version of the committed spec's model, registered as `ferry step register` registers it."""
    import mlflow
    import mlflow.pytorch
    import torch

    from ferry.adapters.registry import Registry
    from ferry.contract import names
    from ferry.steps.register import example_outputs, model_signature
    from recommender.model import build_model, train_epoch
    from recommender.params import TrainingParams
    from recommender.workload import RecommenderWorkload

    workload = RecommenderWorkload()
    data = spec.spec.data
    prepared = workload.prepare(workload.load_data(data, ROOT), data)
    params = TrainingParams.from_values(spec.spec.training.params)
    torch.manual_seed(0)
    model = build_model(len(prepared["item_ids"]), params)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    for _ in range(TRAIN_EPOCHS):
        train_epoch(model, optimizer, torch.as_tensor(prepared["x_train"]), spec.spec.training.batch_size,
                    torch.Generator().manual_seed(0))
    scorer = workload.scoring_module(model.eval(), prepared)
    example = workload.input_example(prepared)
    mlflow.set_tracking_uri(settings.mlflow_uri)
    Registry(settings.mlflow_uri).ensure_registered_model(spec.name, "bench")
    with mlflow.start_run():
        info = mlflow.pytorch.log_model(scorer, name="model", input_example=example,
                                        signature=model_signature(example, example_outputs(scorer, example)),
                                        pip_requirements=["torch"], serialization_format="pt2")
    version = str(mlflow.register_model(info.model_uri, names.registered_model_name(spec.name),
                                        tags={names.TAG_ROLLOUT_WEIGHT: "0"}).version)
    Registry(settings.mlflow_uri).set_alias(spec.name, names.ALIAS_CHAMPION, version)
    return version, {"users": len(prepared["user_ids"]), "items": len(prepared["item_ids"]), "dim": params.dim}


def request_pools(users: int, batch_rows: int) -> dict[str, list[list[dict[str, Any]]]]:
    """Per mode, POOL[mode] request lists (one request each for single); ML-100K user ids run 1..943."""
    def request(i: int) -> dict[str, Any]:
        user = 10**6 + i if i % UNKNOWN_EVERY == 0 else 1 + (i * 37) % users
        return {"user_id": user, "k": 10, "exclude_seen": True}

    return {"single": [[request(i)] for i in range(POOL["single"])],
            "batch": [[request(b * batch_rows + j) for j in range(batch_rows)] for b in range(POOL["batch"])]}


def measure_http(url: str, pools: dict[str, list[list[dict[str, Any]]]], work: Path, args: argparse.Namespace,
                 seconds: int) -> dict[str, Sample]:
    results = {}
    for mode in MODES:
        bodies = [json.dumps(p[0] if mode == "single" else p) for p in pools[mode]]
        script = wrk_script(work / f"ferry-{mode}.lua", bodies)
        path = "/recommend" if mode == "single" else "/recommend/batch"
        results[mode] = run_wrk(f"{url}{path}", script, 1, seconds)
    return results


def measure_inprocess(module: Any, pools: dict[str, list[list[dict[str, Any]]]], seconds: float) -> dict[str, Sample]:
    """The registered program and the workload's answers, called back to back for `seconds` per mode."""
    from ferry.serving.ranking import run_ranking
    from recommender.workload import RecommenderWorkload, RecommendRequest

    workload = RecommenderWorkload()
    results = {}
    for mode in MODES:
        requests = [[RecommendRequest.model_validate(r) for r in pool] for pool in pools[mode]]
        hist: Counter[int] = Counter()
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds and calls < 1_000_000:
            rows = requests[calls % len(requests)]
            t0 = time.perf_counter()
            workload.answers(run_ranking(module, workload, rows), rows)
            hist[int((time.perf_counter() - t0) * 1e6)] += 1
            calls += 1
        results[mode] = Sample(calls, time.perf_counter() - started, hist, 0)
    return results


def check_answers(url: str, module: Any, pools: dict[str, list[list[dict[str, Any]]]]) -> None:
    """The router and the in-process call agree on the items of a whole batch before anything is timed."""
    import httpx

    from ferry.serving.ranking import run_ranking
    from recommender.workload import RecommenderWorkload, RecommendRequest

    workload = RecommenderWorkload()
    batch = pools["batch"][0]
    served = httpx.post(f"{url}/recommend/batch", json=batch, timeout=60, trust_env=False)
    served.raise_for_status()
    rows = [RecommendRequest.model_validate(r) for r in batch]
    local, _ = workload.answers(run_ranking(module, workload, rows), rows)
    got = [[item["item_id"] for item in a["items"]] for a in served.json()["answers"]]
    want = [[item["item_id"] for item in a["items"]] for a in local]
    if got != want:
        raise RuntimeError("the router's recommendations differ from the registered program's in-process")


def rows_per_s(sample: Sample, rows: int) -> float:
    return sample.rate * rows


def report(results: dict[str, dict[str, Sample]], args: argparse.Namespace, meta: dict[str, Any]) -> str:
    import ray
    import torch

    rows = {"single": 1, "batch": args.batch_rows}
    lines = ["| system | single user (k=10): p50 ms | p99 ms | requests/s | batch of "
             f"{args.batch_rows} users: p50 ms | users/s |", "| --- | --- | --- | --- | --- | --- |"]
    for system in ("in-process", "ferry"):
        single, batch = results[system]["single"], results[system]["batch"]
        lines.append(f"| {'in-process (no HTTP)' if system == 'in-process' else 'ferry router'} | "
                     f"{single.pct_ms(50):.2f} | {single.pct_ms(99):.2f} | {single.rate:,.0f} | "
                     f"{batch.pct_ms(50):.1f} | {rows_per_s(batch, rows['batch']):,.0f} |")
    inp, fer = results["in-process"], results["ferry"]
    p50_ratio = fer["single"].pct_ms(50) / inp["single"].pct_ms(50)
    batch_ratio = rows_per_s(fer["batch"], rows["batch"]) / rows_per_s(inp["batch"], rows["batch"])
    errors = sum(s.errors for s in fer.values())
    return "\n".join([
        f"Run on {time.strftime('%Y-%m-%d')} by `python benchmarks/bench_recommender_serving.py` (whole run "
        f"{meta['wall_s']:.0f} s). Machine: {meta['cpu']}, {os.cpu_count()} cores; load average before "
        f"{meta['load_before']}; Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}.",
        "",
        f"Model: the committed spec's (dim {meta['dim']}) over {meta['users']} users and {meta['items']} items, "
        f"trained {TRAIN_EPOCHS} epochs here and registered as `ferry step register` does; one replica, "
        f"{meta['cpus']} CPU, one torch thread. Requests: k=10, exclude_seen, one user in {UNKNOWN_EVERY} unknown "
        f"(popularity fallback). wrk, one connection, {args.rounds} × {args.seconds} s per cell; in-process: the "
        f"same program and `answers` called back to back, {args.rounds} × {args.seconds} s.",
        "",
        *lines,
        "",
        f"ferry's single-user p50 is {p50_ratio:.1f}× the in-process call's; its batch throughput "
        f"{batch_ratio:.0%} of in-process. {errors} errors over "
        f"{sum(s.requests for s in fer.values()):,} HTTP requests. The router and the in-process call returned "
        "the same items for a whole batch before timing.",
    ])


def main() -> None:
    args = parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench_recommender_serving needs wrk: apt-get install -y wrk")
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    from ferry.local.supervisor import procs
    from ferry.settings import Settings

    meta: dict[str, Any] = {"load_before": ", ".join(f"{v:.2f}" for v in os.getloadavg()), "cpu": cpu_model()}
    home = Path(tempfile.mkdtemp(prefix="ferry-bench-recommender-serving-"))
    work = home / "bench"
    work.mkdir()
    settings = Settings(home=home, ray_cpus=2, ready_timeout_s=120,
                        **{f: procs.free_port() for f in PORTS})  # type: ignore[arg-type]
    children = Children(work)
    try:
        text = run(args, settings, work, log, meta, started)
    finally:
        tear_down(settings, children, [home], log)
    print(text)
    if not args.quick:
        from tests.support.generated_docs import entry_for, write_section

        write_section(entry_for("docs/benchmarks/recommender-serving.md"), text)
        log("wrote docs/benchmarks/recommender-serving.md")


def run(args: argparse.Namespace, settings: Any, work: Path, log: Any, meta: dict[str, Any],
        started: float) -> str:
    import torch

    from ferry.adapters.registry import Registry
    from ferry.local.supervisor.services import start_services, use_ray_client_env
    from ferry.serving.deploy import deploy_local
    from ferry.spec import load_specs

    start_services(settings, include=["ray", "mlflow"])
    spec = load_specs([SPEC_FILE])[0][0].model
    version, sizes = train_and_register(settings, spec)
    log(f"registered version {version}")
    use_ray_client_env(settings)
    url = deploy_local(settings, spec, timeout_s=240)
    log("router ready")
    torch.set_num_threads(1)
    module = Registry(settings.mlflow_uri).load_pytorch_version(spec.name, version)
    pools = request_pools(sizes["users"], args.batch_rows)
    check_answers(url, module, pools)
    measure_http(url, pools, work, args, args.warmup)
    measure_inprocess(module, pools, args.warmup)
    results: dict[str, dict[str, Sample]] = {"in-process": {m: Sample() for m in MODES},
                                             "ferry": {m: Sample() for m in MODES}}
    for round_no in range(args.rounds):
        order = ("in-process", "ferry") if round_no % 2 == 0 else ("ferry", "in-process")
        for system in order:
            got = measure_inprocess(module, pools, args.seconds) if system == "in-process" else \
                measure_http(url, pools, work, args, args.seconds)
            for mode in MODES:
                results[system][mode].add(got[mode])
        log(f"round {round_no + 1}/{args.rounds} done")
    meta.update(sizes, wall_s=time.monotonic() - started, cpus=min(spec.spec.serving.cpus_per_replica, 1))
    return report(results, args, meta)


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
