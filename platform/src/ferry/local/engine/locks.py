"""Argo's synchronization mutex, on one machine: an exclusive file lock per mutex name.

The locks themselves live with the supervisor (`ferry.local.supervisor.locks`), the lowest layer that
needs them: it serialises the start of the local services with the same locks.
"""

from ferry.local.supervisor.locks import POLL_S, exclusive, lock_path

__all__ = ["POLL_S", "exclusive", "lock_path"]
