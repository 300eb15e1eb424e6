"""Per-card and per-terminal history in Redis, shared by every serving replica.

State model (all keys under one namespace, e.g. ``ferry:fraud-detector``; times are event time in whole
microseconds, which a double holds exactly):

- ``<ns>:card:<customer_id>``: string of packed little-endian ``(time, amount)`` doubles, one pair per payment
  in arrival order, trimmed from the front once an eighth of it is older than the longest window (30 days).
- ``<ns>:terminal:<terminal_id>``: string of packed ``time`` doubles, one per payment, trimmed likewise past
  the label delay plus the longest window; ``<ns>:frauds:<terminal_id>``: sorted set of the transaction ids
  known to be fraud, scored by their event time (the old ones removed when labels are written).
- ``<ns>:tx:<transaction_id>``: hash with its terminal (``t``), event time (``e``), when it was counted
  (``c``, Redis' clock in s), the features it was scored with (``f``, float32 bytes) and, once it arrives, its
  label (``l``) and the label's arrival time in ns (``a``). It makes a repeated transaction idempotent and
  tells a label where it belongs. One-letter fields: there is one record per payment of the last delay + 30
  days. ``<ns>:tx-index`` orders the records by event
  time, so that those no window can need are deleted in event time, once per batch.
- ``<ns>:labels:unmatched``: hash transaction_id -> ``<fraud>:<arrival ns>``, labels that came before (or
  without) their transaction. They are reported, kept, and applied if the transaction arrives.

One Lua script call per batch returns, for each transaction, the card's and terminal's history and the
terminal's known frauds, then appends the payment, atomically: two replicas scoring payments of one card at
once count each other in arrival order (**one round trip for every read of a request**). The features are
computed for the whole batch at once (:func:`fraud_detection.online.batch_window_totals`), and one more
round trip stores them for repeats. Every key also expires (wall clock) when no window can need
it any more.
"""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ferry.contract.errors import RequestInFlight, StateStoreUnavailable
from fraud_detection.features import FEATURES, NS_PER_DAY, FeatureDefinition
from fraud_detection.online import BatchHistory, batch_window_totals, event_time_ns, feature_matrix

_NS_PER_US = 1_000
_FRESH, _KNOWN, _IN_FLIGHT, _ORPHANED = 0, 1, 2, 3  # what the observe script answers per transaction
_SEPARATORS = frozenset("\x1e\x1f")  # of the batch argument of the script
PRUNE_RECORDS = 8  # records deleted per write at most: more than the one each write adds
# A transaction counted without its features stored for this long lost its scorer (killed, or Redis went away
# between the two script calls): a repeat then recomputes them instead of answering "in flight" forever. Far
# above any request's timeout (serving.limits.timeout_s is at most 30 s).
STALE_CLAIM_S = 60

