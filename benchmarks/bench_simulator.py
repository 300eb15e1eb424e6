"""Benchmark of the fraud_detection simulator and features.

Measures, in one run:

1. ferry's ``simulate`` + ``add_features`` at the default parameters (~1.78 M
   transactions), each repeat in a fresh subprocess so that its peak RSS
   (``ru_maxrss`` of the child) is measured alone;
2. the handbook-style pandas implementation (Python loop per customer to
   generate, ``groupby`` + ``rolling('Nd')`` per customer and terminal for the
   features, row-wise ``apply`` for the calendar flags) against ferry on a
   subset small enough for the baseline, on the same machine and in the same run.

Writes the results table to ``docs/benchmarks/simulator.md``.  Every loop is
bounded (fixed repeat counts).  Usage::

    python benchmarks/bench_simulator.py [--repeats 3] [--subset-customers 1000]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workloads" / "src"))

from fraud_detection.features import FEATURE_NAMES, add_features  # noqa: E402
from fraud_detection.simulator import SimulatorParams, simulate  # noqa: E402

OUTPUT = ROOT / "docs" / "benchmarks" / "simulator.md"
WALL_TARGET_S = 15.0
RSS_TARGET_MIB = 2048.0


# --------------------------------------------------------------------------- ferry


def run_ferry(params: SimulatorParams) -> dict[str, float]:
    """Time ferry's simulate and add_features once."""
    t0 = time.perf_counter()
    df = simulate(params)
    t1 = time.perf_counter()
    features = add_features(df)
    t2 = time.perf_counter()
    return {
        "simulate_s": t1 - t0,
        "features_s": t2 - t1,
        "total_s": t2 - t0,
        "transactions": float(len(features)),
        "fraud_share": float(features["tx_fraud"].mean()),
    }


def child_main() -> None:
    """Entry point of the measuring subprocess: one full-size run, JSON on stdout."""
    print(json.dumps(run_ferry(SimulatorParams())))


def full_size_runs(repeats: int) -> tuple[list[dict[str, float]], float]:
    """Run the default-size benchmark in ``repeats`` subprocesses.

    ``RUSAGE_CHILDREN`` reports the largest peak RSS among the waited-for
    children; no other child has been started before, so it is this run's.
    """
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, __file__, "--child"], check=True, capture_output=True, text=True, timeout=600
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    return runs, peak_mib


# ------------------------------------------------------------- handbook baseline


def handbook_simulate(params: SimulatorParams) -> pd.DataFrame:
    """The handbook's generator: Python loops per customer, day and transaction."""
    np.random.seed(params.seed)
    customers = pd.DataFrame(
        [
            [c, *np.random.uniform(0, 100, 2), m := np.random.uniform(5, 100), m / 2, np.random.uniform(0, 4)]
            for c in range(params.customers)
        ],
        columns=["customer_id", "x", "y", "mean_amount", "std_amount", "mean_nb_tx_per_day"],
    )
    np.random.seed(params.seed)
    terminals = np.random.uniform(0, 100, size=(params.terminals, 2))
    customers["available_terminals"] = customers.apply(
        lambda row: list(
            np.where(np.sqrt(((terminals - [row.x, row.y]) ** 2).sum(axis=1)) < params.radius)[0]
        ),
        axis=1,
    )
    parts = [_handbook_customer_transactions(row, params.days) for row in customers.itertuples()]
    tx = pd.DataFrame(
        [t for part in parts for t in part],
        columns=["tx_time_seconds", "tx_time_days", "customer_id", "terminal_id", "tx_amount"],
    )
    tx["tx_datetime"] = pd.to_datetime(tx["tx_time_seconds"], unit="s", origin=params.start_date)
    tx = tx.sort_values("tx_datetime").reset_index(drop=True)
    tx["transaction_id"] = tx.index
    return _handbook_frauds(tx, params)


def _handbook_customer_transactions(row: Any, days: int) -> list[list[float]]:
    random.seed(int(row.customer_id))
    np.random.seed(int(row.customer_id))
    out = []
    for day in range(days):
        for _ in range(np.random.poisson(row.mean_nb_tx_per_day)):
            t = int(np.random.normal(86400 / 2, 20000))
            if 0 < t < 86400:
                amount = np.random.normal(row.mean_amount, row.std_amount)
                if amount < 0:
                    amount = np.random.uniform(0, row.mean_amount * 2)
                if row.available_terminals:
                    terminal = random.choice(row.available_terminals)
                    out.append([t + day * 86400, day, row.customer_id, terminal, np.round(amount, 2)])
    return out


