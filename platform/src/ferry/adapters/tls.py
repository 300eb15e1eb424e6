"""The one TLS context of a process, for every httpx client ferry makes (`verify=tls_context()`).

httpx builds a new `ssl.SSLContext` for each client it makes, loading the whole CA bundle: ~20 ms of CPU, even
for a plain-http loopback URL that never uses it. `httpx.get` makes a client per call, so a readiness loop that
polls every 0.25 s spent ~8 % of a core on CA bundles alone; with one context a client costs ~0.05 ms. The
context is httpx's own default (certifi's CAs, or SSL_CERT_FILE / SSL_CERT_DIR when set), made once.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    return httpx.create_ssl_context()
