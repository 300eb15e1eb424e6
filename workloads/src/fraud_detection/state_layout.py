"""The feature state's layout in Redis: key names, the transaction record, history entries, expiries and the
few Lua scripts that must be atomic: a single payment's claim, and the rare paths and upkeep that batches leave to
a script (see fraud_detection.state)."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

# A transaction's record: event time (us), when it was counted (s, Redis' clock), its label (b"-" until one
# arrives), the label's arrival (ns) and its terminal; then whether its features are stored (FEATURES_STORED)
# and room for them. The claim writes the whole length at once: Redis grows a string it extends in place to
# twice its size, which for a record would waste as much memory as it holds.
RECORD = struct.Struct("<ddcqq")
FEATURES_STORED = b"1"
LABEL = struct.Struct("<cq")
LABEL_AT = 16  # offset of LABEL in RECORD
NO_LABEL = b"-"
CARD_ENTRY, TERMINAL_ENTRY = struct.Struct("<dd"), struct.Struct("<d")  # (time us, amount), (time us)
TRIM_FRACTION = 8  # a history is rewritten once an eighth of it has aged out, not at every payment
PRUNE_RECORDS = 8  # records deleted per new record at most: more than the one each payment adds
# A transaction counted without its features stored for this long lost its scorer (killed, or Redis went away
# between the round trips): a repeat then recomputes them instead of answering "in flight" forever. Far above any
# request's timeout (serving.limits.timeout_s is at most 30 s).
STALE_CLAIM_S = 60


@dataclass(frozen=True)
class Keys:
    """Every key of one namespace (one model's state)."""

    namespace: str

    def record(self, txid: str) -> str:
        return f"{self.namespace}:rec:{txid}"

    def card(self, customer_id: int) -> str:
        return f"{self.namespace}:card:{customer_id}"

    def terminal(self, terminal_id: int) -> str:
        return f"{self.namespace}:terminal:{terminal_id}"

    def frauds(self, terminal_id: object) -> str:
        return f"{self.namespace}:frauds:{terminal_id}"

    @property
    def index(self) -> str:
        return f"{self.namespace}:tx-index"

    @property
    def unmatched(self) -> str:
        return f"{self.namespace}:labels:unmatched"


# KEYS: histories to trim; ARGV: per key its entry size and the oldest time (us) a window can still need. Only the
# aged prefix goes (markers, negative, count as aged): a payment that arrived meanwhile is never cut.
TRIM = """
for i, key in ipairs(KEYS) do
  local size, oldest = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local blob = redis.call('GET', key)
  if blob then
    local cut = 0
    while cut + size <= #blob and struct.unpack('<d', blob, cut + 1) <= oldest do cut = cut + size end
    if cut > 0 then redis.call('SET', key, string.sub(blob, cut + 1), 'KEEPTTL') end
  end
end
return #KEYS
"""

# KEYS[1]: the index; ARGV: the record key prefix, the horizon (us: older records no window can need), the index's
# expiry, how many to delete at most, then (event time, id) pairs of the new records.
INDEX = """
local index, prefix = KEYS[1], ARGV[1]
for first = 5, #ARGV, 512 do
  redis.call('ZADD', index, unpack(ARGV, first, math.min(first + 511, #ARGV)))
end
redis.call('EXPIRE', index, ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', index, '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
for first = 1, #stale, 256 do
  local last, records = math.min(first + 255, #stale), {}
  for i = first, last do records[#records + 1] = prefix .. stale[i] end
  redis.call('DEL', unpack(records))
  redis.call('ZREM', index, unpack(stale, first, last))
end
return #stale
"""

# KEYS[1]: a stale claim's record; ARGV: the record as read, the new claim time (8 bytes). Compare and set: of two
# requests that found the claim stale, one takes it over.
TAKE_OVER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SETRANGE', KEYS[1], 8, ARGV[2])
return 1
"""

# One payment alone (a single request) in one round trip instead of two: KEYS: its record, card, terminal, the
# terminal's frauds, the unmatched labels; ARGV: the record (as the claim writes it), its expiry, the card's and the
# terminal's entry, the frauds' lower bound (exclusive, "(<us>"), the transaction id. Redis' clock, then the record
# there was (a repeat: nothing else is done), or the payment claimed and appended atomically, as the batch path's
# claim and MULTI/EXEC do, with what its features need: each history's length after the append and the history,
# the frauds, and a label that came first. A script per payment costs Redis more than the pipelined commands of a
# batch, so batches keep those.
CLAIM_ONE = """
local clock = redis.call('TIME')
local record = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'GET', 'EX', ARGV[2])
if record then return {clock, record} end
local card_length = redis.call('APPEND', KEYS[2], ARGV[3])
local terminal_length = redis.call('APPEND', KEYS[3], ARGV[4])
return {clock, false, card_length, terminal_length, redis.call('GET', KEYS[2]), redis.call('GET', KEYS[3]),
        redis.call('ZRANGEBYSCORE', KEYS[4], ARGV[5], '+inf', 'WITHSCORES'), redis.call('HGET', KEYS[5], ARGV[6])}
"""

SCRIPTS = (TRIM, INDEX, TAKE_OVER, CLAIM_ONE)
SHAS = {script: hashlib.sha1(script.encode()).hexdigest() for script in SCRIPTS}  # noqa: S324 - Redis names them so
