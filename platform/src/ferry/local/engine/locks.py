"""Exclusive file locks under `.ferry/locks/`: Argo's synchronization mutex, on one machine.

fcntl locks die with their process, so a killed runner never leaves a stale lock behind. The holder
writes its pid into the file only so that a waiting runner can say whom it waits for.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from ferry.local.errors import LocalError
from ferry.settings import Settings

POLL_S = 0.5


def lock_path(settings: Settings, name: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    return settings.state_dir / "locks" / f"{safe}.lock"


def _holder(handle: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(handle, 64, 0).decode(errors="replace").strip()
        if text:
            return f"pid {text}"
    return "another process"


@contextlib.contextmanager
def exclusive(path: Path, *, what: str, timeout_s: float,
              on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock on `path`; wait at most `timeout_s` (0: fail at once if taken)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(handle, what=what, timeout_s=timeout_s, on_wait=on_wait)
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(handle)  # closing releases the lock


def _acquire(handle: int, *, what: str, timeout_s: float, on_wait: Callable[[str], None] | None) -> None:
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = _holder(handle)
            if time.monotonic() >= deadline:
                waited = f" after waiting {timeout_s:.0f}s" if timeout_s else ""
                raise LocalError(f"{what} is held by {holder}{waited}: let that run finish (`ferry runs` shows it) "
                                 "or stop that process, then try again") from None
            if on_wait and not told:
                on_wait(f"Waiting for {what} (held by {holder})")
                told = True
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
