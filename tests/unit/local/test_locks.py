"""The waiting message of `locks.exclusive`: it names the holder once the holder has written its pid, and does
not blame "another process" for the instant between the holder taking the lock and writing its pid."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from ferry.local.errors import LocalError
from ferry.local.supervisor import locks


def _held_by_other_handle(path: Path, content: bytes) -> int:
    """A second open file description on the same file holds the lock: flock treats it as another holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.ftruncate(handle, 0)
    os.pwrite(handle, content, 0)
    return handle


def test_a_waiter_names_the_live_holder_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "POLL_S", 0.05)
    path = tmp_path / "held.lock"
    handle = _held_by_other_handle(path, f"{os.getpid()}\n".encode())
    waits: list[str] = []
    try:
        with pytest.raises(LocalError, match=rf"held by pid {os.getpid()}"), \
                locks.exclusive(path, what="the test lock", timeout_s=0.3, on_wait=waits.append):
            pass
    finally:
        os.close(handle)
    assert len(waits) == 1 and waits[0].startswith(f"Waiting for the test lock (held by pid {os.getpid()}")


@pytest.mark.parametrize("content", [b"", b"999999999\n"], ids=["pid-not-written-yet", "pid-of-an-exited-holder"])
def test_an_unknown_holder_is_named_only_after_a_second_poll(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             content: bytes) -> None:
    polls: list[float] = []
    monkeypatch.setattr(locks.time, "sleep", polls.append)
    path = tmp_path / "held.lock"
    handle = _held_by_other_handle(path, content)
    waits: list[tuple[int, str]] = []
    try:
        with pytest.raises(LocalError, match="held by another process after waiting"), \
                locks.exclusive(path, what="the test lock", timeout_s=0.5,
                                on_wait=lambda line: waits.append((len(polls), line))):
            pass
    finally:
        os.close(handle)
    assert waits and waits[0][0] >= 1, "the first poll must not yet blame an unknown holder"
    assert waits == [(waits[0][0], "Waiting for the test lock (held by another process)")]


def test_the_lock_is_taken_once_the_holder_lets_go(tmp_path: Path) -> None:
    path = tmp_path / "free.lock"
    os.close(_held_by_other_handle(path, b""))
    with locks.exclusive(path, what="the test lock", timeout_s=0):
        assert path.read_text().strip() == str(os.getpid())