# One call scores a whole batch: ARGV[1] holds its transactions, fields separated by \31 and transactions by
# \30 (id, card, terminal, t in us, amount), so a batch of 256 is one command to pack and one reply to parse.
# Keys are built in the script from the namespace, a constant of it (`_observe_script`) like the windows, the
# delay and the expiries: a single Redis allows that; a Redis Cluster would need the namespace as a hash tag.
_OBSERVE = """
local function history(key, size, oldest)
  local blob = redis.call('GET', key) or ''
  local cut = 0
  while cut + size <= #blob and struct.unpack('<d', blob, cut + 1) <= oldest do cut = cut + size end
  if cut == 0 then return blob end
  local kept = string.sub(blob, cut + 1)
  -- Rewriting the key costs a copy in memory and a record in the append-only file as long as the history: it
  -- is done once an eighth of the history has aged out, not at every payment (the rest is filtered in Python).
  if cut * 8 >= #blob then redis.call('SET', key, kept) end
  return kept
end

local function observe(txid, card_id, terminal_id, at, amount, early_labels, indexed, now)
  local record = PREFIX .. 'tx:' .. txid
  local known = redis.call('HMGET', record, 'f', 'e', 'c')
  if known[1] then return {1, known[1]} end
  local t = tonumber(at)
  local card_key, terminal_key = PREFIX .. 'card:' .. card_id, PREFIX .. 'terminal:' .. terminal_id
  local frauds_key = PREFIX .. 'frauds:' .. terminal_id
  local terminal_oldest = t - DELAY_US - LONGEST_US
  local card = history(card_key, 16, t - LONGEST_US)
  local terminal = history(terminal_key, 8, terminal_oldest)
  -- Only the frauds a window can hold; older ones are removed when labels are written (record_labels).
  local frauds = redis.call('ZRANGEBYSCORE', frauds_key, string.format('(%.17g', terminal_oldest), '+inf',
                            'WITHSCORES')
  if known[2] then
    -- Counted, but its features never stored: being scored now (retry), or its scorer died between this
    -- script and the next. Past STALE_CLAIM_S the history, which holds the payment itself, is returned.
    if now - tonumber(known[3] or '0') < STALE_CLAIM_S then return {2} end
    return {3, card, terminal, frauds}
  end
  redis.call('APPEND', card_key, struct.pack('<dd', t, tonumber(amount)))
  redis.call('APPEND', terminal_key, struct.pack('<d', t))
  redis.call('HSET', record, 't', terminal_id, 'e', at, 'c', now)
  if early_labels then
    local early = redis.call('HGET', UNMATCHED, txid)
    if early then
      local fraud, arrived = string.match(early, '^([^:]*):(.*)$')
      if fraud == '1' then
        redis.call('ZADD', frauds_key, at, txid)
        redis.call('EXPIRE', frauds_key, TERMINAL_TTL_S)
      end
      redis.call('HSET', record, 'l', fraud, 'a', arrived)
      redis.call('HDEL', UNMATCHED, txid)
    end
  end
  redis.call('EXPIRE', card_key, CARD_TTL_S)
  redis.call('EXPIRE', terminal_key, TERMINAL_TTL_S)
  redis.call('EXPIRE', record, TERMINAL_TTL_S)
  indexed[#indexed + 1] = at
  indexed[#indexed + 1] = txid
  return {0, card, terminal, frauds}
end

-- The records of the batch go into the index in one ZADD per 256; then the records no window can need any
-- more (older than the batch's newest payment less the delay and the longest window) are deleted, a few per
-- payment at most.
local function index_and_prune(indexed, newest)
  local index = PREFIX .. 'tx-index'
  for first = 1, #indexed, 512 do
    redis.call('ZADD', index, unpack(indexed, first, math.min(first + 511, #indexed)))
  end
  redis.call('EXPIRE', index, TERMINAL_TTL_S)
  local stale = redis.call('ZRANGEBYSCORE', index, '-inf', string.format('%.17g', newest - DELAY_US - LONGEST_US),
                           'LIMIT', 0, PRUNE_RECORDS * #indexed / 2)
  for first = 1, #stale, 256 do
    local last, records = math.min(first + 255, #stale), {}
    for i = first, last do records[#records + 1] = PREFIX .. 'tx:' .. stale[i] end
    redis.call('DEL', unpack(records))
    redis.call('ZREM', index, unpack(stale, first, last))
  end
end

local replies, indexed, newest = {}, {}, -math.huge
local early_labels = redis.call('EXISTS', UNMATCHED) == 1
local now = tonumber(redis.call('TIME')[1])
local field = '([^\\31]*)\\31'
local fields = '^' .. string.rep(field, 4) .. '(.*)$'
for tx in string.gmatch(ARGV[1], '[^\\30]+') do
  local txid, card_id, terminal_id, at, amount = string.match(tx, fields)
  replies[#replies + 1] = observe(txid, card_id, terminal_id, at, amount, early_labels, indexed, now)
  newest = math.max(newest, tonumber(at))
end
if #indexed > 0 then index_and_prune(indexed, newest) end
return replies
"""


# After the features are computed: ARGV[1] the ids joined by \30, ARGV[2] their float32 rows end to end.
_REMEMBER = """
local width, i = tonumber(ARGV[3]), 0
for txid in string.gmatch(ARGV[1], '[^\\30]+') do
  redis.call('HSET', PREFIX .. 'tx:' .. txid, 'f', string.sub(ARGV[2], i * width + 1, (i + 1) * width))
  i = i + 1
end
return i
"""


