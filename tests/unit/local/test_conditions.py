"""The local runner judges a RayJob step the way Argo's executor does (label-selector requirements;
failure: any one matches, success: all match) against what KubeRay v1.7 reports."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import pytest

from ferry.local.engine.conditions import failure_holds, parse, success_holds
from ferry.local.engine.rayjobs import StepDeadlineExceeded, _poll, _verdict, rayjob_object
from ferry.local.errors import LocalError
from ferry.render.rayjob import RAYJOB_FAILURE_CONDITION, RAYJOB_SUCCESS_CONDITION

RESOURCE = {"successCondition": RAYJOB_SUCCESS_CONDITION, "failureCondition": RAYJOB_FAILURE_CONDITION}


def status(**fields: str) -> dict[str, object]:
    return {"status": fields}


@pytest.mark.parametrize(("fields", "verdict"), [
    ({"jobDeploymentStatus": "ValidationFailed", "reason": "ValidationFailed"}, "Failed"),  # jobStatus empty
    ({"jobDeploymentStatus": "ValidationFailed", "jobStatus": ""}, "Failed"),
    ({"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded", "jobStatus": "RUNNING"}, "Failed"),
    ({"jobDeploymentStatus": "Failed", "reason": "SubmissionFailed"}, "Failed"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "Failed"),
    ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED"}, "Failed"),
    ({"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}, None),
    ({"jobDeploymentStatus": "Initializing"}, None),
    ({}, None),
    ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"}, "Succeeded"),
    ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "Succeeded"),
])
def test_rendered_rayjob_conditions_judge_kuberay_states(fields: dict[str, str], verdict: str | None) -> None:
    assert _verdict(RESOURCE, status(**fields)) == verdict


def test_failure_requirements_are_ored_and_success_requirements_anded() -> None:
    obj = status(a="x", b="y")
    assert failure_holds("status.a == nope, status.b == y", obj)
    assert not success_holds("status.a == nope, status.b == y", obj)
    assert success_holds("status.a == x, status.b = y", obj)
    assert not failure_holds("status.a == nope, status.b == nope", obj)
    assert not failure_holds(None, obj) and not success_holds("", obj)


def test_selector_operators_follow_kubernetes_semantics() -> None:
    obj = {"status": {"phase": "Done", "count": 3, "ready": True}}
    assert success_holds("status.phase in (Done, Ok)", obj)
    assert success_holds("status.phase notin (Failed), status.missing notin (x)", obj)
    assert success_holds("status.missing != x", obj)  # != and notin match an absent field
    assert not success_holds("status.missing == x", obj) and not success_holds("status.missing in (x)", obj)
    assert success_holds("status.count > 2, status.count < 4, status.phase, !status.missing", obj)
    assert not success_holds("status.phase > 2", obj)  # not an integer: no match
    assert success_holds("status.ready == true", obj)  # JSON booleans read as gjson writes them


@pytest.mark.parametrize("bad", ["status.jobStatus == FAILED || status.jobStatus == STOPPED",
                                 "status.jobStatus in FAILED", "status.count > many", "status.a == b c", "== x"])
def test_conditions_argo_cannot_parse_are_refused(bad: str) -> None:
    with pytest.raises(LocalError, match="resource condition"):
        parse(bad)


def test_rayjob_object_mirrors_kuberay() -> None:
    assert rayjob_object("j", "STOPPED")["status"]["jobDeploymentStatus"] == "Complete"
    assert rayjob_object("j", "FAILED")["status"]["reason"] == "AppFailed"
    late = rayjob_object("j", "RUNNING", "too slow", deadline_exceeded=True)["status"]
    assert (late["jobDeploymentStatus"], late["reason"], late["jobStatus"]) == ("Failed", "DeadlineExceeded", "RUNNING")
    assert "jobStatus" not in rayjob_object("j", "")["status"]


class _Client:
    """A Ray job that stays RUNNING until stopped (then STOPPED)."""

    def __init__(self) -> None:
        self.stopped = False

    def get_job_status(self, job_id: str) -> str:
        return "STOPPED" if self.stopped else "RUNNING"

    def stop_job(self, job_id: str) -> None:
        self.stopped = True


def _attempt() -> Any:
    return SimpleNamespace(stop=threading.Event())


def test_a_job_past_the_rayjobs_deadline_is_stopped_and_fails_like_kuberay_says() -> None:
    client = _Client()
    obj = _poll(client, _attempt(), RESOURCE, "j", 0, (0.0, None))  # type: ignore[arg-type]
    assert client.stopped and obj is not None
    assert obj["status"]["reason"] == "DeadlineExceeded" and _verdict(RESOURCE, obj) == "Failed"


def test_no_step_waits_past_its_own_bound_whatever_the_job_reports() -> None:
    never = {"successCondition": "status.jobStatus == NEVER", "failureCondition": "status.jobStatus == NEVER"}
    with pytest.raises(StepDeadlineExceeded, match="Step exceeded its deadline"):
        _poll(_Client(), _attempt(), never, "j", 0, (None, 0.0))  # type: ignore[arg-type]
