"""Chart pins (issue #13 finding 9) and MLflow's Flask key (finding 7).

gitops/platform/charts.toml is the table of chart versions checked as published, with what they install and the
evidence. Each Application's targetRevision, and the version comment above it, must equal that table, and so must
docs/install-cluster.md: a pin cannot move, nor its comment drift, without the table being updated.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from tests.support.platform_docs import APPS, ROOT, _chart_table

DOC = ROOT / "docs" / "install-cluster.md"
E2E = ROOT / ".github" / "workflows" / "e2e.yml"
# ferry's own Secret with MLflow's Flask key (docs/install-cluster.md step 4). Not the chart's hook Secret
# `<fullname>-flask-server-secret-key`, which Argo CD deletes and recreates on every sync.
FLASK_SECRET = "mlflow-flask-session-key"  # pragma: allowlist secret (a Secret's name)
FLASK_KEY = "MLFLOW_FLASK_SERVER_SECRET_KEY"
TABLE = _chart_table()
CHART_APPS = {name: chart for name, chart in TABLE.items() if chart["application"]}


def _app(name: str) -> tuple[dict[str, Any], str]:
    path = APPS / f"{name}.yaml"
    return yaml.safe_load(path.read_text()), path.read_text()


def _comment_above_target_revision(text: str) -> str:
    """The comment lines right above `targetRevision:`, joined with spaces."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("targetRevision:"))
    comment: list[str] = []
    for line in reversed(lines[:at]):
        if not line.strip().startswith("#"):
            break
        comment.insert(0, line.strip().lstrip("#").strip())
    return " ".join(comment)


def test_every_chart_application_is_in_the_table() -> None:
    charts = {}
    for path in sorted(APPS.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        source = (doc.get("spec") or {}).get("source") or {}
        if "chart" in source:
            charts[source["chart"]] = doc["metadata"]["name"]
    assert charts == {name: chart["application"] for name, chart in CHART_APPS.items()}


@pytest.mark.parametrize("chart", sorted(CHART_APPS))
def test_pin_and_its_comment_equal_the_table(chart: str) -> None:
    row = TABLE[chart]
    app, text = _app(row["application"])
    source = app["spec"]["source"]
    assert (source["repoURL"], source["chart"]) == (row["repo"], chart)
    assert source["targetRevision"] == row["version"], f"{chart}: pin moved without charts.toml"
    assert _comment_above_target_revision(text) == row["comment"], f"{chart}: version comment differs from charts.toml"


def _in_line(version: str, line: str) -> bool:
    """'88.6.4' is in the line '88.x'; 'v0.93.1' is in 'v0.93.x' and in 'v0.93'."""
    prefix = line.removesuffix(".x")
    return version == prefix or version.startswith(prefix + ".")


@pytest.mark.parametrize("chart", sorted(TABLE))
def test_table_rows_are_complete_and_comments_name_the_right_lines(chart: str) -> None:
    row = TABLE[chart]
    assert re.fullmatch(r"\d+\.\d+\.\d+", row["version"])
    assert row["app_version"] and len(row["evidence"]) > 40, f"{chart}: say what was checked and where"
    # The chart line a comment names contains the pin, and the app version it names is the verified one (the old
    # kube-prometheus-stack comment said Prometheus Operator v0.93.0, true only of 88.0-88.3, for 88.6.4).
    for line in re.findall(r"(\d+(?:\.\d+)*(?:\.x)?) (?:installs|ships)", row["comment"]):
        assert _in_line(row["version"], line), (chart, line)
    for named in re.findall(r"(?:\bv|MLflow )(\d+\.\d+(?:\.\d+|\.x)?)", row["comment"]):
        assert _in_line(row["app_version"].lstrip("v"), named) or named == row["app_version"].lstrip("v"), \
            (chart, named, row["app_version"])


def test_table_file_parses_with_every_field() -> None:
    with (APPS.parent / "charts.toml").open("rb") as handle:
        charts = tomllib.load(handle)["charts"]
    for name, row in charts.items():
        assert set(row) == {"repo", "version", "application", "comment", "app_version", "evidence"}, name


def test_the_mlflow_server_satisfies_the_client_range() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    requirements = [*pyproject["project"].get("dependencies", []),
                    *[r for extra in pyproject["project"]["optional-dependencies"].values() for r in extra]]
    [spec] = {r.removeprefix("mlflow") for r in requirements if re.match(r"mlflow\s*[<>=]", r)}
    assert TABLE["mlflow"]["app_version"] in SpecifierSet(spec)


@pytest.mark.parametrize("chart", sorted(CHART_APPS))
def test_install_doc_names_the_pinned_version(chart: str) -> None:
    row = TABLE[chart]
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("|") and f"`{row['application']}`" in line]
    assert any(f"`{row['application']}` {row['version']} " in line for line in rows), (chart, rows)


def test_install_doc_bootstraps_the_pinned_argo_cd() -> None:
    assert f"helm install argocd argo-cd --repo {TABLE['argo-cd']['repo']} --version {TABLE['argo-cd']['version']}" \
        in DOC.read_text()


# ------------------------------------------------------------------------------------------ MLflow Flask key


def test_mlflow_reads_the_flask_key_from_ferrys_secret() -> None:
    app, _ = _app("mlflow")
    values = app["spec"]["source"]["helm"]["valuesObject"]
    assert values["extraSecretNamesForEnvFrom"] == [FLASK_SECRET]
    assert "flaskServerSecretKey" not in values, "an inline key would put the secret in Git"
    hook_secret = f"{values['fullnameOverride']}-flask-server-secret-key"
    assert hook_secret != FLASK_SECRET, "Argo CD deletes and recreates the chart's hook Secret on every sync"


def test_no_ignore_differences_on_a_hook_it_cannot_apply_to() -> None:
    app, _ = _app("mlflow")
    assert "ignoreDifferences" not in app["spec"]
    assert "RespectIgnoreDifferences=true" not in (app["spec"]["syncPolicy"].get("syncOptions") or [])


@pytest.mark.parametrize("path", [DOC, E2E], ids=["install-cluster.md", "e2e.yml"])
def test_the_flask_secret_is_created_out_of_git(path: Path) -> None:
    text = path.read_text().replace("\\\n", " ")
    assert re.search(rf"kubectl -n ferry-system create secret generic {FLASK_SECRET}\s+"
                     rf"--from-literal={FLASK_KEY}=\"\$\(openssl rand -hex 32\)\"", text), path.name
