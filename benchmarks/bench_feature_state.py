"""Online feature state in Redis: parity with the offline features, memory for the default simulator, speed.

Replays the default simulator's transactions from REPLAY_FROM to the end of the handbook's test week through
`fraud_detection.state.FeatureState` on a real redis-server (loopback, password, append-only file), in
event-time order, in batches of 256, posting each label once the handbook's delay has passed in event time.
Then:

- **parity**: every transaction of the test week (2018-08-08..14) against `add_features` over the whole
  dataset: max abs difference and the count beyond 1e-6 relative;
- **memory**: Redis `used_memory` minus what the empty server used, holding the default 5,000 cards' and
  10,000 terminals' state for the windows (30 days; delay + 30 days for terminals and records);
- **speed**: transactions/s of batch-256 observes during the replay, and the p50 of one transaction's
  observe against the p50 of a PING on the same connection (the round-trip floor), measured in the same run.

Writes docs/benchmarks/feature-state.md. Bounded: one replay, 2,000 single observes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.redis_server import RedisServer

from fraud_detection.features import FEATURE_NAMES, add_features
from fraud_detection.simulator import SimulatorParams, simulate
from fraud_detection.state import FeatureState, RawTransaction

DELAY_DAYS = 7
REPLAY_FROM = "2018-06-25"  # 44 days before the test week: more than delay + the longest window
TEST_WEEK = ("2018-08-08", "2018-08-15")
BATCH = 256
SINGLES = 2_000


def raw_transactions(frame: pd.DataFrame) -> list[RawTransaction]:
    ns = frame["tx_datetime"].to_numpy(dtype="datetime64[ns]").view(np.int64)
    return [RawTransaction(str(t), int(n), int(c), int(m), float(a)) for t, n, c, m, a in zip(
        frame["transaction_id"], ns, frame["customer_id"], frame["terminal_id"], frame["tx_amount"], strict=True)]


def replay(state: FeatureState, frame: pd.DataFrame) -> tuple[np.ndarray, float]:
    """Features of every row, and the seconds spent in observe (labels excluded).

    Before each batch, every label due by the batch's last transaction is posted. A label that comes early
    cannot leak: a terminal window ends at t - delay, so it only ever holds transactions whose label was due
    by t."""
    txs = raw_transactions(frame)
    times = np.array([tx.event_ns for tx in txs], dtype=np.int64)
    due = times + DELAY_DAYS * 86_400 * 10**9  # in time order, like the rows
    ids, frauds = frame["transaction_id"].astype(str).tolist(), frame["tx_fraud"].astype(bool).tolist()
    rows: list[np.ndarray] = []
    observing, sent = 0.0, 0
    for start in range(0, len(txs), BATCH):
        batch = txs[start:start + BATCH]
        due_now = int(np.searchsorted(due, batch[-1].event_ns, side="right"))
        if due_now > sent:
            state.record_labels(list(zip(ids[sent:due_now], frauds[sent:due_now], strict=True)),
                                arrival_ns=batch[-1].event_ns)
            sent = due_now
        began = time.perf_counter()
        rows.append(state.observe(batch).features)
        observing += time.perf_counter() - began
    began = time.perf_counter()
    state.flush()  # the last batches' third round trip, counted too
    return np.vstack(rows), observing + time.perf_counter() - began


def single_latency(server: RedisServer, state: FeatureState, after_ns: int) -> tuple[float, float]:
    """p50 ms of one new transaction's observe, and of a PING on the same client."""
    client = server.client()
    ping, observe = [], []
    for i in range(SINGLES):
        began = time.perf_counter()
        client.ping()
        ping.append(time.perf_counter() - began)
        tx = RawTransaction(f"single-{i}", after_ns + i * 10**9, i % 5000, i % 10000, 42.0)
        began = time.perf_counter()
        state.observe([tx])
        observe.append(time.perf_counter() - began)
    return statistics.median(observe) * 1e3, statistics.median(ping) * 1e3


