"""One attempt of a RayJob resource template: what KubeRay does with `spec.entrypoint`, against the
local Ray head through the Job Submission API.

Submission ids are stable (`names.ray_submission_id(workflow, task)`, then `-r1`, `-r2`, ... once a
job of that task has FAILED or STOPPED), so a resumed run or a retry after a lost connection attaches
to the job it already started instead of starting a second one: the newest existing job of the task
is attached to when it is PENDING, RUNNING or SUCCEEDED, otherwise the next free id is submitted.
Connection errors are Argo's transient errors (OnTransientError retries them); the job's own FAILED
or STOPPED is a failure, decided by the template's successCondition/failureCondition.
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

import yaml

from ferry.contract import names
from ferry.contract.errors import FerryError
from ferry.local.engine.executors import (
    FERRY_MODULE,
    INTERRUPTED,
    Attempt,
    AttemptResult,
    begin_log,
    fresh_outputs_dir,
    read_outputs,
)
from ferry.local.errors import LocalError
from ferry.local.supervisor.service_defs import ray_auth_headers
from ferry.local.supervisor.services import ferry_env

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

POLL_S = 1.0
LOG_REFRESH_S = 5.0
LOST_CONNECTION_S = 30.0  # how long polling tolerates a silent Ray head before calling it transient
ALIVE = ("PENDING", "RUNNING", "SUCCEEDED")


class Transient(FerryError):
    """Talking to Ray failed in a way a retry may fix (connection refused, reset, timeout, 5xx).

    Not a LocalError: callers catch it first and retry, where a LocalError is final."""


class DeadlineExceeded(FerryError):
    """The job ran past the RayJob's activeDeadlineSeconds and was stopped."""


def local_entrypoint(entrypoint: str) -> str:
    """`ferry step ...` becomes `<this python> -m ferry.cli.app step ...` on the local head."""
    if entrypoint.startswith("ferry "):
        return " ".join([shlex.quote(sys.executable), *FERRY_MODULE, entrypoint[len("ferry "):]])
    return entrypoint


def submission_id(workflow: str, task: str, n: int) -> str:
    base = names.ray_submission_id(workflow, task)
    return base if n == 0 else f"{base}-r{n}"


def _call(fn: Any, *args: Any) -> Any:
    """Run a client call, sorting errors into Transient / LocalError (permanent) / not-found (None)."""
    from ray.exceptions import AuthenticationError

    try:
        return fn(*args)
    except AuthenticationError as exc:
        raise LocalError(f"the Ray head rejected ferry's token: {exc}. Restart the services with `ferry down` "
                         "and `ferry up` so the head and ferry share one token") from exc
    except OSError as exc:  # ConnectionError, requests' errors, timeouts
        raise Transient(f"cannot reach Ray: {exc}") from exc
    except RuntimeError as exc:
        text = str(exc)
        if "status code 404" in text or "does not exist" in text:
            return None
        if "status code 5" in text:
            raise Transient(f"Ray job API error: {text[:300]}") from exc
        raise LocalError(f"Ray job API error: {text[:300]}") from exc


def _client(attempt: Attempt) -> JobSubmissionClient:
    from ray.job_submission import JobSubmissionClient

    settings = attempt.settings
    headers = ray_auth_headers(settings)
    # Explicit header: Ray reads RAY_AUTH_MODE once per process, and this process may predate it.
    try:
        return _call(lambda: JobSubmissionClient(settings.ray_dashboard_url, headers=headers))
    except Transient as exc:
        raise Transient(f"{exc} (is the local Ray head up? `ferry up` starts it)") from exc


def run_rayjob(attempt: Attempt) -> AttemptResult:
    resource = attempt.template["resource"]
    manifest = yaml.safe_load(resource["manifest"])
    spec = manifest["spec"]
    deadline = spec.get("activeDeadlineSeconds") or attempt.deadline_s
    fresh_outputs_dir(attempt.outputs_dir)
    try:
        client = _client(attempt)
        job_id, submitted = _attach_or_submit(client, attempt, spec)
        offset = begin_log(attempt, f"Ray job {job_id} ({'submitted' if submitted else 'attached'}): "
                                    f"{local_entrypoint(spec['entrypoint'])}")
        status = _poll(client, attempt, job_id, offset, float(deadline) if deadline else None)
        _save_logs(client, attempt, job_id, offset)
        if status is None:
            return AttemptResult("Error", f"{INTERRUPTED}; Ray job {job_id} keeps running and a resumed "
                                          "run attaches to it")
        info = _call(client.get_job_info, job_id)
    except Transient as exc:
        return AttemptResult("Error", str(exc), transient=True)
    except DeadlineExceeded as exc:
        return AttemptResult("Failed", str(exc))
    except LocalError as exc:
        return AttemptResult("Error", str(exc))
    return _judge(attempt, resource, job_id, status, getattr(info, "message", "") or "")


