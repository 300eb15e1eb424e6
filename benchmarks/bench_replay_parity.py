"""Parity through the endpoint (#14): the handbook's test week replayed through a served model, its features
and scores read back from the prediction log and compared with the offline computation.

Not a test: it prints its figures and writes docs/benchmarks/replay-parity.md. Everything runs on loopback in
a temporary home: a Ray head, an MLflow server and Redis (`start_services`), the champion and challenger of
bench_serving (50/50), ferry's router deployed with `deploy_local` as `ferry up` deploys it. The default
simulator (5,000 cards, 10,000 terminals, 183 days) is replayed with `ferry replay`'s sender
(`ferry.serving.replay.replay`) from REPLAY_FROM to the end of the test week: raw payments to
`/predict/batch` in event-time order, each label to `/labels` once the 7-day delay has passed in event time.
Then every test-week row of the log is compared with `add_features` over the whole simulated history, and
every logged score with batch scoring of the offline features by the version that served the row.

    .venv/bin/python benchmarks/bench_replay_parity.py       # about 4 minutes
"""

from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before anything imports ray: stay on 127.0.0.1

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_serving import Children, register, tear_down

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
SPEC_FILE = ROOT / "gitops/models/fraud-detector-lite.yaml"
PORTS = ("mlflow_port", "ray_port", "ray_dashboard_port", "ray_metrics_port", "ray_client_port", "serve_port",
         "redis_port")
REPLAY_FROM = "2018-06-25"  # 44 days before the test week: more than delay + the longest window
TEST_WEEK = ("2018-08-08", "2018-08-15")
DELAY_DAYS = 7
RELATIVE = 1e-6


def replay_history(url: str, frame: Any, log: Any) -> Any:
    from ferry.serving.replay import ReplayLimits, history_stream, replay
    from fraud_detection.workload import FraudDetectionWorkload

    window = frame[(frame["tx_datetime"] >= REPLAY_FROM) & (frame["tx_datetime"] < TEST_WEEK[1])]
    requests, labels = FraudDetectionWorkload().raw_history(window)
    limits = ReplayLimits(batch_rows=256, rate_per_s=1e6, limit=len(window), timeout_s=1800)
    report = replay(url, history_stream(requests, labels, "tx_datetime"), DELAY_DAYS, limits)
    log(f"replayed {report.sent:,} payments ({report.scored:,} scored) and {report.labels_sent:,} labels in "
        f"{report.elapsed_s:.0f} s; failed: {dict(report.failed) or 'none'}")
    if report.failed or report.scored != len(window):
        raise SystemExit(f"the replay did not score every payment: {report}")
    return report


def logged_week(settings: Any, model: str, expected: int, log: Any) -> Any:
    """The test week's rows of the prediction log, once all of them are there (the log flushes every second)."""
    from ferry.contract import names
    from ferry.serving.prediction_log import read_log

    deadline = time.monotonic() + 120
    while True:
        table = read_log(settings.prediction_log_uri, names.LOG_PREDICTIONS, model).flatten().to_pandas()
        week = table[(table["event_time"] >= TEST_WEEK[0]) & (table["event_time"] < TEST_WEEK[1])]
        if len(week) >= expected or time.monotonic() > deadline:
            log(f"read {len(table):,} logged rows, {len(week):,} of the test week")
            return week.set_index("transaction_id")
        time.sleep(1)


