"""Starting container steps warm: forked from a process that has already imported what steps import.

Each container step (data, evaluate, register, rollout) used to be a fresh `python -m ferry.cli.app step ...`
that spent 1.5-3 CPU-s importing mlflow, torch and pandas before its first line of work; `ferry up` runs twelve
of them, CI hundreds. A starter process (zygote.py) imports them once per set of runs and forks each step from
there. The step is still its own process: the same module run as `__main__`, arguments, environment, working
directory, log, stdin, title, its own session (the runner stops it by process group), its exit code or signal,
and the interpreter's exit (threads joined, atexit handlers, output flushed; not the module teardown, see
`zygote.run_as_main`). What it does not get is a new interpreter: its hash seed and what the imports computed
at import time come from the starter, whose environment is the step's own less FERRY_OUTPUTS_DIR (a starter is
shared only by steps whose environment is otherwise the same). On a cluster each step is a pod; this is the
local runner's way of starting the same command.

A starter lives while a run that may use it does (`lease`; `ferry up` takes one while its services start, see
`ferry.local.reconcile`), then LINGER_S for the next run, and longer only while its steps run. If it cannot
start, steps start as fresh processes and their log says why. FERRY_WARM_STEPS=false turns it off.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from typing import IO

from ferry.contract import names
from ferry.local.errors import LocalError

READY_TIMEOUT_S = 120.0
START_TIMEOUT_S = 30.0
PER_ATTEMPT_ENV = (names.OUTPUTS_DIR_ENV,)
STARTER_ARGV = (sys.executable, "-m", "ferry.local.engine.zygote")
# A process that runs one Workflow after another (the alert receiver's retraining, tests) keeps its starter
# this long after a run, instead of importing again for the next; a CLI's ends with it (end of its input).
LINGER_S = 60.0
LOST_EXIT = 255


class StarterUnavailable(LocalError):
    """The starter did not start or has gone: start the step as a fresh process."""


class WarmProcess:
    """A forked step, with the part of `subprocess.Popen` the executor uses (its parent is the starter)."""

    def __init__(self, args: list[str], pid: int) -> None:
        self.args, self.pid = args, pid
        self.returncode: int | None = None
        self.lost = False  # it ended after its starter did, which alone could say how
        self._ended = threading.Event()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._ended.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def _end(self, returncode: int, lost: bool = False) -> None:
        self.lost = lost
        self.returncode = returncode
        self._ended.set()


class Starter:
    """One starter process and the steps it forked; its replies are read by a thread that ends with it."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self.leases = 0
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._starting: dict[str, tuple[Future[WarmProcess], list[str]]] = {}
        self._running: dict[int, WarmProcess] = {}
        self._ready: Future[None] = Future()
        self._proc = subprocess.Popen(list(STARTER_ARGV), env=env, cwd=cwd,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        assert self._proc.stdout is not None
        threading.Thread(target=self._read, args=(self._proc.stdout,), name="ferry-step-starter",
                         daemon=True).start()

    def start(self, module: str, args: list[str], env: dict[str, str], cwd: str, log: str) -> WarmProcess:
        try:
            self._ready.result(READY_TIMEOUT_S)
        except Exception as exc:
            raise StarterUnavailable(f"the step starter is not ready: {exc}") from exc
        request_id = str(next(self._ids))
        started: Future[WarmProcess] = Future()
        line = json.dumps({"id": request_id, "module": module, "args": args, "env": env, "cwd": cwd, "log": log})
        with self._lock:
            self._starting[request_id] = (started, [module, *args])
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write(line.encode() + b"\n")
                self._proc.stdin.flush()
            except (OSError, ValueError) as exc:
                del self._starting[request_id]
                raise StarterUnavailable(f"the step starter has gone: {exc}") from exc
        try:
            return started.result(START_TIMEOUT_S)
        except Exception as exc:
            raise StarterUnavailable(f"the step starter did not fork the step: {exc}") from exc

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        """End of input: the starter exits once the steps it forked have ended (it does not stop them)."""
        with contextlib.suppress(OSError, ValueError):
            assert self._proc.stdin is not None
            self._proc.stdin.close()

    def _read(self, replies: IO[bytes]) -> None:
        for raw in replies:
            kind, *fields = raw.decode().strip().split(" ", 2)
            if kind == "ready":
                self._ready.set_result(None)
            elif kind == "failed":
                self._ready.set_exception(StarterUnavailable(" ".join(fields).strip()))
            elif kind == "started":
                self._started(fields[0], int(fields[1]))
            elif kind == "exited":
                with self._lock:
                    process = self._running.pop(int(fields[0]))
                process._end(int(fields[1]))
        self._gone()

    def _started(self, request_id: str, pid: int) -> None:
        """A child's end is always reported after its start, and a reused pid only after the earlier child's end."""
        with self._lock:
            waiting, argv = self._starting.pop(request_id)
            process = self._running[pid] = WarmProcess(argv, pid)
        waiting.set_result(process)

    def _gone(self) -> None:
        """The starter exited: nothing more can start, and a step still running has lost who reports its end."""
        lost = StarterUnavailable("the step starter exited")
        with self._lock:
            if not self._ready.done():
                self._ready.set_exception(lost)
            for waiting, _ in self._starting.values():
                waiting.set_exception(lost)
            self._starting.clear()
            orphans = list(self._running.values())
        for process in orphans:  # still running, or the starter was killed before it could say how they ended
            threading.Thread(target=_end_when_gone, args=(process,), name="ferry-step-orphan", daemon=True).start()
        self._proc.wait()


def _end_when_gone(process: WarmProcess) -> None:
    """Wait for a step that is no longer our starter's child to end (a pidfd works for any process)."""
    with contextlib.suppress(ProcessLookupError):  # already gone
        pidfd = os.pidfd_open(process.pid)
        try:
            select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
    process._end(LOST_EXIT, lost=True)


def starter_env(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in PER_ATTEMPT_ENV}


def env_key(env: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(starter_env(env), sort_keys=True).encode()).hexdigest()


class Lease:
    """What one run holds: the starters its steps used, kept up until the run ends."""

    def __init__(self, registry: _Starters) -> None:
        self._registry = registry
        self.starters: dict[str, Starter] = {}

    def starter(self, env: dict[str, str], cwd: str) -> Starter:
        return self._registry.acquire(self, env, cwd)


class _Starters:
    """This process's starters by environment, shared by the runs that lease them (`ferry up` runs every model's
    Workflow at once) and closed LINGER_S after the last of those runs ends, unless another leased it again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[str, Starter] = {}

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        lease = Lease(self)
        try:
            yield lease
        finally:
            self._release(lease)

    def acquire(self, lease: Lease, env: dict[str, str], cwd: str) -> Starter:
        key = env_key(env)
        with self._lock:
            if key in lease.starters:
                return lease.starters[key]
            starter = self._by_key.get(key)
            if starter is None or not starter.alive():
                starter = self._by_key[key] = Starter(starter_env(env), cwd)
            starter.leases += 1
            lease.starters[key] = starter
            return starter

    def _release(self, lease: Lease) -> None:
        with self._lock:
            for key, starter in lease.starters.items():
                starter.leases -= 1
                if starter.leases == 0:
                    timer = threading.Timer(LINGER_S, self._close_unused, (key, starter))
                    timer.daemon = True
                    timer.start()

    def _close_unused(self, key: str, starter: Starter) -> None:
        with self._lock:
            if starter.leases > 0:
                return
            if self._by_key.get(key) is starter:
                del self._by_key[key]
        starter.close()


STARTERS = _Starters()