def _attach_or_submit(client: JobSubmissionClient, attempt: Attempt, spec: dict[str, Any]) -> tuple[str, bool]:
    n, newest = 0, None
    while (info := _call(client.get_job_info, submission_id(attempt.workflow, attempt.task, n))) is not None:
        newest = (n, str(info.status))
        n += 1
    if newest is not None and newest[1] in ALIVE:
        return submission_id(attempt.workflow, attempt.task, newest[0]), False
    job_id = submission_id(attempt.workflow, attempt.task, n)
    runtime_env = yaml.safe_load(spec.get("runtimeEnvYAML") or "") or {}
    rendered_vars = {str(k): _env_text(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
    runtime_env["env_vars"] = {**rendered_vars, **ferry_env(attempt.settings),
                               "FERRY_OUTPUTS_DIR": str(attempt.outputs_dir)}
    _call(lambda: client.submit_job(entrypoint=local_entrypoint(spec["entrypoint"]), submission_id=job_id,
                                    runtime_env=runtime_env,
                                    metadata={names.TAG_WORKFLOW: attempt.workflow, names.TAG_STEP: attempt.task}))
    return job_id, True


def _env_text(value: Any) -> str:
    """Ray wants strings; YAML may have read `true` or `8` as something else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _poll(client: JobSubmissionClient, attempt: Attempt, job_id: str, offset: int,
          deadline_s: float | None) -> str | None:
    """The terminal status, or None when the runner is stopping (the job keeps running)."""
    started = last_ok = last_logs = time.monotonic()
    while not attempt.stop.is_set():
        try:
            status = str(_call(client.get_job_status, job_id))
            last_ok = time.monotonic()
        except Transient:
            if time.monotonic() - last_ok > LOST_CONNECTION_S:
                raise
            status = "UNKNOWN"
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            return status
        if deadline_s is not None and time.monotonic() - started > deadline_s:
            _call(client.stop_job, job_id)
            _save_logs(client, attempt, job_id, offset)
            raise DeadlineExceeded(f"Ray job {job_id} exceeded activeDeadlineSeconds ({deadline_s:.0f}s); "
                                   "stopped it. Make the step do less (fewer tune samples, less data) or raise "
                                   "the environment profile's rayjob_deadline_seconds")
        if time.monotonic() - last_logs > LOG_REFRESH_S:
            _save_logs(client, attempt, job_id, offset)
            last_logs = time.monotonic()
        attempt.stop.wait(POLL_S)
    return None


def _save_logs(client: JobSubmissionClient, attempt: Attempt, job_id: str, offset: int) -> None:
    """Ray returns the whole driver log each time: rewrite this attempt's part of the step log."""
    try:
        text = _call(client.get_job_logs, job_id) or ""
    except (Transient, LocalError):
        return
    with attempt.log_path.open("r+b") as log:
        log.seek(offset)
        log.write(text.encode())
        if text and not text.endswith("\n"):
            log.write(b"\n")
        log.truncate()


def condition_holds(condition: str | None, obj: dict[str, Any]) -> bool:
    """Argo's success/failureCondition: comma-separated `path == value` / `path != value` requirements."""
    if not condition:
        return False
    for requirement in condition.split(","):
        for op in ("!=", "==", "="):
            if op in requirement:
                path, expected = (part.strip() for part in requirement.split(op, 1))
                break
        else:
            raise LocalError(f"unsupported resource condition {requirement.strip()!r} (use ==, = or !=)")
        current: Any = obj
        for key in path.split("."):
            current = current.get(key) if isinstance(current, dict) else None
        if (str(current) == expected) != (op != "!="):
            return False
    return True


def _judge(attempt: Attempt, resource: dict[str, Any], job_id: str, status: str, message: str) -> AttemptResult:
    obj = {"metadata": {"name": job_id}, "status": {"jobStatus": status, "message": message}}
    try:
        outputs = read_outputs(attempt.template, attempt.outputs_dir, obj)
        failed = condition_holds(resource.get("failureCondition"), obj)
        succeeded = not failed and condition_holds(resource.get("successCondition"), obj)
    except LocalError as exc:
        return AttemptResult("Error", str(exc))
    if succeeded:
        return AttemptResult("Succeeded", f"Ray job {job_id} {status}", exit_code=0, outputs=outputs)
    # A terminal job that meets neither condition (STOPPED) failed too: nothing will change it any more.
    return AttemptResult("Failed", f"Ray job {job_id} {status}: {message}".strip().rstrip(":"), outputs=outputs)