def _handbook_frauds(tx: pd.DataFrame, params: SimulatorParams) -> pd.DataFrame:
    tx["tx_fraud"], tx["tx_fraud_scenario"] = 0, 0
    tx.loc[tx.tx_amount > params.fraud_amount_threshold, ["tx_fraud", "tx_fraud_scenario"]] = [1, 1]
    terminal_ids, customer_ids = pd.Series(range(params.terminals)), pd.Series(range(params.customers))
    for day in range(tx.tx_time_days.max()):
        chosen = terminal_ids.sample(n=2, random_state=day)
        hit = tx[(tx.tx_time_days >= day) & (tx.tx_time_days < day + 28) & tx.terminal_id.isin(chosen)]
        tx.loc[hit.index, ["tx_fraud", "tx_fraud_scenario"]] = [1, 2]
    for day in range(tx.tx_time_days.max()):
        chosen = customer_ids.sample(n=3, random_state=day).values
        hit = tx[(tx.tx_time_days >= day) & (tx.tx_time_days < day + 14) & tx.customer_id.isin(chosen)]
        random.seed(day)
        index = random.sample(list(hit.index.values), k=int(len(hit) / 3))
        tx.loc[index, "tx_amount"] = tx.loc[index, "tx_amount"] * 5
        tx.loc[index, ["tx_fraud", "tx_fraud_scenario"]] = [1, 3]
    return tx


def handbook_features(df: pd.DataFrame, delay: int = 7) -> pd.DataFrame:
    """The handbook's feature code: row-wise apply and rolling per group."""
    df = df.copy()
    df["tx_during_weekend"] = df["tx_datetime"].apply(lambda t: int(t.weekday() >= 5))
    df["tx_during_night"] = df["tx_datetime"].apply(lambda t: int(t.hour <= 6))
    df = pd.concat([_handbook_customer(g) for _, g in df.groupby("customer_id")])
    df = pd.concat([_handbook_terminal(g, delay) for _, g in df.groupby("terminal_id")])
    return df.sort_values("transaction_id").reset_index(drop=True)


def _handbook_customer(g: pd.DataFrame) -> pd.DataFrame:
    g = g.sort_values("tx_datetime", kind="stable")  # handbook: unstable; ties differ
    amount = pd.Series(g["tx_amount"].to_numpy(), index=g["tx_datetime"])
    for n in (1, 7, 30):
        total, count = amount.rolling(f"{n}D").sum(), amount.rolling(f"{n}D").count()
        g[f"customer_id_nb_tx_{n}day_window"] = list(count)
        g[f"customer_id_avg_amount_{n}day_window"] = list(total / count)
    return g


def _handbook_terminal(g: pd.DataFrame, delay: int) -> pd.DataFrame:
    g = g.sort_values("tx_datetime", kind="stable")  # handbook: unstable; ties differ
    fraud = pd.Series(g["tx_fraud"].to_numpy(dtype=float), index=g["tx_datetime"])
    fraud_delay, count_delay = fraud.rolling(f"{delay}D").sum(), fraud.rolling(f"{delay}D").count()
    for n in (1, 7, 30):
        frauds = fraud.rolling(f"{delay + n}D").sum() - fraud_delay
        count = fraud.rolling(f"{delay + n}D").count() - count_delay
        g[f"terminal_id_nb_tx_{n}day_window"] = list(count)
        g[f"terminal_id_risk_{n}day_window"] = list((frauds / count).fillna(0))
    return g


def baseline_comparison(params: SimulatorParams, repeats: int) -> dict[str, float]:
    """Handbook-style code vs ferry on the same subset parameters (same data for
    the features), in this process; ferry's best of ``repeats``."""
    t0 = time.perf_counter()
    handbook_tx = handbook_simulate(params)
    t1 = time.perf_counter()
    df = simulate(params)
    t2 = time.perf_counter()
    reference = handbook_features(df)
    t3 = time.perf_counter()
    ferry_runs = [run_ferry(params) for _ in range(repeats)]
    ours = add_features(df).sort_values("transaction_id").reset_index(drop=True)
    names = list(FEATURE_NAMES)
    expected = reference[names].to_numpy(np.float64)
    diff = np.abs(ours[names].to_numpy(np.float64) - expected) / np.maximum(1.0, np.abs(expected))
    best = min(ferry_runs, key=lambda r: r["total_s"])
    return {
        "handbook_simulate_s": t1 - t0,
        "handbook_features_s": t3 - t2,
        "handbook_transactions": float(len(handbook_tx)),
        "ferry_simulate_s": best["simulate_s"],
        "ferry_features_s": best["features_s"],
        "transactions": float(len(df)),
        "max_rel_feature_diff": float(diff.max()),
    }


