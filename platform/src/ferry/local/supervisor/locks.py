"""Exclusive file locks under `.ferry/locks/`: what two ferry processes on one machine must not do at once
(start the local services, reconcile or serve one model, hold one of Argo's synchronization mutexes).

fcntl locks die with their process, so a killed process never leaves a stale lock behind. The holder
writes its pid into the file only so that a waiting process can say whom it waits for.
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


def _holder(handle: int) -> str | None:
    """Who holds the lock, or None while that is not known: the holder writes its pid just after it takes
    the lock, so a waiter can read an empty file, or the pid of a holder that has since exited."""
    with contextlib.suppress(OSError, ValueError):
        pid = int(os.pread(handle, 64, 0).decode(errors="replace").strip())
        if Path(f"/proc/{pid}").exists():
            return f"pid {pid}{_command(pid)}"
    return None


def _command(pid: int) -> str:
    """`, `<its command line>``, shortened, so a waiting user sees which command holds the lock."""
    try:
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return ""
    if argv and Path(argv[0]).name.startswith("python"):
        argv = argv[1:]
    if argv[:1] == ["-m"]:
        argv = argv[1:]
    if argv:
        argv[0] = "ferry" if argv[0] == "ferry.cli.app" else Path(argv[0]).name
    text = " ".join(argv)
    return f", `{text[:80]}`" if text else ""


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
    tries = 0
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            tries += 1
            holder = _holder(handle)
            if time.monotonic() >= deadline:
                waited = f" after waiting {timeout_s:.0f}s" if timeout_s else ""
                raise LocalError(f"{what} is held by {holder or 'another process'}{waited}: let that run finish "
                                 "(`ferry runs` shows it) or stop that process, then try again") from None
            # One more poll before saying "another process": the holder may not have written its pid yet.
            if on_wait and not told and (holder or tries > 1):
                on_wait(f"Waiting for {what} (held by {holder or 'another process'})")
                told = True
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
