"""The one exception local mode raises to its callers: a message a person can act on, never a traceback."""

from __future__ import annotations

from ferry.contract.errors import FerryError


class LocalError(FerryError):
    """Something in local mode failed in a way the user can fix (port taken, binary missing, bad workflow)."""
