"""HAProxy for the local head's high-throughput ingress (`FERRY_LOCAL_INGRESS=haproxy`, the default), kept on
loopback, and closing its connections to a replica after each answer.

Ray 2.60's HAProxy config template binds the stats page and the Prometheus exporter to every interface
(`bind *:PORT`, `bind :PORT`; only their ports are settings), where every other listener of the local stack is on
127.0.0.1. Ray starts (and, for each reload, starts again) the binary RAY_SERVE_HAPROXY_BINARY_PATH names, with
`-f <the config it wrote>`. The local head names a script that runs this module: it rewrites those binds to the
loopback host under Ray's own lock on the file (Ray writes the file under that lock), refuses to start if any
bind would still listen beyond it, and then becomes the real HAProxy (exec), so Ray supervises the process it
started, with its own config path in the command line as it checks.

The same rewrite adds `option http-server-close` to the defaults: HAProxy then closes its connection to the replica
after each answer and keeps the client's. Without it, when the only replica is killed under load, HAProxy closes
the kept-alive connection of the client whose next request it has just read, with no answer: a client sees a
protocol error instead of the 500 or 408 that every other request in flight gets (measured in
tests/reliability/test_serving_reliability.py::test_replica_killed_under_load: one such request, sent 17-47 ms
after the kill, in each of eight runs, with Ray's `http-reuse always`, with `http-reuse never` and with `retry-on
empty-response` too; none in four runs with this option). The cost is a new loopback connection to the replica
per request.

Light to import (the standard library and ferry's error root): it runs at every start and reload of HAProxy.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import sys
from collections.abc import Sequence

from ferry.contract.errors import FerryError

# A bind with no address (`bind :9101`) or the wildcard (`bind *:8404`): every interface.
_ALL_INTERFACES = re.compile(r"^(?P<lead>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)(?P<rest>[ \t].*)?$", re.MULTILINE)
_BIND_ADDRESS = re.compile(r"^[ \t]*bind[ \t]+(?P<address>\S+)", re.MULTILINE)


_DEFAULTS = re.compile(r"^defaults[^\n]*\n", re.MULTILINE)
SERVER_CLOSE = "    option http-server-close\n"


class BindOffLoopback(FerryError):
    """A bind in HAProxy's config that would listen beyond the loopback host after the rewrite."""


def loopback_binds(config: str, host: str) -> str:
    """`config` with every all-interface bind moved to `host`; raises BindOffLoopback if a bind to another
    address remains (a new template line this rewrite does not know), rather than listen beyond loopback."""
    rewritten = _ALL_INTERFACES.sub(lambda m: f"{m['lead']}{host}:{m['port']}{m['rest'] or ''}", config)
    outside = [m["address"] for m in _BIND_ADDRESS.finditer(rewritten)
               if not (m["address"].startswith(f"{host}:") or m["address"].startswith(("/", "unix@", "abns@")))]
    if outside:
        raise BindOffLoopback(f"HAProxy's config binds {', '.join(outside)}, beyond {host}")
    return rewritten


def closing_server_connections(config: str) -> str:
    """`config` with `option http-server-close` first in its defaults section (once: a file Ray has not written
    again since the last rewrite already has it)."""
    if SERVER_CLOSE in config:
        return config
    return _DEFAULTS.sub(lambda m: m[0] + SERVER_CLOSE, config, count=1)


def config_path(args: Sequence[str]) -> str | None:
    """The file HAProxy's `-f` names (Ray passes one)."""
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return value
    return None


def rewrite(path: str, host: str) -> None:
    with open(f"{path}.lock", "a") as lock:  # Ray's lock file: it holds the same flock while it writes
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(path, encoding="utf-8") as config:
            text = config.read()
        rewritten = closing_server_connections(loopback_binds(text, host))
        if rewritten != text:
            with open(path, "w", encoding="utf-8") as config:
                config.write(rewritten)


def main(argv: Sequence[str] | None = None) -> None:
    """`<real haproxy> <loopback host> <HAProxy's own arguments...>`, as the local head's script passes them."""
    real, host, *args = sys.argv[1:] if argv is None else argv
    path = config_path(args)
    if path is not None and os.path.exists(path):
        try:
            rewrite(path, host)
        except BindOffLoopback as exc:
            print(f"ferry: not starting HAProxy: {exc}", file=sys.stderr)
            sys.exit(1)
    os.execv(real, [real, *args])  # noqa: S606 - becomes the HAProxy that Ray started, arguments as given


if __name__ == "__main__":
    main()
