"""HAProxy for the local head's high-throughput ingress (`FERRY_LOCAL_INGRESS=haproxy`, the default), kept on
loopback, with the connection rules of `ferry-haproxy` (a replica connection closed after each answer, a
client's after a 413).

Ray 2.60's HAProxy config template binds the stats page and the Prometheus exporter to every interface
(`bind *:PORT`, `bind :PORT`; only their ports are settings), where every other listener of the local stack is on
127.0.0.1. Ray starts (and, for each reload, starts again) the binary RAY_SERVE_HAPROXY_BINARY_PATH names, with
`-f <the config it wrote>`. The local head names a script that runs this module: it rewrites those binds to the
loopback host under Ray's own lock on the file (Ray writes the file under that lock), refuses to start if any
bind would still listen beyond it, and then becomes the real HAProxy (exec), so Ray supervises the process it
started, with its own config path in the command line as it checks.

It also closes HAProxy's connections to a replica after each answer, as the cluster's HAProxy does
(`ferry.serving.haproxy_launch`, which says why).

Light to import (the standard library, ferry's error root and `haproxy_launch`): it runs at every start and
reload of HAProxy.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence

from ferry.contract.errors import FerryError
from ferry.serving.haproxy_launch import launch, with_connection_rules

# A bind with no address (`bind :9101`) or the wildcard (`bind *:8404`): every interface.
_ALL_INTERFACES = re.compile(r"^(?P<lead>[ \t]*bind[ \t]+)\*?:(?P<port>\d+)(?P<rest>[ \t].*)?$", re.MULTILINE)
_BIND_ADDRESS = re.compile(r"^[ \t]*bind[ \t]+(?P<address>\S+)", re.MULTILINE)


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


def loopback_and_closing(host: str) -> Callable[[str], str]:
    return lambda config: with_connection_rules(loopback_binds(config, host))


def main(argv: Sequence[str] | None = None) -> None:
    """`<real haproxy> <loopback host> <HAProxy's own arguments...>`, as the local head's script passes them."""
    real, host, *args = sys.argv[1:] if argv is None else argv
    try:
        launch(real, args, loopback_and_closing(host))
    except BindOffLoopback as exc:
        print(f"ferry: not starting HAProxy: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
