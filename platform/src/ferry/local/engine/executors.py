"""Running one attempt of a container template as a local subprocess, plus what all attempts share
(the attempt context, its result, output parameters, the per-step log file).

A container step runs its command with `ferry` replaced by this interpreter running `ferry.cli.app`,
in the checkout, with the user's environment + the template's env + `ferry_env` + FERRY_OUTPUTS_DIR, forked
from the run's warm starter (warm.py) or, with any other command or without one, as a new process.
Output parameters are read back the way Argo reads `valueFrom.path`: one file per parameter, here in
a per-attempt folder under `.ferry/runs/<workflow>/outputs/` named by the path's basename.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferry.contract import names
from ferry.local.engine.warm import Lease, StarterUnavailable, WarmProcess
from ferry.local.errors import LocalError
from ferry.local.supervisor.services import ferry_env
from ferry.settings import Settings

FERRY_MODULE = ("-m", "ferry.cli.app")
# HOME=/tmp exists for a read-only root filesystem: locally keep the user's. A local step runs in no container,
# so it has no image to record (`ferry lineage`).
POD_ONLY_ENV = {"HOME", names.IMAGE_ENV}
# What Ray writes into the environment of the process that uses it: importing ray sets RAY_CLIENT_MODE=0
# (ray/_private/client_mode_hook.py) and ray.init() points PYTHONBREAKPOINT at its driver's debugger hook
# (ray/_private/worker.py). `ferry up` does both while its runs go on (job submission, Serve deploys): that is
# Ray's state of this process, not the user's environment, so no step inherits it (and the warm starter of
# the steps before it still fits the steps after it, warm.env_key).
RAY_PROCESS_ENV = {"RAY_CLIENT_MODE": ("0",),
                   "PYTHONBREAKPOINT": ("ray.util.rpdb._driver_set_trace", "ray.util.rpdb.set_trace")}
INTERRUPTED = "interrupted: the runner stopped while this ran"
TERM_GRACE_S = 10.0


@dataclass
class Attempt:
    """Everything one attempt needs; `template` is already substituted."""

    settings: Settings
    workflow: str
    task: str
    index: int
    template: dict[str, Any]
    log_path: Path
    outputs_dir: Path
    stop: threading.Event
    deadline_s: float | None = None
    warm: Lease | None = None  # the run's warm step starters (warm.py); None: every step a fresh process


@dataclass
class AttemptResult:
    phase: str  # Succeeded | Failed | Error
    message: str = ""
    exit_code: int | None = None
    outputs: list[dict[str, str]] = field(default_factory=list)
    transient: bool = False  # for OnTransientError: could not start, or lost the connection


def local_command(command: list[str]) -> list[str]:
    """`ferry ...` runs as this interpreter's `-m ferry.cli.app` (the same install, no PATH lookup)."""
    if command and command[0] == "ferry":
        return [sys.executable, *FERRY_MODULE, *command[1:]]
    return list(command)


def step_env(settings: Settings, template_env: list[dict[str, Any]], outputs_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if v not in RAY_PROCESS_ENV.get(k, ())}
    env.update({e["name"]: str(e["value"]) for e in template_env
                if "value" in e and e["name"] not in POD_ONLY_ENV})
    env.update(ferry_env(settings))
    env[names.OUTPUTS_DIR_ENV] = str(outputs_dir)
    return env


