"""The feature state's pipeline client (fraud_detection.resp): what it sends, which replies it calls errors, and
that a store it cannot reach is `StateStoreUnavailable`, never a bare socket error."""

from __future__ import annotations

import socket
import threading

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


def test_a_call_that_must_not_be_repeated_is_not_sent_on_a_connection_the_store_closed() -> None:
    """A restarted Redis closed the pooled connection while it was idle: the next call, even one that is not
    safe to repeat (a claim), goes out on a new connection instead of failing on the old one."""
    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(5)  # bounded: a call that never connects again fails the test instead of hanging it
        pipe = Pipe({"host": "127.0.0.1", "port": server.getsockname()[1], "socket_timeout": 5.0})

        def answer_once(reply: bytes) -> None:
            connection, _ = server.accept()
            accepted.append(connection)
            assert connection.recv(1024).startswith(b"*1\r\n$4\r\nPING")
            connection.sendall(reply)

        thread = threading.Thread(target=answer_once, args=(b"+PONG\r\n",), daemon=True)
        thread.start()
        assert pipe.execute([("PING",)], repeatable=True) == [b"PONG"]
        thread.join(5)
        accepted[0].close()  # the store went away and came back: the idle connection is closed
        thread = threading.Thread(target=answer_once, args=(b"+PONG again\r\n",), daemon=True)
        thread.start()
        assert pipe.execute([("PING",)]) == [b"PONG again"]
        thread.join(5)
        assert len(accepted) == 2
        for connection in accepted:
            connection.close()
        pipe.close()
