"""Pipelines of plain Redis commands for the feature state's request path: a batch's hundreds of commands packed
in one `bytes.join` and its replies parsed by hiredis' C reader.

redis-py's own pipeline spends several microseconds of Python on each command it packs and each reply it reads;
a batch of 256 payments is about a thousand commands, which made the client, not Redis, the cost. This is that
pipeline without the per-command Python: a small pool of sockets made from a `redis.Redis` client's own
settings (host, port, credentials, database, timeouts), scripts loaded on each new connection, and one retry on
a fresh connection for calls that are safe to repeat. Everything else (labels, tests, the CLI) uses redis-py.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import hiredis

from ferry.contract.errors import StateStoreUnavailable

Arg = bytes | str | int | float
Command = tuple[Arg, ...]


def pack(commands: Iterable[Command]) -> bytes:
    """RESP arrays of bulk strings, as Redis reads them (hiredis packs each command in C)."""
    # hiredis' stub types its argument as a one-element tuple; it takes any tuple of arguments.
    return b"".join([hiredis.pack_command(command) for command in commands])  # type: ignore[arg-type]


class ReplyFailed(StateStoreUnavailable):
    """Redis answered a command with an error (out of memory, a wrong type, a script it does not know)."""


class _Connection:
    def __init__(self, settings: dict[str, Any], scripts: Sequence[str]) -> None:
        host, port = settings.get("host", "127.0.0.1"), int(settings.get("port", 6379))
        timeout = settings.get("socket_timeout")
        self.sock = socket.create_connection((host, port), timeout=settings.get("socket_connect_timeout") or timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()
        setup: list[Command] = []
        if settings.get("password"):
            user = settings.get("username")
            setup.append(("AUTH", user, settings["password"]) if user else ("AUTH", settings["password"]))
        if settings.get("db"):
            setup.append(("SELECT", settings["db"]))
        setup += [("SCRIPT", "LOAD", script) for script in scripts]
        for reply in self.execute(setup):
            if isinstance(reply, Exception):
                self.close()
                raise ReplyFailed(f"the feature state store (Redis) is unavailable: it refused the connection: {reply}")

    def execute(self, commands: Sequence[Command]) -> list[Any]:
        if not commands:
            return []
        self.sock.sendall(pack(commands))
        replies: list[Any] = []
        while len(replies) < len(commands):
            reply = self.reader.gets()
            if reply is False:
                chunk = self.sock.recv(1 << 18)
                if not chunk:
                    raise ConnectionError("Redis closed the connection")
                self.reader.feed(chunk)
                continue
            replies.append(reply)
        return replies

    def closed_by_peer(self) -> bool:
        """Whether Redis closed this idle connection (it restarted, or dropped idle clients): an idle connection
        has nothing to read, so anything readable (end of file, an error, a stray reply) means it is not usable."""
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return bool(poller.poll(0))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Pipe:
    """Thread-safe: each call takes an idle connection (or makes one) and gives it back after."""

    def __init__(self, settings: dict[str, Any], scripts: Sequence[str] = ()) -> None:
        self._settings, self._scripts = dict(settings), tuple(scripts)
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def like(cls, client: Any, scripts: Sequence[str] = ()) -> Pipe:
        """A pipe to the server a redis-py client talks to, with the same credentials and timeouts."""
        return cls(client.connection_pool.connection_kwargs, scripts)

    def execute(self, commands: Sequence[Command], repeatable: bool = False) -> list[Any]:
        """Every command's reply, in order; an error reply is returned as an exception value, not raised.
        `repeatable`: a call that failed on a connection made earlier (one a restarted Redis closed) is sent once
        more on a new one; only for calls whose effect does not depend on whether the first one ran."""
        connection = self._idle_connection()
        for attempt in (0, 1):
            reused = connection is not None
            try:
                if connection is None:
                    connection = _Connection(self._settings, self._scripts)
                replies = self._with_scripts(connection, commands)
            except (OSError, ConnectionError, EOFError, hiredis.ProtocolError) as exc:
                if connection is not None:
                    connection.close()
                connection = None
                if attempt == 0 and reused and repeatable:
                    continue
                raise StateStoreUnavailable(f"the feature state store (Redis) is unavailable: {exc}") from exc
            except BaseException:
                if connection is not None:
                    connection.close()
                raise
            with self._lock:
                self._idle.append(connection)
            return replies
        raise AssertionError("unreachable")

    def _idle_connection(self) -> _Connection | None:
        """An idle connection Redis has not closed, or None: a call that must not be sent twice (a claim) then
        never fails on a connection that a restarted Redis dropped while it was idle."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None or not connection.closed_by_peer():
                return connection
            connection.close()

    def _with_scripts(self, connection: _Connection, commands: Sequence[Command]) -> list[Any]:
        # A Redis that was flushed (SCRIPT FLUSH) while this connection lived forgot the scripts loaded on it.
        replies = connection.execute(commands)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, Exception) and str(reply).startswith(
            "NOSCRIPT")]
        if missing:
            connection.execute([("SCRIPT", "LOAD", script) for script in self._scripts])
            for i, reply in zip(missing, connection.execute([commands[i] for i in missing]), strict=True):
                replies[i] = reply
        return replies

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()


def raise_errors(replies: Iterable[Any], depth: int = 2) -> None:
    """Raise the first error reply as the store being unavailable: a command's own, or one of an EXEC's commands
    (one level down; the arrays commands return hold no errors)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise ReplyFailed(f"the feature state store (Redis) is unavailable: it answered an error: {reply}")
        if depth > 1 and isinstance(reply, list):
            raise_errors(reply, depth - 1)
