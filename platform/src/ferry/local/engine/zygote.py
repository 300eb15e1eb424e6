"""The warm step starter's own process (`python -m ferry.local.engine.zygote`): imports what `ferry step ...`
imports once, then forks a child per container step, which becomes that step as `python -m ferry.cli.app ...`
would (its own session, environment, working directory, log as stdout and stderr, stdin from /dev/null).

A fresh interpreter per step spent 1.5-3 CPU-s importing the ML stack before any work, on every step of every run
(docs/benchmarks/up.md counts it as overhead). The parent side, and why this is the same step, is in warm.py.

Protocol, one JSON or text line each way over stdin/stdout:
- it writes `ready` once its imports are done (`failed <why>` and exits if they fail);
- a request `{"id", "module", "args", "env", "cwd", "log"}` is answered `started <id> <pid>`;
- each child's end is reported `exited <pid> <returncode>` (negative: killed by that signal, as Popen says);
- at the end of stdin it reports the children still running as they end, then exits (they are not stopped).
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import importlib
import json
import os
import select
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any, NoReturn


def preload() -> None:
    """What container steps import (ferry.steps.runner imports one step's module per process): the CLI, every
    container step's module, and the workloads' entry points (the model code evaluate and register load)."""
    from ferry.contract import names

    importlib.import_module("ferry.cli.app")
    step_modules = importlib.import_module("ferry.steps.runner").STEP_MODULES  # by name: local does not import steps
    for step in names.CONTAINER_STEPS:
        importlib.import_module(step_modules[step])
    from ferry.adapters.workloads import workload_facts

    workload_facts()  # loads every installed workload's entry point


def main() -> None:
    reply = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # what an import prints must not reach the protocol
    try:
        preload()
    except Exception as exc:
        reply.write(f"failed {type(exc).__name__}: {exc}".replace("\n", " ") + "\n")
        sys.exit(1)
    sys.stdout.flush()
    gc.freeze()  # the steps' collections then never visit, and so never copy, what the starter imported
    reply.write("ready\n")
    request = serve(sys.stdin.fileno(), reply)
    reply.close()
    become(request)


def serve(requests: int, reply: Any) -> dict[str, Any]:
    """Fork a child per request and report every child's end; returns only in a child, with its request."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that SIGCHLD writes to the wakeup fd
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops steps; a terminal's Ctrl-C is not for us
    children: set[int] = set()
    pending = b""
    open_input = True
    while open_input or children:
        readable, _, _ = select.select([requests, wake_r] if open_input else [wake_r], [], [])
        if wake_r in readable:
            os.read(wake_r, 4096)
        _report_ended(children, reply)
        if requests not in readable:
            continue
        chunk = os.read(requests, 1 << 20)
        open_input = bool(chunk)
        *lines, pending = (pending + chunk).split(b"\n")
        for line in filter(None, lines):
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                for fd in (wake_r, wake_w, requests):
                    os.close(fd)
                return dict(request)
            children.add(pid)
            reply.write(f"started {request['id']} {pid}\n")
    sys.exit(0)


def _report_ended(children: set[int], reply: Any) -> None:
    for pid in list(children):
        ended, status = os.waitpid(pid, os.WNOHANG)
        if ended:
            children.discard(pid)
            reply.write(f"exited {pid} {os.waitstatus_to_exitcode(status)}\n")


def become(request: dict[str, Any]) -> NoReturn:
    """In the child: the step's session, environment, folder, files and title, then its module as `__main__`."""
    import setproctitle

    # What `ps` shows: the command a fresh process would have had, not the starter's. (Before the
    # environment is replaced: setproctitle finds the argv area through it.)
    setproctitle.setproctitle(shlex.join([sys.executable, "-m", request["module"], *request["args"]]))
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _reseed()
    sys.argv = [request["module"], *request["args"]]
    os._exit(run_as_main(request["module"]))


def run_as_main(module: str) -> int:
    """Run `module` as `python -m` does and end as the interpreter ends, without the module teardown (end_as_main)."""
    import runpy

    # runpy warns that the module it runs as __main__ was imported already: the starter preloads it on purpose.
    warnings.filterwarnings("ignore", message=r"'.*' found in sys.modules after import of package",
                            category=RuntimeWarning, module="runpy")
    return end_as_main(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True))


def end_as_main(program: Callable[[], object]) -> int:
    """Run `program` as the interpreter runs a script and end as the interpreter ends (non-daemon threads joined,
    atexit handlers run, output flushed), but without tearing the modules down: the caller then `os._exit`s with
    the returned code. The teardown touches every object: in a forked step it would copy every page shared with
    the starter (0.8 CPU-s a step, measured, against 0.08 s for the whole fork without it), and in a fresh
    process that imported torch, MLflow and Ray it takes about a second of wall time after the work is done."""
    try:
        program()
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code = 128 + signal.SIGINT
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    # What Py_FinalizeEx runs before the teardown skipped here, in its order. threading._shutdown, not a join of
    # each thread: it first runs the hooks that tell pools to stop (an executor left open, as MLflow's artifact
    # uploads leave theirs, keeps its idle workers waiting for work until its hook wakes them).
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _exit_code(code: object) -> int:
    """What the interpreter makes of `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _reseed() -> None:
    """A fresh process seeds numpy's global generator from the OS; a fork would share the starter's."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _fail(message: str) -> NoReturn:
    print(message, file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    if len(sys.argv) != 1:
        _fail("usage: python -m ferry.local.engine.zygote (started by the local runner; it reads requests on stdin)")
    main()