def measure() -> dict[str, object]:
    frame = simulate(SimulatorParams())
    offline = add_features(frame, delay_days=DELAY_DAYS)
    window = frame[(frame["tx_datetime"] >= REPLAY_FROM) & (frame["tx_datetime"] < TEST_WEEK[1])]
    with tempfile.TemporaryDirectory(prefix="ferry-bench-redis-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            client = server.client()
            empty = int(client.info("memory")["used_memory"])
            state = FeatureState(server.client(), "bench:fraud-detector", DELAY_DAYS)
            online, observing = replay(state, window)
            state.flush()
            used = int(client.info("memory")["used_memory"]) - empty
            keys = int(client.dbsize())
            single_ms, ping_ms = single_latency(server, state, int(window["tx_datetime"].max().value) + 10**9)
        finally:
            server.stop()
    in_week = ((window["tx_datetime"] >= TEST_WEEK[0]) & (window["tx_datetime"] < TEST_WEEK[1])).to_numpy()
    got = online[in_week]
    want = offline.loc[window.index[in_week], list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    beyond = int(np.count_nonzero(diff > 1e-6 * np.maximum(np.abs(want), 1.0)))
    return {"replayed": len(window), "week_rows": int(in_week.sum()), "max_abs": float(diff.max()),
            "mismatches": beyond, "memory_mib": used / 2**20, "keys": keys, "tx_per_s": len(window) / observing,
            "single_ms": single_ms, "ping_ms": ping_ms, "redis": server_version()}


def server_version() -> str:
    import subprocess

    return subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()[2]


def report(result: dict[str, object], seconds: float) -> str:
    r = result
    return "\n".join([
        "# Online feature state (Redis)",
        "",
        f"Written by `benchmarks/bench_feature_state.py` ({seconds:.0f} s on a 2-core VM; redis-server "
        f"{r['redis']} on loopback with a password and an append-only file, fsync every second). "
        "The default simulator (5,000 cards, "
        f"10,000 terminals, 183 days) is replayed from {REPLAY_FROM} to the end of the handbook's test week, "
        f"{r['replayed']:,} transactions in event-time order, in batches of {BATCH}, each label posted once the "
        f"{DELAY_DAYS}-day delay has passed in event time.",
        "",
        "| | measured | target |",
        "|---|---:|---|",
        f"| test week {TEST_WEEK[0]}..14: rows compared with `add_features` | {r['week_rows']:,} | all |",
        f"| max abs difference, 15 features | {r['max_abs']:.3g} | |",
        f"| values beyond 1e-6 relative | {r['mismatches']} | 0 |",
        f"| Redis memory for the state (used_memory above the empty server) | {r['memory_mib']:.1f} MiB "
        f"({r['keys']:,} keys) | ≤ 200 MiB |",
        f"| batch-{BATCH} observe throughput | {r['tx_per_s']:,.0f} tx/s | |",
        f"| one transaction's observe, p50 | {r['single_ms']:.3f} ms | |",
        f"| PING on the same connection, p50 (round-trip floor) | {r['ping_ms']:.3f} ms | |",
        f"| observe ÷ PING | {r['single_ms'] / r['ping_ms']:.2f}× | |",
        "",
        "Throughput counts the time in `FeatureState.observe` only: for the whole batch, one pipelined claim of "
        "every payment (`SET NX GET`), one MULTI/EXEC that appends each payment it claimed and reads its card's "
        "and terminal's history and the terminal's known frauds (plain commands packed and parsed by hiredis, no "
        "per-payment Lua), and the features computed at once in numpy. A third round trip, off the request path, "
        "stores them for repeats and keeps the histories trimmed and alive, for every batch queued in the last 10 ms "
        "at once (`fraud_detection.state_finish`); it shares the machine with the next batches, so its cost shows in "
        "theirs, and the time counted ends when the last one is done. One transaction alone is one round trip "
        "(a script that claims, counts and reads it), then the same third. This is the store's share of a raw "
        "request; the endpoints "
        "themselves (raw `/predict` against `/predict/features`, p50 and throughput) are compared in "
        "[raw-serving.md](raw-serving.md).",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-write", action="store_true", help="only print; leave the doc as it is")
    args = parser.parse_args()
    started = time.perf_counter()
    body = report(measure(), time.perf_counter() - started)
    print(body)
    if not args.no_write:
        from tests.support.generated_docs import entry_for, write_section

        write_section(entry_for("docs/benchmarks/feature-state.md"), body)


if __name__ == "__main__":
    main()
