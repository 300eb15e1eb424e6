"""One attempt of a RayJob resource template: what KubeRay does with `spec.entrypoint`, against the
local Ray head through the Job Submission API.

Submission ids are stable (`names.ray_submission_id(workflow, task)`, then `-r1`, `-r2`, ... once a
job of that task has FAILED or STOPPED), so a resumed run or a retry after a lost connection attaches
to the job it already started instead of starting a second one: the newest existing job of the task
is attached to when it is PENDING, RUNNING or SUCCEEDED, otherwise the next free id is submitted.
Connection errors are Argo's transient errors (OnTransientError retries them). The job is shown as the
RayJob KubeRay would report (rayjob_object) and judged by the template's successCondition/failureCondition
with Argo's semantics (ferry.local.engine.conditions); the step's own activeDeadlineSeconds bounds the wait.
"""

from __future__ import annotations

import shlex
import sys
import time
from typing import TYPE_CHECKING, Any

import yaml
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from ferry.contract import names
from ferry.contract.errors import FerryError
from ferry.local.engine import conditions
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
FINAL_LOG_TRIES = 3
LOST_CONNECTION_S = 30.0  # how long polling tolerates a silent Ray head before calling it transient
ALIVE = ("PENDING", "RUNNING", "SUCCEEDED")  # a job worth attaching to
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


class Transient(FerryError):
    """Talking to Ray failed in a way a retry may fix (connection refused, reset, timeout, 5xx).

    Not a LocalError: callers catch it first and retry, where a LocalError is final."""


class StepDeadlineExceeded(FerryError):
    """The step ran past its own bound (the template's activeDeadlineSeconds) whatever the job reported."""


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
    ray_deadline = spec.get("activeDeadlineSeconds")
    fresh_outputs_dir(attempt.outputs_dir)
    try:
        client = _client(attempt)
        job_id, submitted = _attach_or_submit(client, attempt, spec)
        offset = begin_log(attempt, f"Ray job {job_id} ({'submitted' if submitted else 'attached'}): "
                                    f"{local_entrypoint(spec['entrypoint'])}")
        bounds = (float(ray_deadline) if ray_deadline else None, attempt.deadline_s)
        obj = _poll(client, attempt, resource, job_id, offset, bounds)
        _save_logs(client, attempt, job_id, offset, tries=FINAL_LOG_TRIES)
        if obj is None:
            return AttemptResult("Error", f"{INTERRUPTED}; Ray job {job_id} keeps running and a resumed "
                                          "run attaches to it")
    except Transient as exc:
        return AttemptResult("Error", str(exc), transient=True)
    except StepDeadlineExceeded as exc:
        return AttemptResult("Failed", str(exc))
    except LocalError as exc:
        return AttemptResult("Error", str(exc))
    return _judge(attempt, resource, obj)


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
                               names.OUTPUTS_DIR_ENV: str(attempt.outputs_dir)}
    _call(lambda: client.submit_job(entrypoint=local_entrypoint(spec["entrypoint"]), submission_id=job_id,
                                    runtime_env=runtime_env,
                                    metadata={names.TAG_WORKFLOW: attempt.workflow, names.TAG_STEP: attempt.task}))
    return job_id, True


def _env_text(value: Any) -> str:
    """Ray wants strings; YAML may have read `true` or `8` as something else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def rayjob_object(job_id: str, job_status: str, message: str = "", deadline_exceeded: bool = False,
                  ) -> dict[str, Any]:
    """The RayJob KubeRay v1.7 would show for a Ray job in `job_status` (rayjob_controller.go): a finished
    job is Complete (SUCCEEDED, STOPPED) or Failed/AppFailed (FAILED); past activeDeadlineSeconds it is
    Failed/DeadlineExceeded whatever the job's last status."""
    status: dict[str, Any] = {"jobDeploymentStatus": "Running", "message": message}
    if job_status in TERMINAL:
        status["jobDeploymentStatus"] = "Failed" if job_status == "FAILED" else "Complete"
        if job_status == "FAILED":
            status["reason"] = "AppFailed"
    if deadline_exceeded:
        status.update(jobDeploymentStatus="Failed", reason="DeadlineExceeded")
    if job_status in (*ALIVE, *TERMINAL):
        status["jobStatus"] = job_status
    return {"metadata": {"name": job_id}, "status": status}


