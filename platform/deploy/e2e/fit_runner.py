"""CI only (.github/workflows/e2e.yml): shrink the resource *requests* of rendered manifests so that one
model's pipeline and its RayService fit together on a 4-CPU GitHub runner.

Usage: python platform/deploy/e2e/fit_runner.py DIR [DIR ...]   (rewrites every *.yaml under each DIR)

Limits stay as rendered: Ray sizes itself from the container limits (num-cpus, memory), so the Serve replica's
`num_cpus: 1` and the trainer's worker still fit, and only the scheduler's bookkeeping changes. The RayJob
manifests that WorkflowTemplates carry as strings (`resource.manifest`) are shrunk too. Production renders are
never rewritten: the e2e serves this copy to Argo CD from a throwaway Git repository.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

CI_REQUESTS = {"cpu": "50m", "memory": "128Mi"}


def shrink(node: Any) -> Any:
    """Every `resources.requests` below node set to CI_REQUESTS; embedded manifests (strings) included."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "resources" and isinstance(value, dict) and isinstance(value.get("requests"), dict):
                value["requests"] = {name: CI_REQUESTS.get(name, amount) for name, amount in value["requests"].items()}
            elif key == "manifest" and isinstance(value, str):
                node[key] = yaml.safe_dump(shrink(yaml.safe_load(value)), sort_keys=False)
            else:
                shrink(value)
    elif isinstance(node, list):
        for item in node:
            shrink(item)
    return node


def fit(path: Path) -> None:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    path.write_text(yaml.safe_dump_all([shrink(doc) for doc in docs], sort_keys=False))


def main(folders: list[str]) -> int:
    files = [path for folder in folders for path in sorted(Path(folder).rglob("*.yaml"))]
    if not files:
        print(f"fit_runner: no *.yaml under {' '.join(folders) or '(no folder given)'}; pass the rendered folders",
              file=sys.stderr)
        return 2
    for path in files:
        fit(path)
    print(f"fit_runner: requests set to {CI_REQUESTS} in {len(files)} files")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