def compare(settings: Any, model: str, frame: Any, week: Any) -> dict[str, Any]:
    from ferry.adapters.registry import Registry
    from ferry.serving.service import run_model
    from fraud_detection.features import FEATURE_NAMES, add_features

    offline_frame = add_features(frame, delay_days=DELAY_DAYS)
    in_week = (offline_frame["tx_datetime"] >= TEST_WEEK[0]) & (offline_frame["tx_datetime"] < TEST_WEEK[1])
    offline_frame = offline_frame[in_week]
    online = week.loc[offline_frame["transaction_id"].astype(str)]
    offline = offline_frame[list(FEATURE_NAMES)].to_numpy(np.float64)
    served = online[[f"features.{name}" for name in FEATURE_NAMES]].to_numpy(np.float64)
    difference = np.abs(served - offline)
    beyond = difference > RELATIVE * np.maximum(np.abs(offline), 1.0)
    registry, score_gap = Registry(settings.mlflow_uri), 0.0
    for version in sorted(set(online["version"])):
        rows = (online["version"] == version).to_numpy()
        batch = run_model(registry.load_pytorch_version(model, version), offline[rows].astype(np.float32))
        score_gap = max(score_gap, float(np.abs(online["score"].to_numpy()[rows] - batch).max()))
    return {"rows": len(offline), "max_abs": float(difference.max()), "beyond": int(beyond.sum()),
            "score_gap": score_gap, "versions": sorted(set(online["version"])),
            "repeated": int(online["repeated"].sum())}


def report(result: dict[str, Any], replayed: Any, seconds: float) -> str:
    r = result
    return "\n".join([
        "# Parity through the endpoint: the test week replayed as raw payments",
        "",
        f"Written by `benchmarks/bench_replay_parity.py` ({seconds:.0f} s on a {os.cpu_count()}-CPU machine). The "
        f"default simulator (5,000 cards, 10,000 terminals, 183 days) was replayed through ferry's router from "
        f"{REPLAY_FROM} to the end of the handbook's test week with `ferry replay`'s sender: {replayed.sent:,} raw "
        f"payments to `/predict/batch` in event-time order, batches of 256, and {replayed.labels_sent:,} labels to "
        f"`/labels`, each once the {DELAY_DAYS}-day delay had passed in event time. The features and scores were "
        "read back from the prediction log.",
        "",
        "| | measured | target |",
        "|---|---:|---|",
        f"| test week {TEST_WEEK[0]}..14: rows compared with `add_features` | {r['rows']:,} | all |",
        f"| max abs difference, 15 features | {r['max_abs']:.3g} | |",
        f"| values beyond 1e-6 relative | {r['beyond']} | 0 |",
        f"| max abs difference of the logged score from batch scoring of the offline features "
        f"(versions {', '.join(r['versions'])}) | {r['score_gap']:.3g} | float32 rounding |",
        f"| rows logged as repeats | {r['repeated']} | 0 |",
        "",
        "Relative difference: |online − offline| ÷ max(|offline|, 1). Both sides are float32; the amounts' "
        "averages differ in their last bits.",
    ])


def main() -> None:
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    from ferry.local.supervisor import procs
    from ferry.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="ferry-bench-parity-"))
    settings = Settings(home=home, ray_cpus=2, ready_timeout_s=120,
                        **{f: procs.free_port() for f in PORTS})  # type: ignore[arg-type]
    children = Children(home)
    try:
        text = run(settings, log, started)
    finally:
        tear_down(settings, children, [home], log)
    print(text)
    from tests.support.generated_docs import entry_for, write_section

    write_section(entry_for("docs/benchmarks/replay-parity.md"), text)


def run(settings: Any, log: Any, started: float) -> str:
    from ferry.local.supervisor.services import start_services, use_ray_client_env
    from ferry.serving.deploy import deploy_local
    from ferry.spec import load_specs
    from fraud_detection.simulator import SimulatorParams, simulate

    start_services(settings, include=["ray", "mlflow", "redis"])
    log("Ray head, MLflow and Redis started")
    spec = load_specs([SPEC_FILE])[0][0].model
    register(settings, spec)
    use_ray_client_env(settings)
    url = deploy_local(settings, spec, timeout_s=240)
    log(f"ferry router ready at {url}")
    frame = simulate(SimulatorParams())
    replayed = replay_history(url, frame, log)
    in_week = int(((frame["tx_datetime"] >= TEST_WEEK[0]) & (frame["tx_datetime"] < TEST_WEEK[1])).sum())
    week = logged_week(settings, spec.name, in_week, log)
    result = compare(settings, spec.name, frame, week)
    log(f"compared: {result}")
    return report(result, replayed, time.monotonic() - started)


if __name__ == "__main__":
    main()
