"""The online feature state against a real redis-server: replayed history gives the offline features,
repeats count once, labels arrive late and out of order, state survives a restart, and a store that is down
is an error, never a default."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tests.support.redis_server import RedisServer

from fraud_detection.features import FEATURE_NAMES, FEATURES, NS_PER_DAY, add_features
from fraud_detection.online import event_time_ns
from fraud_detection.simulator import SimulatorParams, simulate
from fraud_detection.state import FeatureState, RawTransaction, RequestInFlight, StateStoreUnavailable

pytestmark = pytest.mark.integration

DELAY_DAYS = 7


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    redis_server = RedisServer(tmp_path_factory.mktemp("redis"))
    redis_server.start()
    yield redis_server
    redis_server.stop()


@pytest.fixture
def state(server: RedisServer, request: pytest.FixtureRequest) -> FeatureState:
    if server.process is None:
        server.start()
    return FeatureState(server.client(), f"test:{request.node.name}", DELAY_DAYS)


def raw(tx: object) -> RawTransaction:
    return RawTransaction(str(tx.transaction_id), event_time_ns(tx.tx_datetime.to_pydatetime()),  # type: ignore[attr-defined]
                          int(tx.customer_id), int(tx.terminal_id), float(tx.tx_amount))  # type: ignore[attr-defined]


def replay(state: FeatureState, frame: pd.DataFrame, batch_rows: int) -> np.ndarray:
    """Observe the frame in event-time order in batches, posting each label when the delay has passed: a
    batch is cut wherever a label falls due, so no transaction is scored before a label it should see."""
    due = frame["tx_datetime"] + pd.Timedelta(days=DELAY_DAYS)
    labels = list(zip(due, frame["transaction_id"].astype(str), frame["tx_fraud"].astype(bool), strict=True))
    next_label, rows, batch = 0, [], []
    for tx in frame.itertuples(index=False):
        ready = []
        while next_label < len(labels) and labels[next_label][0] <= tx.tx_datetime:
            ready.append(labels[next_label][1:])
            next_label += 1
        if (ready or len(batch) == batch_rows) and batch:
            rows.append(state.observe(batch).features)
            batch = []
        if ready:
            state.record_labels(ready, arrival_ns=event_time_ns(tx.tx_datetime.to_pydatetime()))
        batch.append(raw(tx))
    rows.append(state.observe(batch).features)
    return np.vstack(rows)


def test_replay_through_redis_gives_the_offline_features(state: FeatureState) -> None:
    frame = simulate(SimulatorParams(customers=25, terminals=50, days=45, seed=5))
    online = replay(state, frame, batch_rows=32)
    offline = add_features(frame, delay_days=DELAY_DAYS)[list(FEATURE_NAMES)].to_numpy(dtype=np.float32)
    np.testing.assert_allclose(online, offline, rtol=1e-6, atol=1e-6)
    assert (offline[:, FEATURE_NAMES.index(FEATURES.terminal_risk(30))] > 0).any()


def test_one_payment_at_a_time_is_counted_and_answered_as_in_batches(server: RedisServer,
                                                                     state: FeatureState) -> None:
    """A single payment takes its own path (one script call instead of the batch's two round trips): replayed one
    payment a call, the same history gives the batches' features bit for bit, and leaves the same histories and
    frauds in the store."""
    frame = simulate(SimulatorParams(customers=15, terminals=30, days=40, seed=9))
    batched = replay(state, frame, batch_rows=32)
    alone = FeatureState(server.client(), f"{state._keys.namespace}:alone", DELAY_DAYS)
    singles = replay(alone, frame, batch_rows=1)
    np.testing.assert_array_equal(singles, batched)
    state.flush()
    alone.flush()
    client = server.client()
    last_us = float(frame["tx_datetime"].max().value // 1000)

    def kept(key: str, doubles: int, days: int) -> list[float]:  # histories are trimmed at other moments
        return [us for us in payments(client, key, doubles) if us > last_us - days * NS_PER_DAY / 1000]

    for customer in frame["customer_id"].unique()[:5]:
        assert kept(state._keys.card(customer), 2, 30) == kept(alone._keys.card(customer), 2, 30) != []
    for terminal in frame["terminal_id"].unique()[:5]:
        assert kept(state._keys.terminal(terminal), 1, 30 + DELAY_DAYS) == kept(
            alone._keys.terminal(terminal), 1, 30 + DELAY_DAYS)
        assert client.zrange(state._keys.frauds(terminal), 0, -1, withscores=True) == client.zrange(
            alone._keys.frauds(terminal), 0, -1, withscores=True)


def test_a_repeated_transaction_gets_the_same_answer_and_counts_once(state: FeatureState) -> None:
    t = event_time_ns(datetime(2018, 5, 2, 9))
    first = RawTransaction("a", t, 7, 70, 12.5)
    once = state.observe([first])
    again = state.observe([first, first])
    assert once.repeated.tolist() == [False] and again.repeated.tolist() == [True, True]
    np.testing.assert_array_equal(again.features, np.vstack([once.features] * 2))
    fresh_and_repeat = state.observe([RawTransaction("b", t + 60 * 10**9, 7, 71, 7.5),
                                      RawTransaction("b", t + 60 * 10**9, 7, 71, 7.5)])
    assert fresh_and_repeat.repeated.tolist() == [False, True]
    count_1d = FEATURE_NAMES.index(FEATURES.customer_count(1))
    assert fresh_and_repeat.features[:, count_1d].tolist() == [2.0, 2.0], "repeats must not be counted again"


def test_a_transaction_whose_scorer_died_is_not_in_flight_forever(state: FeatureState,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Its scorer died between the batch's round trips (counted, features never stored): a repeat is "in
    flight" (409) at first, then, once the claim is stale, gets the features it would have had, counted once.
    Simulated by a replica whose last round trip never runs, and by ageing the claim."""
    t = event_time_ns(datetime(2018, 5, 2, 9))
    state.observe([RawTransaction("before", t - 3600 * 10**9, 7, 70, 20.0)])
    orphan = RawTransaction("orphan", t, 7, 70, 12.5)
    scorer = FeatureState(state._redis, state._keys.namespace, DELAY_DAYS)
    monkeypatch.setattr(scorer._finisher, "submit", lambda *_: None)  # dies after counting, before storing features
    scorer.observe([orphan])
    with pytest.raises(RequestInFlight):
        state.observe([orphan])
    state._redis.setrange(state._keys.record("orphan"), 8, struct.pack("<d", 0))  # claimed long ago
    recovered = state.observe([orphan, orphan])
    assert recovered.repeated.tolist() == [True, True]
    count_1d, mean_1d = FEATURE_NAMES.index(FEATURES.customer_count(1)), FEATURE_NAMES.index(
        FEATURES.customer_mean_amount(1))
    assert recovered.features[0, count_1d] == 2.0 and recovered.features[0, mean_1d] == pytest.approx(16.25)
    np.testing.assert_array_equal(state.observe([orphan]).features, recovered.features[:1])
    after = state.observe([RawTransaction("after", t + 60 * 10**9, 7, 70, 1.0)])
    assert after.features[0, count_1d] == 3.0, "the orphan was counted once"


def test_labels_count_once_and_unknown_ones_are_kept(state: FeatureState) -> None:
    t = event_time_ns(datetime(2018, 5, 2, 9))
    state.observe([RawTransaction("f1", t, 1, 9, 300.0), RawTransaction("g1", t + 1, 2, 9, 10.0)])
    first = state.record_labels([("f1", True), ("g1", False), ("early", True)], arrival_ns=t + 10)
    assert (first.stored, first.repeated, first.unmatched) == (2, 0, ("early",))
    again = state.record_labels([("f1", True)], arrival_ns=t + 20)
    assert (again.stored, again.repeated, again.corrected) == (0, 1, 0)
    # The early label is applied when its transaction arrives: it makes the terminal risky a delay later.
    state.observe([RawTransaction("early", t + 2, 3, 9, 50.0)])
    scored = state.observe([RawTransaction("probe", t + DELAY_DAYS * NS_PER_DAY + 10**9, 4, 9, 5.0)])
    features = dict(zip(FEATURE_NAMES, scored.features[0], strict=True))
    assert features[FEATURES.terminal_count(1)] == 3.0
    assert features[FEATURES.terminal_risk(1)] == pytest.approx(2 / 3)


def test_state_survives_a_restart_of_the_store(server: RedisServer, state: FeatureState) -> None:
    t = event_time_ns(datetime(2018, 6, 1, 12))
    state.observe([RawTransaction("before", t, 11, 5, 40.0)])
    state.flush()
    server.stop()
    server.start()
    revived = FeatureState(server.client(), state._keys.namespace, DELAY_DAYS)
    after = revived.observe([RawTransaction("after", t + 10**9, 11, 5, 60.0)])
    features = dict(zip(FEATURE_NAMES, after.features[0], strict=True))
    assert features[FEATURES.customer_count(1)] == 2.0
    assert features[FEATURES.customer_mean_amount(1)] == 50.0


def test_a_store_that_is_down_is_an_error_never_a_default(server: RedisServer, state: FeatureState) -> None:
    server.stop()
    try:
        with pytest.raises(StateStoreUnavailable, match="unavailable"):
            state.observe([RawTransaction("x", event_time_ns(datetime(2018, 6, 1)), 1, 1, 1.0)])
        with pytest.raises(StateStoreUnavailable):
            state.record_labels([("x", True)], arrival_ns=0)
    finally:
        server.start()
    # Back by itself: the same client reconnects.
    scored = state.observe([RawTransaction("y", event_time_ns(datetime(2018, 6, 1)), 1, 1, 1.0)])
    assert scored.repeated.tolist() == [False]


def test_state_expires_when_no_window_can_need_it(server: RedisServer, state: FeatureState) -> None:
    t = event_time_ns(datetime(2018, 6, 1))
    state.observe([RawTransaction("old", t, 21, 31, 5.0)])
    state.observe([RawTransaction("new", t + 40 * NS_PER_DAY, 21, 31, 5.0)])
    state.flush()  # trimming and expiry renewal are the last round trip, off the request path
    client = server.client()
    prefix = state._keys.namespace
    assert payments(client, f"{prefix}:card:21", 2) == [t // 1000 + 40 * 86_400 * 10**6], \
        "the 40-day-old payment left the card's 30-day state"
    assert payments(client, f"{prefix}:terminal:31", 1) == [t // 1000 + 40 * 86_400 * 10**6], \
        "and the terminal's delay + 30-day state"
    # Renewed once a span (a marker in the history says when), so never sooner than a span from now.
    assert 30 * 86_400 < client.ttl(f"{prefix}:card:21") <= 60 * 86_400
    assert (DELAY_DAYS + 30) * 86_400 < client.ttl(f"{prefix}:terminal:31") <= 2 * (DELAY_DAYS + 30) * 86_400
    assert 0 < client.ttl(f"{prefix}:rec:new") <= (DELAY_DAYS + 30) * 86_400


def payments(client: object, key: str, doubles: int) -> list[float]:
    """The event times (us) of a history's payments, expiry markers (negative) left out."""
    values = np.frombuffer(client.get(key) or b"", dtype="<f8")[::doubles]  # type: ignore[attr-defined]
    return [float(v) for v in values if v > 0]


def test_the_store_refuses_clients_without_the_password(server: RedisServer) -> None:
    import redis

    anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)
    with pytest.raises(redis.AuthenticationError):
        anonymous.ping()


def test_the_fixture_runs_redis_on_loopback_only(server: RedisServer) -> None:
    bind = server.client().config_get("bind")["bind"]
    assert bind == "127.0.0.1"
    assert Path(server.folder / "appendonlydir").is_dir(), "append-only persistence is on"


def test_transaction_records_are_pruned_in_event_time(server: RedisServer, state: FeatureState) -> None:
    """A replay of months in minutes must not keep every record until its wall-clock expiry: records and
    histories go once no window (delay + 30 days) can need them."""
    t = event_time_ns(datetime(2018, 6, 1))
    state.observe([RawTransaction(f"old{i}", t + i * 1000, 100 + i, 200, 1.0) for i in range(5)])
    state.observe([RawTransaction("late", t + (DELAY_DAYS + 31) * NS_PER_DAY, 100, 200, 1.0)])
    state.flush()  # pruning is the last round trip, off the request path (CI once read before it ran)
    client, prefix = server.client(), state._keys.namespace
    late_us = (t + (DELAY_DAYS + 31) * NS_PER_DAY) // 1000
    assert [client.exists(f"{prefix}:rec:old{i}") for i in range(5)] == [0] * 5
    assert client.exists(f"{prefix}:rec:late") == 1
    assert client.zrange(f"{prefix}:tx-index", 0, -1) == [b"late"]
    assert payments(client, f"{prefix}:terminal:200", 1) == [late_us], "only the latest payment's time is left"
    assert payments(client, f"{prefix}:card:100", 2) == [late_us]


def test_a_restarted_store_that_forgot_the_script_is_served_again(server: RedisServer, state: FeatureState) -> None:
    server.client().script_flush()
    scored = state.observe([RawTransaction("after-flush", event_time_ns(datetime(2018, 7, 1)), 5, 5, 3.0)])
    assert scored.repeated.tolist() == [False]


def test_a_transaction_another_request_is_scoring_is_in_flight_and_the_rest_of_its_batch_counts(
        state: FeatureState, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another replica claimed "a" and has not stored its features yet: a batch with "a" and "b" answers "in
    flight" (409), but "b", which it claimed, is counted now rather than left to a stale claim; the retry gets
    the other replica's features for "a" and "b"'s own, each counted once."""
    t = event_time_ns(datetime(2018, 5, 3, 9))
    other = FeatureState(state._redis, state._keys.namespace, DELAY_DAYS)
    unfinished: list[object] = []
    monkeypatch.setattr(other._finisher, "submit", lambda batch, _: unfinished.append(batch))  # not stored yet
    first = other.observe([RawTransaction("a", t, 8, 80, 10.0)])
    with pytest.raises(RequestInFlight, match="'a'"):
        state.observe([RawTransaction("a", t, 8, 80, 10.0), RawTransaction("b", t + 10**9, 8, 80, 30.0)])
    other._finish_all(unfinished)  # type: ignore[arg-type]
    retried = state.observe([RawTransaction("a", t, 8, 80, 10.0), RawTransaction("b", t + 10**9, 8, 80, 30.0)])
    count_1d, mean_1d = FEATURE_NAMES.index(FEATURES.customer_count(1)), FEATURE_NAMES.index(
        FEATURES.customer_mean_amount(1))
    np.testing.assert_array_equal(retried.features[0], first.features[0])
    assert retried.repeated.tolist() == [True, True]
    assert (retried.features[1, count_1d], retried.features[1, mean_1d]) == (2.0, 20.0), "a counted once for b"
    after = state.observe([RawTransaction("c", t + 2 * 10**9, 8, 80, 20.0)])
    assert (after.features[0, count_1d], after.features[0, mean_1d]) == (3.0, 20.0), "and b once in the state"


def claim_and_die(state: FeatureState, tx: RawTransaction, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scorer that claims the transaction and dies before its second round trip (appends, reads). Only a batch
    has two: a single payment is claimed and counted in one script call. The batch's other payment is on a card
    and a terminal of its own."""
    def die(*_: object) -> None:
        raise StateStoreUnavailable("the scorer died")

    monkeypatch.setattr(state, "_count_and_read", die)
    with pytest.raises(StateStoreUnavailable):
        state.observe([tx, RawTransaction(f"{tx.transaction_id}-companion", tx.event_ns, 999, 999, 1.0)])
    monkeypatch.undo()


def test_a_transaction_claimed_by_a_scorer_that_died_before_counting_it_is_counted_once_taken_over(
        state: FeatureState, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its scorer claimed it and died before appending it (between the first two round trips): once the claim is
    stale, a repeat takes it over and counts it, once."""
    t = event_time_ns(datetime(2018, 5, 5, 9))
    state.observe([RawTransaction("prior", t - 3600 * 10**9, 9, 90, 20.0)])
    claim_and_die(state, RawTransaction("lost", t, 9, 90, 12.5), monkeypatch)
    with pytest.raises(RequestInFlight):
        state.observe([RawTransaction("lost", t, 9, 90, 12.5)])
    state._redis.setrange(state._keys.record("lost"), 8, struct.pack("<d", 0))  # claimed long ago
    recovered = state.observe([RawTransaction("lost", t, 9, 90, 12.5)])
    count_1d, mean_1d = FEATURE_NAMES.index(FEATURES.customer_count(1)), FEATURE_NAMES.index(
        FEATURES.customer_mean_amount(1))
    assert recovered.repeated.tolist() == [False], "its first request was never answered: this is its first answer"
    assert (recovered.features[0, count_1d], recovered.features[0, mean_1d]) == (2.0, pytest.approx(16.25))
    state.flush()
    after = state.observe([RawTransaction("later", t + 60 * 10**9, 9, 90, 1.0)])
    assert after.features[0, count_1d] == 3.0, "counted once, when it was taken over"
    assert payments(state._redis, f"{state._keys.namespace}:card:9", 2) == [
        float((t - 3600 * 10**9) // 1000), float(t // 1000), float((t + 60 * 10**9) // 1000)]


def test_a_label_that_came_first_is_applied_when_a_dead_scorers_claim_is_taken_over(
        state: FeatureState, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fraud label arrives before its transaction, whose scorer then dies before applying it: the repeat that
    takes the claim over applies it, so the terminal's risk counts it."""
    t = event_time_ns(datetime(2018, 5, 6, 9))
    assert state.record_labels([("early", True)], arrival_ns=t - 10**9).unmatched == ("early",)
    claim_and_die(state, RawTransaction("early", t, 11, 110, 5.0), monkeypatch)
    state._redis.setrange(state._keys.record("early"), 8, struct.pack("<d", 0))  # claimed long ago
    state.observe([RawTransaction("early", t, 11, 110, 5.0)])
    state.flush()
    assert state._redis.hget(state._keys.unmatched, "early") is None
    assert state._redis.zscore(state._keys.frauds(110), "early") == float(t // 1000)
    probe = state.observe([RawTransaction("probe3", t + DELAY_DAYS * NS_PER_DAY + 10**9, 12, 110, 5.0)])
    features = dict(zip(FEATURE_NAMES, probe.features[0], strict=True))
    assert features[FEATURES.terminal_risk(1)] == 1.0, "the terminal's one payment in the window is a fraud"


def test_replicas_racing_with_the_same_transactions_count_each_once(server: RedisServer,
                                                                     state: FeatureState) -> None:
    """Four replicas (own state objects, own connections) send the same payments of one card and terminal at
    once, each retrying what another is still scoring: each payment is counted once, and every replica gets
    the same features for it."""
    t = event_time_ns(datetime(2018, 5, 3, 9))
    batches = [[RawTransaction(f"p{k + j}", t + (k + j) * 10**9, 8, 80, 10.0 + k + j) for j in range(3)]
               for k in range(0, 30, 3)]
    replicas = [FeatureState(server.client(), state._keys.namespace, DELAY_DAYS) for _ in range(4)]

    def send(replica: FeatureState) -> dict[str, list[float]]:
        answers: dict[str, list[float]] = {}
        for batch in batches:
            for _ in range(500):  # bounded: a claim in flight is done within one batch's round trips
                try:
                    observed = replica.observe(batch)
                    break
                except RequestInFlight:
                    replica.flush()
            else:
                raise AssertionError("a payment stayed in flight")
            answers.update({tx.transaction_id: row.tolist() for tx, row in zip(batch, observed.features,
                                                                                  strict=True)})
        replica.flush()
        return answers

    with ThreadPoolExecutor(len(replicas)) as pool:
        answers = list(pool.map(send, replicas))
    assert all(each == answers[0] for each in answers[1:]), "every replica answers a payment the same"
    client, prefix = server.client(), state._keys.namespace
    expected = sorted(float((t + k * 10**9) // 1000) for k in range(30))
    assert sorted(payments(client, f"{prefix}:card:8", 2)) == expected, "each payment once in the card's history"
    assert sorted(payments(client, f"{prefix}:terminal:80", 1)) == expected
    count_1d = FEATURE_NAMES.index(FEATURES.customer_count(1))
    assert sorted(row[count_1d] for row in answers[0].values()) == [float(k) for k in range(1, 31)], \
        "each payment saw every one counted before it once"


def test_a_fraud_label_corrected_to_genuine_leaves_the_terminals_risk(state: FeatureState) -> None:
    t = event_time_ns(datetime(2018, 5, 4, 9))
    state.observe([RawTransaction("x1", t, 31, 13, 10.0), RawTransaction("x2", t + 1, 32, 13, 10.0)])
    state.record_labels([("x1", True), ("x2", True)], arrival_ns=t + 10)
    corrected = state.record_labels([("x1", False)], arrival_ns=t + 20)
    assert (corrected.stored, corrected.repeated, corrected.corrected) == (0, 0, 1)
    scored = state.observe([RawTransaction("probe2", t + DELAY_DAYS * NS_PER_DAY + 10**9, 33, 13, 5.0)])
    features = dict(zip(FEATURE_NAMES, scored.features[0], strict=True))
    assert features[FEATURES.terminal_count(1)] == 2.0
    assert features[FEATURES.terminal_risk(1)] == pytest.approx(1 / 2), "only x2 is still a fraud"