def _poll(client: JobSubmissionClient, attempt: Attempt, resource: dict[str, Any], job_id: str, offset: int,
          bounds: tuple[float | None, float | None]) -> dict[str, Any] | None:
    """Like Argo's executor, watch the RayJob until a condition holds (or, unlike Argo, the job can no longer
    change); None when the runner is stopping (the job keeps running)."""
    ray_deadline, step_deadline = bounds
    started = last_ok = last_logs = time.monotonic()
    status, stopped_message = "", ""
    while not attempt.stop.is_set():
        try:
            status = str(_call(client.get_job_status, job_id))
            last_ok = time.monotonic()
        except Transient:
            if time.monotonic() - last_ok > LOST_CONNECTION_S:
                raise
        message = stopped_message or (_job_message(client, job_id) if status in TERMINAL else "")
        obj = rayjob_object(job_id, status, message, deadline_exceeded=bool(stopped_message))
        if status in TERMINAL or _verdict(resource, obj) is not None:
            return obj
        elapsed = time.monotonic() - started
        if ray_deadline is not None and elapsed > ray_deadline and not stopped_message:
            _call(client.stop_job, job_id)
            stopped_message = (f"Ray job {job_id} exceeded activeDeadlineSeconds ({ray_deadline:.0f}s); stopped "
                               "it. Make the step do less (fewer tune samples, less data) or raise the "
                               "environment profile's rayjob_deadline_seconds")
            continue
        if step_deadline is not None and elapsed > step_deadline:
            raise StepDeadlineExceeded(f"Step exceeded its deadline ({step_deadline:.0f}s) with Ray job {job_id} "
                                       f"{status or 'not started'}: neither condition held")
        if time.monotonic() - last_logs > LOG_REFRESH_S:
            _save_logs(client, attempt, job_id, offset)
            last_logs = time.monotonic()
        attempt.stop.wait(POLL_S)
    return None


def _job_message(client: JobSubmissionClient, job_id: str) -> str:
    """The finished job's own message (KubeRay copies it into the RayJob's status.message): for a failed
    entrypoint, its exit code and the last lines of its log, which say what went wrong."""
    info = _call(client.get_job_info, job_id)
    return str(getattr(info, "message", "") or "")


def _save_logs(client: JobSubmissionClient, attempt: Attempt, job_id: str, offset: int, tries: int = 1) -> None:
    """Ray returns the whole driver log each time: rewrite this attempt's part of the step log. The last save
    takes a few tries: it is the log a user reads after the step, and a busy head can time out once."""
    fetch = Retrying(stop=stop_after_attempt(tries), wait=wait_fixed(POLL_S), reraise=True,
                     retry=retry_if_exception_type((Transient, LocalError)))
    try:
        text = fetch(_call, client.get_job_logs, job_id) or ""
    except (Transient, LocalError):
        return
    with attempt.log_path.open("r+b") as log:
        log.seek(offset)
        log.write(text.encode())
        if text and not text.endswith("\n"):
            log.write(b"\n")
        log.truncate()


def _verdict(resource: dict[str, Any], obj: dict[str, Any]) -> str | None:
    """Argo checks the failure condition first: "Failed", "Succeeded", or None while neither holds."""
    if conditions.failure_holds(resource.get("failureCondition"), obj):
        return "Failed"
    if conditions.success_holds(resource.get("successCondition"), obj):
        return "Succeeded"
    return None


def _judge(attempt: Attempt, resource: dict[str, Any], obj: dict[str, Any]) -> AttemptResult:
    job_id, status = obj["metadata"]["name"], obj["status"]
    shown = " ".join(status.get(k) or "" for k in ("jobDeploymentStatus", "jobStatus")).strip()
    try:
        outputs = read_outputs(attempt.template, attempt.outputs_dir, obj)
        verdict = _verdict(resource, obj)
    except LocalError as exc:
        return AttemptResult("Error", str(exc))
    if verdict == "Succeeded":
        return AttemptResult("Succeeded", f"Ray job {job_id} {shown}", exit_code=0, outputs=outputs)
    message = status.get("message") or ""
    if verdict is None:
        # Finished, yet neither condition holds: nothing will change it, where Argo would wait for the bound.
        message = f"neither the success nor the failure condition holds. {message}".strip()
    return AttemptResult("Failed", f"Ray job {job_id} {shown}: {message}".strip().rstrip(":"), outputs=outputs)
