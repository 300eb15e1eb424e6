"""Benchmark: validate + render + plan of 200 generated specs (target: under 5 s on 2 cores).

Not a test: it prints figures and writes docs/benchmarks/gitops.md. The baseline in the same run
is plain `yaml.safe_load` + pydantic validation of the same files, the floor any loader pays.
"""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import yaml

from ferry.plan import make_plan
from ferry.render.bundle import render_files
from ferry.spec import ModelSpec, load_specs
from ferry.spec.checks import run_checks

ROOT = Path(__file__).resolve().parents[1]
COUNT = 200


def generate(folder: Path, count: int, epochs: int) -> None:
    template = (ROOT / "gitops/models/fraud-detector.yaml").read_text()
    for i in range(count):
        text = template.replace("name: fraud-detector", f"name: model-{i:03d}").replace(
            "route: /fraud-detector", f"route: /model-{i:03d}").replace("epochs: 6", f"epochs: {epochs + i % 3}")
        (folder / f"model-{i:03d}.yaml").write_text(text)


def timed(fn):
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base_dir, head_dir = Path(tmp, "base"), Path(tmp, "head")
        base_dir.mkdir(), head_dir.mkdir()
        generate(base_dir, COUNT, 6)
        generate(head_dir, COUNT, 7)
        _, baseline = timed(lambda: [ModelSpec.model_validate(yaml.safe_load(p.read_text()))
                                     for p in sorted(head_dir.glob("*.yaml"))])
        (specs, errors), t_load = timed(lambda: load_specs([head_dir]))
        checks, t_checks = timed(lambda: run_checks(specs))
        assert not errors and not checks, (errors[:3], checks[:3])
        _, t_render = timed(lambda: [render_files([s.model for s in specs], env) for env in ("local", "prod")])
        base, _ = load_specs([base_dir])
        _, t_plan = timed(lambda: make_plan({s.name: s.model for s in base}, {s.name: s.model for s in specs}))
    total = t_load + t_checks + t_render + t_plan
    rows = [("baseline: yaml.safe_load + pydantic", baseline), ("load (safe YAML + line map + pydantic)", t_load),
            ("semantic checks", t_checks), ("render local + prod", t_render), ("plan (renders both sides)", t_plan),
            ("total validate + render + plan", total)]
    report = [f"# gitops benchmark: {COUNT} specs", "",
              f"Machine: {platform.machine()}, {platform.python_version()}; target: total under 5 s.", "",
              "| stage | seconds | × baseline |", "|---|---:|---:|"]
    report += [f"| {name} | {secs:.3f} | {secs / baseline:.2f} |" for name, secs in rows]
    text = "\n".join(report) + "\n"
    print(text)
    (ROOT / "docs/benchmarks/gitops.md").write_text(text)


if __name__ == "__main__":
    main()
