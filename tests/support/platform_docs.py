"""The cluster install's documents, loaded once for the static checks in tests/unit/test_platform_*.py: the Argo CD
app-of-apps in gitops/platform, platform/deploy, and what `ferry render --env prod` committed."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from ferry.render.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "gitops" / "platform"
APPS = PLATFORM / "apps"
DEPLOY = ROOT / "platform" / "deploy"
RENDERED_PROD = ROOT / "gitops" / "rendered" / "prod"
DOCKERFILE = DEPLOY / "Dockerfile"
CHART_TABLE = PLATFORM / "charts.toml"
PROD = PROFILES["prod"]

# ------------------------------------------------------------------------------------------------ loading


def _load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _chart_table() -> dict[str, dict[str, str]]:
    """gitops/platform/charts.toml: chart name -> repo, version, application, comment, app_version, evidence."""
    with CHART_TABLE.open("rb") as handle:
        return dict(tomllib.load(handle)["charts"])


def _manifest_files() -> list[Path]:
    return sorted([*PLATFORM.rglob("*.yaml"), *DEPLOY.rglob("*.yaml")])


def _documents(files: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in files:
        for index, doc in enumerate(_load(path)):
            found.append((f"{path.relative_to(ROOT)}:{index}:{doc.get('kind')}/{_name(doc)}", doc))
    return found


def _name(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    return str(meta.get("name") or meta.get("generateName") or "")


def _rendered_prod_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every object `ferry render --env prod` committed, plus the RayJobs embedded in resource templates."""
    found = []
    for where, doc in _documents(sorted(RENDERED_PROD.rglob("*.yaml"))):
        found.append((where, doc))
        for template in (doc.get("spec") or {}).get("templates", []):
            if "resource" in template:
                found.append((f"{where}#{template['name']}", yaml.safe_load(template["resource"]["manifest"])))
    return found


MANIFESTS = _documents(_manifest_files())
# Every platform manifest, plus the Argo CD objects `ferry render` writes (AppProject and ApplicationSet).
VALIDATED_DOCS = MANIFESTS + _documents(sorted((RENDERED_PROD / "_argocd").glob("*.yaml")))
ALL_CLUSTER_DOCS = MANIFESTS + _rendered_prod_documents()


def _ids(values: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [where for where, _ in values]


def _by_kind(kind: str, docs: list[tuple[str, dict[str, Any]]] = MANIFESTS) -> dict[str, dict[str, Any]]:
    return {f"{d.get('metadata', {}).get('namespace', '')}/{_name(d)}": d for _, d in docs if d.get("kind") == kind}


def _apps() -> dict[str, dict[str, Any]]:
    return {_name(d): d for path in sorted(APPS.glob("*.yaml")) for d in _load(path) if d["kind"] == "Application"}
