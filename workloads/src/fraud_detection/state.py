"""Per-card and per-terminal history in Redis, shared by every serving replica.

State model (all keys under one namespace, e.g. ``ferry:fraud-detector``, named in
:mod:`fraud_detection.state_layout`; times are event time in whole microseconds, which a double holds exactly):

- ``<ns>:card:<customer_id>``: string of packed little-endian ``(time, amount)`` doubles, one pair per payment
  in arrival order; ``<ns>:terminal:<terminal_id>``: packed ``time`` doubles likewise. A history is trimmed from
  the front once an eighth of it is older than any window can need (30 days; the label delay more for a
  terminal). An entry with a negative time is an expiry marker, outside every window: the event time at which the
  key's expiry (twice the span) was last renewed, so that it is renewed once a span, not at every payment.
- ``<ns>:frauds:<terminal_id>``: sorted set of the transaction ids known to be fraud, scored by event time.
- ``<ns>:rec:<transaction_id>``: the transaction's record (`state_layout.RECORD`: event time, when it was
  counted, label and its arrival, terminal), then the features it was scored with (room for them is written
  with the claim). It makes a repeated
  transaction idempotent and tells a label where it belongs; ``<ns>:tx-index`` orders the records by event time,
  so that those no window can need are deleted in event time (a replay of months in minutes).
- ``<ns>:labels:unmatched``: hash transaction_id -> ``<fraud>:<arrival ns>``, labels that came before (or
  without) their transaction. They are reported, kept, and applied if the transaction arrives.

A batch is two pipelined round trips of plain commands on the request path, packed and parsed in C
(`fraud_detection.resp`), and a third after it:

1. claim each transaction (``SET NX GET``, with Redis' clock): a known one answers its record, and repeats are
   answered from it; nothing else is done for them;
2. one MULTI/EXEC, atomic: append each payment this batch claimed to its card's and terminal's history, and read
   those histories and the terminals' frauds. The length each APPEND returns is where the payment sits, so its
   history is what arrived before it, in arrival order across every replica. Only a claimed payment is ever
   appended, so a history never holds a payment twice, not even for a moment while requests race;
3. off the request path, for every batch queued meanwhile at once (:mod:`fraud_detection.state_finish`): store
   the features for repeats, renew expiries, trim histories, index and prune records. Until then this replica
   answers its own repeats from what it computed.

A single payment (one request, one transaction) does 1 and 2 in one script call instead (`state_layout.CLAIM_ONE`):
one round trip on its path rather than two. The rare changes known only after the reads (a label that came
before its payment, a dead scorer's payment never appended) are written before the batch is answered.

The features are computed for the whole batch at once (:func:`fraud_detection.online.batch_window_totals`).
Redis does no per-payment Lua for batches: only single payments and the rare paths (a stale claim taken over,
trimming, the record index) run small scripts.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ferry.contract.errors import RequestInFlight, StateStoreUnavailable
from fraud_detection.features import FEATURES, NS_PER_DAY, FeatureDefinition
from fraud_detection.online import BatchHistory, batch_window_totals, event_time_ns, feature_matrix
from fraud_detection.resp import Pipe, raise_errors
from fraud_detection.state_finish import Finisher, keep
from fraud_detection.state_layout import (
    CARD_ENTRY,
    CLAIM_ONE,
    FEATURES_STORED,
    INDEX,
    LABEL,
    LABEL_AT,
    NO_LABEL,
    PRUNE_RECORDS,
    RECORD,
    SCRIPTS,
    SHAS,
    STALE_CLAIM_S,
    TAKE_OVER,
    TERMINAL_ENTRY,
    Keys,
)

__all__ = ["STALE_CLAIM_S", "FeatureState", "LabelReport", "Observed", "OnlineFeatures", "RawTransaction",
           "RequestInFlight", "StateStoreUnavailable"]

_NS_PER_US = 1_000


@dataclass(frozen=True)
class RawTransaction:
    """What the card network sends for one payment."""

    transaction_id: str
    event_ns: int
    customer_id: int
    terminal_id: int
    amount: float


@dataclass(frozen=True)
class Observed:
    """A batch's features, (rows, 15) float32 in the workload's feature order, and which rows repeated a
    transaction id already counted (their features are the first time's)."""

    features: np.ndarray
    repeated: np.ndarray


@dataclass(frozen=True)
class LabelReport:
    stored: int  # new labels, applied to their terminal's risk
    repeated: int  # the same label again: counted once
    corrected: int  # a different label for a labelled transaction: the newer one wins
    unmatched: tuple[str, ...]  # no such transaction (yet): kept and applied if it arrives


@dataclass
class _Batch:
    """One batch's unique transactions on their way through the round trips."""

    txs: list[RawTransaction]
    features: np.ndarray
    repeated: np.ndarray
    computed: list[int] = field(default_factory=list)  # rows whose features are computed here (and stored)
    histories: list[tuple[bytes, bytes, list[Any]]] = field(default_factory=list)  # of `computed`, in order
    busy: list[str] = field(default_factory=list)  # ids being scored by another request right now
    unappended: list[int] = field(default_factory=list)  # taken over, never appended: appended in round trip 3
    early: list[tuple[int, bytes]] = field(default_factory=list)  # rows with a label that came first
    blobs: dict[str, bytes] = field(default_factory=dict)  # each history read, by key
    card_keys: list[str] = field(default_factory=list)  # of each row
    terminal_keys: list[str] = field(default_factory=list)
    at_us: list[int] = field(default_factory=list)  # each row's event time in us

    def __post_init__(self) -> None:
        self.at_us = [tx.event_ns // _NS_PER_US for tx in self.txs]


class FeatureState:
    """The fraud workload's online state in one Redis database (see the module doc for the key layout)."""

    def __init__(self, client: Any, namespace: str, delay_days: int, definition: FeatureDefinition = FEATURES):
        self._redis = client
        self._pipe = Pipe.like(client, SCRIPTS)
        self._keys = Keys(namespace)
        self._delay_days = delay_days
        self._definition = definition
        self._card_span_us = max(definition.windows_days) * NS_PER_DAY // _NS_PER_US
        self._terminal_span_us = self._card_span_us + delay_days * NS_PER_DAY // _NS_PER_US
        self._record_ttl_s = self._terminal_span_us // 10**6
        # The last round trip (features stored, histories kept) runs off the request path, for several batches at
        # once; until it has run, this replica's own repeats are answered from what it computed (state_finish).
        self._finisher = Finisher(self._finish_all, STALE_CLAIM_S)
        self._synced: tuple[int, float] | None = None  # Redis' clock (s) when last read, and time.monotonic() then

    def observe(self, transactions: Sequence[RawTransaction]) -> Observed:
        """Features of each transaction, counting each transaction id once in its card's and terminal's
        state: a repeated id (in this batch or any earlier one) gets the same features again."""
        first: dict[str, RawTransaction] = {}
        for tx in transactions:
            first.setdefault(tx.transaction_id, tx)
        batch = self._observe_unique(list(first.values()))
        index = {tx.transaction_id: i for i, tx in enumerate(batch.txs)}
        rows = [index[tx.transaction_id] for tx in transactions]
        repeated = [bool(batch.repeated[i]) or first[tx.transaction_id] is not tx
                    for i, tx in zip(rows, transactions, strict=True)]
        return Observed(batch.features[rows], np.array(repeated, dtype=bool))

    def _observe_unique(self, txs: list[RawTransaction]) -> _Batch:
        width = len(self._definition.names)
        batch = _Batch(txs, np.zeros((len(txs), width), dtype=np.float32), np.zeros(len(txs), dtype=bool))
        if not txs:
            return batch
        card, terminal = self._keys.card, self._keys.terminal
        batch.card_keys = [card(tx.customer_id) for tx in txs]
        batch.terminal_keys = [terminal(tx.terminal_id) for tx in txs]
        if len(txs) == 1:
            now, stale = self._claim_one(batch)
            if taken := self._take_over(batch, stale, now):
                self._count_and_read(batch, [], taken, early=True)
        else:
            now, early_labels, records = self._claim(batch)
            fresh, stale = self._sort_out(batch, records, now)
            taken = self._take_over(batch, stale, now)
            if fresh or taken:  # even when some are in flight: what this batch claimed is counted now, not orphaned
                self._count_and_read(batch, fresh, taken, early_labels)
        if batch.computed:
            self._compute(batch)
            self._count_late(batch)
            self._finisher.submit(batch, {txs[i].transaction_id: batch.features[i] for i in batch.computed})
        if batch.busy:
            raise _in_flight(batch.busy)
        return batch

    @property
    def failed_finishes(self) -> int:
        """Batches whose last round trip failed: their rows recover as stale claims."""
        return self._finisher.failed

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every batch's last round trip is done (tests, benchmarks, shutdown), at most `timeout_s`;
        whether it is."""
        return self._finisher.flush(timeout_s)

    def _claim(self, batch: _Batch) -> tuple[int, bool, list[bytes | None]]:
        """Round trip 1: Redis' clock, whether any label waits for its transaction, and each transaction claimed:
        its record written if there is none (the claim time from Redis' clock as last read, moved on by this
        process' monotonic clock), or the record there is."""
        keys, txs, at_us = self._keys, batch.txs, batch.at_us
        now = self._clock()
        prefix, ttl = keys.record(""), self._record_ttl_s
        commands: list[tuple[Any, ...]] = [("TIME",), ("EXISTS", keys.unmatched)]
        commands += [("SET", prefix + tx.transaction_id, self._claimed_record(tx, at, now),
                      "NX", "GET", "EX", ttl) for tx, at in zip(txs, at_us, strict=True)]
        replies = self._pipe.execute(commands)
        raise_errors(replies)
        return self._sync(replies[0]), replies[1] == 1, replies[2:]

    def _claim_one(self, batch: _Batch) -> tuple[int, list[tuple[int, bytes]]]:
        """A batch of one payment in one round trip (`state_layout.CLAIM_ONE`): claimed, counted and read at once,
        or answered from its record. Redis' clock, and the claim to take over if its scorer died."""
        keys, tx, at = self._keys, batch.txs[0], batch.at_us[0]
        now = self._clock()
        command = ("EVALSHA", SHAS[CLAIM_ONE], 5, keys.record(tx.transaction_id), batch.card_keys[0],
                   batch.terminal_keys[0], keys.frauds(tx.terminal_id), keys.unmatched,
                   self._claimed_record(tx, at, now), self._record_ttl_s,
                   CARD_ENTRY.pack(at, tx.amount), TERMINAL_ENTRY.pack(at), f"({at - self._terminal_span_us}",
                   tx.transaction_id)
        replies = self._pipe.execute([command])
        raise_errors(replies)
        reply = replies[0]
        self._sync(reply[0])
        if reply[1] is not None:
            return now, self._sort_out(batch, [reply[1]], now)[1]
        card_length, terminal_length, card, terminal, frauds, early = reply[2:8]
        batch.blobs = {batch.card_keys[0]: card, batch.terminal_keys[0]: terminal}
        batch.computed.append(0)
        batch.histories.append((card[:card_length - CARD_ENTRY.size], terminal[:terminal_length - TERMINAL_ENTRY.size],
                                frauds))
        if early is not None:
            batch.early.append((0, early))
        return now, []

    def _claimed_record(self, tx: RawTransaction, at_us: int, now: int) -> bytes:
        """A new claim's record, with room for FEATURES_STORED and the features, written later."""
        return RECORD.pack(at_us, now, NO_LABEL, 0, tx.terminal_id) + bytes(1 + 4 * len(self._definition.names))

    def _clock(self) -> int:
        """Redis' clock in seconds, as a claim records it: read once, then moved on by the monotonic clock and
        read again with every claim, so that every replica's claims are in the store's time."""
        if self._synced is None:
            replies = self._pipe.execute([("TIME",)], repeatable=True)
            raise_errors(replies)
            self._sync(replies[0])
        assert self._synced is not None
        seconds, at = self._synced
        return seconds + int(time.monotonic() - at)

    def _sync(self, time_reply: list[bytes]) -> int:
        """Remember Redis' clock from a TIME reply; its seconds."""
        self._synced = (int(time_reply[0]), time.monotonic())
        return self._synced[0]

    def _sort_out(self, batch: _Batch, records: list[bytes | None],
                  now: int) -> tuple[list[int], list[tuple[int, bytes]]]:
        """Rows claimed now (to count), known ones (answered from their record), and claims whose scorer died."""
        fresh: list[int] = []
        stale: list[tuple[int, bytes]] = []
        for i, record in enumerate(records):
            if record is None:
                fresh.append(i)
            elif not self._answer_known(batch, i, record):
                if now - RECORD.unpack_from(record)[1] < STALE_CLAIM_S:
                    batch.busy.append(batch.txs[i].transaction_id)
                else:
                    stale.append((i, record))
        return fresh, stale

    def _answer_known(self, batch: _Batch, row: int, record: bytes) -> bool:
        if record[RECORD.size:RECORD.size + 1] == FEATURES_STORED:
            batch.features[row] = np.frombuffer(record, dtype=np.float32, offset=RECORD.size + 1)
        elif (computed := self._finisher.features_of(batch.txs[row].transaction_id)) is not None:
            batch.features[row] = computed  # scored here, its last round trip still queued
        else:
            return False
        batch.repeated[row] = True
        return True

    def _take_over(self, batch: _Batch, stale: list[tuple[int, bytes]], now: int) -> list[int]:
        """Claims whose scorer died (features never stored, payment maybe never appended): taken over one by one
        (rare)."""
        if not stale:
            return []
        replies = self._pipe.execute([("EVALSHA", SHAS[TAKE_OVER], 1, self._keys.record(batch.txs[i].transaction_id),
                                       record, struct.pack("<d", now)) for i, record in stale])
        raise_errors(replies)
        taken = [i for (i, _), won in zip(stale, replies, strict=True) if won == 1]
        batch.busy += [batch.txs[i].transaction_id for (i, _), won in zip(stale, replies, strict=True) if won != 1]
        return taken

    def _count_and_read(self, batch: _Batch, fresh: list[int], taken: list[int], early: bool) -> None:
        """Round trip 2, one MULTI/EXEC: append the payments this batch claimed, read what their features need."""
        keys, txs, at_us = self._keys, batch.txs, batch.at_us
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        for i in fresh:
            commands += _appends(batch, i)
        rows = fresh + taken
        cards = list(dict.fromkeys([batch.card_keys[i] for i in rows]))
        terminals = list(dict.fromkeys([txs[i].terminal_id for i in rows]))
        oldest = min(at_us[i] for i in rows) - self._terminal_span_us
        commands.append(("MGET", *cards, *(keys.terminal(m) for m in terminals)))
        commands += [("ZRANGEBYSCORE", keys.frauds(m), f"({oldest}", "+inf", "WITHSCORES") for m in terminals]
        if early:  # a claim taken over too: its scorer may have died before applying the label
            commands.append(("HMGET", keys.unmatched, *(txs[i].transaction_id for i in rows)))
        commands.append(("EXEC",))
        replies = self._pipe.execute(commands)
        raise_errors(replies)
        if replies[-1] is None:
            raise StateStoreUnavailable("the feature state store (Redis) is unavailable: it aborted the transaction")
        self._take_reads(batch, fresh, taken, replies[-1], cards, terminals, early)

    def _take_reads(self, batch: _Batch, fresh: list[int], taken: list[int], result: list[Any], cards: list[str],
                    terminals: list[int], early: bool) -> None:
        keys, txs = self._keys, batch.txs
        lengths, blobs = result[:2 * len(fresh)], result[2 * len(fresh)]
        batch.blobs = dict(zip(cards + [keys.terminal(m) for m in terminals], (b or b"" for b in blobs), strict=True))
        frauds = dict(zip(terminals, result[2 * len(fresh) + 1:2 * len(fresh) + 1 + len(terminals)], strict=True))
        if early:
            batch.early = [(i, value) for i, value in zip(fresh + taken, result[-1], strict=True) if value is not None]
        blobs = batch.blobs
        for j, i in enumerate(fresh):  # its history is what lies before its own entry
            batch.computed.append(i)
            batch.histories.append((blobs[batch.card_keys[i]][:lengths[2 * j] - CARD_ENTRY.size],
                                    blobs[batch.terminal_keys[i]][:lengths[2 * j + 1] - TERMINAL_ENTRY.size],
                                    frauds[txs[i].terminal_id]))
        for i in taken:
            self._take_history(batch, i, frauds[txs[i].terminal_id])

    def _take_history(self, batch: _Batch, row: int, frauds: list[Any]) -> None:
        """A claim taken over: if its scorer appended the payment, it is left out of its own history (as when it
        came) and not counted again; if the scorer died before that, it is counted now (round trip 3)."""
        tx, at = batch.txs[row], float(batch.at_us[row])
        card, counted = _without(batch.blobs[batch.card_keys[row]], CARD_ENTRY.pack(at, tx.amount))
        terminal, _ = _without(batch.blobs[batch.terminal_keys[row]], TERMINAL_ENTRY.pack(at))
        batch.computed.append(row)
        if counted:
            batch.repeated[row] = True
        else:
            batch.unappended.append(row)
        batch.histories.append((card, terminal, frauds))

    def _compute(self, batch: _Batch) -> None:
        if not batch.computed:
            return
        rows = batch.computed
        event_ns = np.array([batch.txs[i].event_ns for i in rows], dtype=np.int64)
        amounts = np.array([batch.txs[i].amount for i in rows], dtype=np.float64)
        totals = batch_window_totals(event_ns, _batch_history(batch.histories), self._delay_days, self._definition)
        batch.features[rows] = feature_matrix(event_ns, amounts, totals, self._definition)

    def _finish_all(self, batches: Sequence[_Batch]) -> None:
        """The last round trip, for every batch queued (state_finish): features stored for repeats, histories kept,
        and the new records indexed in one script call."""
        commands: list[tuple[Any, ...]] = []
        pairs: list[Any] = []
        for batch in batches:
            commands += [("SETRANGE", self._keys.record(batch.txs[i].transaction_id), RECORD.size,
                          FEATURES_STORED + batch.features[i].tobytes()) for i in batch.computed]
            pairs += [arg for i in batch.computed if not batch.repeated[i]
                      for arg in (batch.at_us[i], batch.txs[i].transaction_id)]
        commands += self._upkeep(batches)
        if pairs:
            newest = max(pairs[::2])
            commands.append(("EVALSHA", SHAS[INDEX], 1, self._keys.index, self._keys.record(""),
                             newest - self._terminal_span_us, self._record_ttl_s, PRUNE_RECORDS * len(pairs) // 2,
                             *pairs))
        raise_errors(self._pipe.execute(commands))

    def _count_late(self, batch: _Batch) -> None:
        """The rare state changes known only once a batch's state is read: the payment of a claim taken over that
        its dead scorer never appended, and labels that came before their payment. Made before the batch is
        answered, so that the next payment this replica scores sees them; if this fails, the claims stay without
        features and a repeat takes them over again (stale claims), which redoes both."""
        commands: list[tuple[Any, ...]] = []
        for i in batch.unappended:
            commands += _appends(batch, i)
        for i, value in batch.early:
            commands += self._early_label(batch.txs[i], batch.at_us[i], value)
        if commands:
            raise_errors(self._pipe.execute(commands))

    def _early_label(self, tx: RawTransaction, at_us: int, value: bytes) -> list[tuple[Any, ...]]:
        fraud, arrived = value.split(b":", 1)
        commands: list[tuple[Any, ...]] = []
        if fraud == b"1":
            frauds = self._keys.frauds(tx.terminal_id)
            commands += [("ZADD", frauds, at_us, tx.transaction_id),
                         ("EXPIRE", frauds, self._record_ttl_s)]
        label = LABEL.pack(fraud, int(arrived))
        return [*commands, ("SETRANGE", self._keys.record(tx.transaction_id), LABEL_AT, label),
                ("HDEL", self._keys.unmatched, tx.transaction_id)]

    def _upkeep(self, batches: Sequence[_Batch]) -> list[tuple[Any, ...]]:
        """Histories kept small and alive (`state_finish.keep`), in one pass over every history the batches read:
        of a history several batches read, the last read is the newest."""
        newest_card: dict[str, int] = {}
        newest_terminal: dict[str, int] = {}
        blobs: dict[str, bytes] = {}
        for batch in batches:
            blobs.update(batch.blobs)
            for i in batch.computed:
                card, terminal, at = batch.card_keys[i], batch.terminal_keys[i], batch.at_us[i]
                newest_card[card] = max(newest_card.get(card, at), at)
                newest_terminal[terminal] = max(newest_terminal.get(terminal, at), at)
        return (keep(newest_card, blobs, self._card_span_us, CARD_ENTRY)
                + keep(newest_terminal, blobs, self._terminal_span_us, TERMINAL_ENTRY))

    def record_labels(self, labels: Sequence[tuple[str, bool]], arrival_ns: int) -> LabelReport:
        """Store delayed labels: each counts in its terminal's risk from then on; repeats count once."""
        records = self._run(lambda pipe: pipe.mget([self._keys.record(txid) for txid, _ in labels]))[0]
        counts = {"stored": 0, "repeated": 0, "corrected": 0}
        unmatched: list[str] = []

        def write(pipe: Any) -> None:
            for (txid, fraud), record in zip(labels, records, strict=True):
                value = b"1" if fraud else b"0"
                if record is None:
                    unmatched.append(txid)
                    pipe.hset(self._keys.unmatched, txid, f"{int(fraud)}:{arrival_ns}")
                    continue
                event_us, _, previous, _, terminal = RECORD.unpack_from(record)
                counts["stored" if previous == NO_LABEL else "repeated" if previous == value else "corrected"] += 1
                if previous == value:
                    continue
                frauds = self._keys.frauds(terminal)
                if fraud:  # and the frauds no window can hold any more go (a batch reads only the others)
                    pipe.zadd(frauds, {txid: event_us})
                    pipe.zremrangebyscore(frauds, "-inf", event_us - self._terminal_span_us)
                    pipe.expire(frauds, self._record_ttl_s)
                else:
                    pipe.zrem(frauds, txid)
                pipe.setrange(self._keys.record(txid), LABEL_AT, LABEL.pack(value, arrival_ns))

        self._run(write)
        return LabelReport(**counts, unmatched=tuple(unmatched))

    def _run(self, queue: Any) -> list[Any]:
        import redis

        try:
            pipe = self._redis.pipeline(transaction=False)
            queue(pipe)
            return list(pipe.execute())
        except redis.RedisError as exc:
            raise StateStoreUnavailable(f"the feature state store (Redis) is unavailable: {exc}") from exc


def _in_flight(ids: list[str]) -> RequestInFlight:
    return RequestInFlight(f"transaction {ids[0]!r} is being scored by another request; retry it")


def _appends(batch: _Batch, row: int) -> list[tuple[Any, ...]]:
    """The payment's entries at the end of its card's and terminal's history."""
    tx, at = batch.txs[row], batch.at_us[row]
    return [("APPEND", batch.card_keys[row], CARD_ENTRY.pack(at, tx.amount)),
            ("APPEND", batch.terminal_keys[row], TERMINAL_ENTRY.pack(at))]


def _without(blob: bytes, entry: bytes) -> tuple[bytes, bool]:
    """The history without its last entry equal to `entry` (equal entries are interchangeable), and whether
    there was one."""
    size = len(entry)
    for offset in range(len(blob) - size, -1, -size):
        if blob[offset:offset + size] == entry:
            return blob[:offset] + blob[offset + size:], True
    return blob, False


def _batch_history(histories: Sequence[tuple[bytes, bytes, list[Any]]]) -> BatchHistory:
    """Every computed payment's card and terminal history and its terminal's frauds, end to end: one
    `np.frombuffer` per kind for the whole batch rather than one per payment."""
    cards, terminals = [h[0] for h in histories], [h[1] for h in histories]
    pairs = np.frombuffer(b"".join(cards), dtype="<f8").reshape(-1, 2)
    terminal_us = np.frombuffer(b"".join(terminals), dtype="<f8")
    fraud_us = [[float(score) for score in h[2][1::2]] for h in histories]
    rows = np.arange(len(histories))
    return BatchHistory(
        card_ns=pairs[:, 0].astype(np.int64) * _NS_PER_US, card_amount=pairs[:, 1],
        card_rows=np.repeat(rows, [len(blob) // 16 for blob in cards]),
        terminal_ns=terminal_us.astype(np.int64) * _NS_PER_US,
        terminal_rows=np.repeat(rows, [len(blob) // 8 for blob in terminals]),
        fraud_ns=np.array([us for each in fraud_us for us in each], dtype=np.float64).astype(np.int64) * _NS_PER_US,
        fraud_rows=np.repeat(rows, [len(each) for each in fraud_us]))


class OnlineFeatures:
    """What serving calls for a workload that takes raw payments (ferry.serving.online): features and routing
    keys for a batch of requests, and labels, over one `FeatureState`."""

    def __init__(self, state: FeatureState) -> None:
        self.state = state

    def observe(self, rows: Sequence[Any]) -> Observed:
        return self.state.observe([RawTransaction(row.transaction_id, event_time_ns(row.tx_datetime), row.customer_id,
                                                  row.terminal_id, row.tx_amount) for row in rows])

    def keys(self, rows: Sequence[Any]) -> list[int]:
        return [row.customer_id for row in rows]

    def record_labels(self, rows: Sequence[Any], arrival_ns: int) -> LabelReport:
        return self.state.record_labels([(row.transaction_id, row.fraud) for row in rows], arrival_ns)

    def close(self, timeout_s: float) -> bool:
        """The last batches' upkeep run before the router goes (their repeats then find their features stored)."""
        return self.state.flush(timeout_s)