def _lua_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _observe_script(longest_us: int, delay_us: int, namespace: str) -> str:
    constants = {"LONGEST_US": str(longest_us), "DELAY_US": str(delay_us), "PRUNE_RECORDS": str(PRUNE_RECORDS),
                 "STALE_CLAIM_S": str(STALE_CLAIM_S),
                 "CARD_TTL_S": str(longest_us // 10**6), "TERMINAL_TTL_S": str((delay_us + longest_us) // 10**6),
                 "UNMATCHED": _lua_string(f"{namespace}:labels:unmatched"), "PREFIX": _lua_string(f"{namespace}:")}
    return _with_constants(_OBSERVE, constants)


def _with_constants(script: str, constants: dict[str, str]) -> str:
    return re.sub(r"\b(" + "|".join(constants) + r")\b", lambda match: constants[match[1]], script)


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


class FeatureState:
    """The fraud workload's online state in one Redis database (see the module doc for the key layout)."""

    def __init__(self, client: Any, namespace: str, delay_days: int, definition: FeatureDefinition = FEATURES):
        self._redis = client
        self._ns = namespace
        self._delay_days = delay_days
        self._definition = definition
        longest_us = max(definition.windows_days) * NS_PER_DAY // _NS_PER_US
        self._terminal_span_us = longest_us + delay_days * NS_PER_DAY // _NS_PER_US
        self._observe = _observe_script(longest_us, delay_days * NS_PER_DAY // _NS_PER_US, namespace)
        self._remember = _with_constants(_REMEMBER, {"PREFIX": _lua_string(f"{namespace}:")})
        # Redis names scripts by SHA-1: computed once here, not on every call of the request path.
        self._shas = {script: hashlib.sha1(script.encode()).hexdigest()  # noqa: S324
                      for script in (self._observe, self._remember)}

    def observe(self, transactions: Sequence[RawTransaction]) -> Observed:
        """Features of each transaction, counting each transaction id once in its card's and terminal's
        state: a repeated id (in this batch or any earlier one) gets the same features again."""
        first: dict[str, RawTransaction] = {}
        for tx in transactions:
            first.setdefault(tx.transaction_id, tx)
        unique = list(first.values())
        replies = self._observe_all(unique)
        features = self._features(unique, replies)
        fresh = [(tx, row) for tx, reply, row in zip(unique, replies, features, strict=True)
                 if int(reply[0]) in (_FRESH, _ORPHANED)]
        if fresh:
            ids = "\x1e".join(tx.transaction_id for tx, _ in fresh)
            rows_bytes = b"".join(row.tobytes() for _, row in fresh)
            self._call(self._remember, ids, rows_bytes, features.shape[1] * features.itemsize)
        index = {tx.transaction_id: i for i, tx in enumerate(unique)}
        rows = [index[tx.transaction_id] for tx in transactions]
        repeated = [int(replies[i][0]) in (_KNOWN, _ORPHANED) or first[tx.transaction_id] is not tx for i, tx in zip(
            rows, transactions, strict=True)]
        return Observed(features[rows], np.array(repeated, dtype=bool))

    def record_labels(self, labels: Sequence[tuple[str, bool]], arrival_ns: int) -> LabelReport:
        """Store delayed labels: each counts in its terminal's risk from then on; repeats count once."""
        records = self._run(lambda pipe: [pipe.hmget(self._key("tx", txid), ["t", "e", "l"]) for txid, _ in labels])
        counts = {"stored": 0, "repeated": 0, "corrected": 0}
        unmatched: list[str] = []

        def write(pipe: Any) -> None:
            for (txid, fraud), (terminal, event_us, previous) in zip(labels, records, strict=True):
                value = b"1" if fraud else b"0"
                if terminal is None:
                    unmatched.append(txid)
                    pipe.hset(self._key("labels", "unmatched"), txid, f"{int(fraud)}:{arrival_ns}")
                    continue
                counts["stored" if previous is None else "repeated" if previous == value else "corrected"] += 1
                if previous == value:
                    continue
                frauds = self._key("frauds", terminal.decode())
                if fraud:  # and the frauds no window can hold any more go (observe reads only the others)
                    pipe.zadd(frauds, {txid: float(event_us)})
                    pipe.zremrangebyscore(frauds, "-inf", float(event_us) - self._terminal_span_us)
                    pipe.expire(frauds, self._terminal_span_us // 10**6)
                else:
                    pipe.zrem(frauds, txid)
                pipe.hset(self._key("tx", txid), mapping={"l": value, "a": arrival_ns})

        self._run(write)
        return LabelReport(**counts, unmatched=tuple(unmatched))

    def _features(self, transactions: Sequence[RawTransaction], replies: Sequence[Any]) -> np.ndarray:
        out = np.zeros((len(transactions), len(self._definition.names)), dtype=np.float32)
        fresh: list[int] = []
        replies = list(replies)
        for i, (tx, reply) in enumerate(zip(transactions, replies, strict=True)):
            code = int(reply[0])
            if code == _FRESH:
                fresh.append(i)
            elif code == _ORPHANED:  # its history holds the payment itself: leave it out, as when it came
                fresh.append(i)
                replies[i] = _without_own_payment(reply, tx)
            elif code == _KNOWN:
                out[i] = np.frombuffer(reply[1], dtype=np.float32)
            else:
                raise RequestInFlight(f"transaction {tx.transaction_id!r} is being scored by another request; "
                                      "retry it")
        if fresh:
            event_ns = np.array([transactions[i].event_ns for i in fresh], dtype=np.int64)
            amounts = np.array([transactions[i].amount for i in fresh], dtype=np.float64)
            history = _batch_history([replies[i] for i in fresh])
            totals = batch_window_totals(event_ns, history, self._delay_days, self._definition)
            out[fresh] = feature_matrix(event_ns, amounts, totals, self._definition)
        return out

    def _observe_all(self, transactions: Sequence[RawTransaction]) -> list[Any]:
        if not transactions:
            return []
        if any(_SEPARATORS.intersection(tx.transaction_id) for tx in transactions):
            raise ValueError("a transaction_id must not contain the control characters \\x1e or \\x1f")
        batch = "\x1e".join(f"{tx.transaction_id}\x1f{tx.customer_id}\x1f{tx.terminal_id}\x1f"
                             f"{tx.event_ns // _NS_PER_US}\x1f{tx.amount!r}" for tx in transactions)
        return list(self._call(self._observe, batch))

    def _call(self, script: str, *args: object) -> Any:
        """Run a script by its SHA-1, loading it first when Redis does not know it (a restarted or flushed
        Redis forgets scripts): one round trip in the usual case."""
        import redis

        sha = self._shas[script]
        try:
            return self._run(lambda pipe: pipe.evalsha(sha, 0, *args))[0]
        except StateStoreUnavailable as exc:
            if not isinstance(exc.__cause__, redis.exceptions.NoScriptError):
                raise
        return self._run(lambda pipe: (pipe.script_load(script), pipe.evalsha(sha, 0, *args)))[1]

    def _run(self, queue: Any) -> list[Any]:
        import redis

        try:
            pipe = self._redis.pipeline(transaction=False)
            queue(pipe)
            return list(pipe.execute())
        except redis.RedisError as exc:
            raise StateStoreUnavailable(f"the feature state store (Redis) is unavailable: {exc}") from exc

    def _key(self, kind: str, name: object) -> str:
        return f"{self._ns}:{kind}:{name}"


def _without_own_payment(reply: Sequence[Any], tx: RawTransaction) -> list[Any]:
    """An orphaned transaction's reply without its own entry (the last one equal to it) in the card's and the
    terminal's history: the history it was first scored with, but for a payment of the same card at the very
    same microsecond that arrived after it."""
    at_us = float(tx.event_ns // _NS_PER_US)
    card = _drop_last(reply[1], struct.pack("<dd", at_us, tx.amount), 16)
    return [reply[0], card, _drop_last(reply[2], struct.pack("<d", at_us), 8), reply[3]]


def _drop_last(blob: bytes, entry: bytes, size: int) -> bytes:
    for offset in range(len(blob) - size, -1, -size):
        if blob[offset:offset + size] == entry:
            return blob[:offset] + blob[offset + size:]
    return blob


def _batch_history(replies: Sequence[Any]) -> BatchHistory:
    """Every fresh payment's card and terminal history, as the script returned them, end to end: one
    `np.frombuffer` per kind for the whole batch rather than one per payment."""
    cards, terminals = [reply[1] for reply in replies], [reply[2] for reply in replies]
    pairs = np.frombuffer(b"".join(cards), dtype="<f8").reshape(-1, 2)
    terminal_us = np.frombuffer(b"".join(terminals), dtype="<f8")
    fraud_us = [[float(score) for score in reply[3][1::2]] for reply in replies]
    rows = np.arange(len(replies))
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

