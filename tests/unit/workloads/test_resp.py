"""The feature state's pipeline client (fraud_detection.resp): what it sends, which replies it calls errors, and
that a store it cannot reach is `StateStoreUnavailable`, never a bare socket error."""

from __future__ import annotations

import socket

import hiredis
import pytest

from ferry.contract.errors import StateStoreUnavailable
from fraud_detection.resp import Pipe, ReplyFailed, pack, raise_errors


def test_commands_are_packed_as_resp_arrays_of_bulk_strings() -> None:
    assert pack([("SET", b"k\x00", 5, "NX"), ("MGET", "a")]) == (
        b"*4\r\n$3\r\nSET\r\n$2\r\nk\x00\r\n$1\r\n5\r\n$2\r\nNX\r\n*2\r\n$4\r\nMGET\r\n$1\r\na\r\n")


def test_an_error_reply_is_raised_at_the_top_or_inside_an_exec_only() -> None:
    error = hiredis.ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")
    with pytest.raises(ReplyFailed, match=r"unavailable.*WRONGTYPE"):
        raise_errors([b"OK", error])
    with pytest.raises(ReplyFailed):
        raise_errors([b"QUEUED", [b"OK", error]])
    raise_errors([[b"OK", [b"a value that merely looks odd"]], None, 3])


def test_a_store_that_is_not_there_is_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        pipe = Pipe({"host": "127.0.0.1", "port": port, "socket_timeout": 1.0})
        with pytest.raises(StateStoreUnavailable, match="unavailable"):
            pipe.execute([("PING",)], repeatable=True)