# ------------------------------------------------------------------------ report


def machine() -> str:
    model = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{model}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM; {platform.system()} "
        f"{platform.release()}; Python {platform.python_version()}, numpy {np.__version__}, "
        f"pandas {pd.__version__}"
    )


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _full_size_section(full: list[dict[str, float]], peak_mib: float) -> str:
    totals = [r["total_s"] for r in full]
    met = f"{'yes' if max(totals) < WALL_TARGET_S else 'NO'}, {'yes' if peak_mib < RSS_TARGET_MIB else 'NO'}"
    row = [
        "ferry, fresh subprocess per repeat",
        "defaults",
        f"{full[0]['transactions']:,.0f}",
        f"{full[0]['fraud_share']:.3%}",
        f"{statistics.median(r['simulate_s'] for r in full):.2f}",
        f"{statistics.median(r['features_s'] for r in full):.2f}",
        f"{statistics.median(totals):.2f}, {max(totals):.2f}",
        f"{peak_mib:.0f}",
        met,
    ]
    header = [
        "run",
        "params",
        "transactions",
        "fraud share",
        "simulate s",
        "add_features s",
        f"wall s (median, max of {len(full)})",
        "peak RSS MiB",
        "targets met (< 15 s, < 2 GiB)",
    ]
    return _table(header, [row])


def _baseline_section(base: dict[str, float], sub: str, repeats: int) -> str:
    hb_total = base["handbook_simulate_s"] + base["handbook_features_s"]
    ferry_total = base["ferry_simulate_s"] + base["ferry_features_s"]
    header = [
        "implementation",
        "params",
        "transactions",
        "simulate s",
        "features s",
        "wall s",
        "ratio (handbook / ferry)",
    ]
    rows = [
        [
            "handbook-style (loops, groupby + rolling)",
            sub,
            f"{base['handbook_transactions']:,.0f}",
            f"{base['handbook_simulate_s']:.2f}",
            f"{base['handbook_features_s']:.2f}",
            f"{hb_total:.2f}",
            "1",
        ],
        [
            f"ferry (vectorised numpy), best of {repeats}",
            sub,
            f"{base['transactions']:,.0f}",
            f"{base['ferry_simulate_s']:.3f}",
            f"{base['ferry_features_s']:.3f}",
            f"{ferry_total:.3f}",
            f"{hb_total / ferry_total:.0f}x",
        ],
    ]
    return _table(header, rows)


def render(
    full: list[dict[str, float]], peak_mib: float, base: dict[str, float], subset: SimulatorParams
) -> str:
    sub = f"{subset.customers} customers, {subset.terminals} terminals, {subset.days} days"
    sim_ratio = base["handbook_simulate_s"] / base["ferry_simulate_s"]
    feat_ratio = base["handbook_features_s"] / base["ferry_features_s"]
    return f"""# Benchmark: fraud_detection simulator + features

Generated by `python benchmarks/bench_simulator.py` on {datetime.date.today().isoformat()}.

Machine: {machine()}

## Full size (defaults: 5000 customers, 10000 terminals, 183 days, r = 5)

{_full_size_section(full, peak_mib)}

Wall time is `simulate` + `add_features` inside the child (interpreter start and imports excluded);
peak RSS is the child's `ru_maxrss` (interpreter and imports included).

## Baseline: handbook-style pandas code on a subset ({sub})

{_baseline_section(base, sub, len(full))}

Per stage: simulate {sim_ratio:.0f}x, features {feat_ratio:.0f}x.  Both feature implementations ran on
the same frame (ferry's simulation of the subset); largest relative difference over the 15 features:
{base["max_rel_feature_diff"]:.1e} (ferry stores float32).  The two simulators draw from different
random streams, so their transaction counts differ slightly.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--subset-customers", type=int, default=1000)
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.child:
        child_main()
        return
    repeats = max(1, min(args.repeats, 10))
    full, peak_mib = full_size_runs(repeats)  # first: no other child may inflate ru_maxrss
    subset = SimulatorParams(customers=args.subset_customers, terminals=2 * args.subset_customers)
    base = baseline_comparison(subset, repeats)
    report = render(full, peak_mib, base, subset)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