def begin_log(attempt: Attempt, command: str) -> int:
    """Append this attempt's header to the step log; returns the offset where its output starts."""
    attempt.log_path.parent.mkdir(parents=True, exist_ok=True)
    with attempt.log_path.open("ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        log.write(f"==== {attempt.task} attempt {attempt.index} at {stamp}: {command}\n".encode())
        return log.tell()


def fresh_outputs_dir(path: Path) -> None:
    """An attempt never sees what a failed earlier attempt wrote."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)


def read_outputs(template: dict[str, Any], outputs_dir: Path,
                 json_values: dict[str, Any] | None = None) -> list[dict[str, str]]:
    """Output parameters: `valueFrom.path` from the attempt's folder, `jsonPath` from `json_values`."""
    result = []
    for param in (template.get("outputs") or {}).get("parameters", []):
        source = param.get("valueFrom") or {}
        value: str | None = None
        if "path" in source:
            file = outputs_dir / Path(source["path"]).name
            value = file.read_text(errors="replace").strip() if file.is_file() else None
        elif "jsonPath" in source and json_values is not None:
            value = _json_path(json_values, source["jsonPath"])
        if value is None:
            value = param.get("value", source.get("default"))
        if value is None:
            raise LocalError(f"output parameter {param['name']!r} was not written "
                             f"({outputs_dir / Path(source.get('path', '?')).name}) and has no default; "
                             "the step's log (`ferry logs RUN STEP`) says why")
        result.append({"name": param["name"], "value": str(value)})
    return result


def _json_path(obj: dict[str, Any], path: str) -> str | None:
    """The `{.a.b}` subset of kubectl JSONPath that resource templates use."""
    current: Any = obj
    for key in path.strip("{}").strip(".").split("."):
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
    return None if current is None else str(current)


def _last_line(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            lines = [ln.strip() for ln in handle.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def run_container(attempt: Attempt) -> AttemptResult:
    container = attempt.template["container"]
    argv = local_command(container["command"]) + [str(a) for a in container.get("args", [])]
    fresh_outputs_dir(attempt.outputs_dir)
    env = step_env(attempt.settings, container.get("env", []), attempt.outputs_dir)
    offset = begin_log(attempt, shlex.join(argv))
    proc: subprocess.Popen[bytes] | WarmProcess | None = _start_warm(attempt, argv, env)
    if proc is None:
        with attempt.log_path.open("ab") as log:
            try:
                proc = subprocess.Popen(argv, cwd=attempt.settings.home, env=env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:  # Argo's "Error": the pod never ran
                log.write(f"could not start {argv[0]}: {exc}\n".encode())
                return AttemptResult("Error", f"could not start {argv[0]}: {exc}", transient=True)
    outcome = _wait(proc, attempt)
    if outcome is not None:
        return outcome
    code = proc.wait()
    if isinstance(proc, WarmProcess) and proc.lost:
        return AttemptResult("Error", "its exit status was lost: the process that started it ended while it ran "
                             "(`ferry logs RUN STEP` says how far it got)", transient=True)
    if code == 0:
        try:
            return AttemptResult("Succeeded", exit_code=0, outputs=read_outputs(attempt.template, attempt.outputs_dir))
        except LocalError as exc:
            return AttemptResult("Error", str(exc), exit_code=0)
    if code < 0:
        name = signal.Signals(-code).name
        return AttemptResult("Failed", f"killed by {name}", exit_code=128 - code)
    detail = _last_line(attempt.log_path, offset)
    return AttemptResult("Failed", f"exit code {code}" + (f": {detail}" if detail else ""), exit_code=code)


def _start_warm(attempt: Attempt, argv: list[str], env: dict[str, str]) -> WarmProcess | None:
    """The step forked by the run's starter when it runs ferry's CLI (warm.py); None: start it afresh."""
    if attempt.warm is None or argv[:3] != [sys.executable, *FERRY_MODULE]:
        return None
    cwd = str(attempt.settings.home)
    try:
        return attempt.warm.starter(env, cwd).start(FERRY_MODULE[1], argv[3:], env, cwd, str(attempt.log_path))
    except StarterUnavailable as exc:
        with attempt.log_path.open("ab") as log:
            log.write(f"starting it as a new process: {exc}\n".encode())
        return None


def _wait(proc: subprocess.Popen[bytes] | WarmProcess, attempt: Attempt) -> AttemptResult | None:
    """Wait for the step, bounded by its deadline; stop it when the runner stops."""
    started = time.monotonic()
    while proc.poll() is None:
        if attempt.stop.is_set():
            _terminate(proc)
            return AttemptResult("Error", INTERRUPTED)
        if attempt.deadline_s is not None and time.monotonic() - started > attempt.deadline_s:
            _terminate(proc)
            return AttemptResult("Failed", f"exceeded its deadline of {attempt.deadline_s:.0f}s",
                                 exit_code=proc.returncode)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
    return None


def _terminate(proc: subprocess.Popen[bytes] | WarmProcess) -> None:
    """SIGTERM the step's process group, SIGKILL what is left after a grace period."""
    for sig, wait_s in ((signal.SIGTERM, TERM_GRACE_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
