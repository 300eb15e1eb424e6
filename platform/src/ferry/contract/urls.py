"""Which URLs point at this machine: `ferry replay` refuses any other, and the local supervisor keeps a proxy from
the environment away from them (it may be how a remote server is reached)."""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def is_loopback_url(url: str) -> bool:
    """The URL's host is localhost, in 127.0.0.0/8 or ::1."""
    host = urlsplit(url).hostname or ""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
