"""Every image the cluster would pull is one .github/workflows/image.yml builds, under a tag it never pushes twice,
and every pod that asks for a GPU gets the CUDA build (issue #13, findings 6 and 8).

image.yml is read as GitHub runs it (its matrix and the tags its metadata step is given), not from ferry's code;
the rendered objects are the committed gitops/rendered/prod files, what Argo CD syncs, including the RayJobs
inside resource steps' manifests.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from ferry.adapters import image_build
from ferry.render.bundle import render_objects
from ferry.render.profiles import FERRY_VERSION, PROFILES
from ferry.spec import load_specs
from ferry.spec.models import ModelSpec

ROOT = Path(__file__).resolve().parents[2]
IMAGE_WORKFLOW = ROOT / ".github/workflows/image.yml"
PROD = ROOT / "gitops/rendered/prod"
OUTPUT = re.compile(r"^\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}$")


def _image_workflow() -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """(matrix variants, the metadata step's tag lines, steps by id) of image.yml's build job."""
    job = yaml.safe_load(IMAGE_WORKFLOW.read_text())["jobs"]["build"]
    steps = {step["id"]: step for step in job["steps"] if "id" in step}
    meta = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("docker/metadata-action"))
    tags = [line.strip() for line in meta["with"]["tags"].splitlines() if line.strip()]
    return list(job["strategy"]["matrix"]["variant"]), tags, steps


def _pushed_tag_source() -> str:
    """The command whose output image.yml pushes as the tag: every tag must come from it, none by hand."""
    _, tags, steps = _image_workflow()
    assert len(tags) == 1, f"image.yml pushes {tags}: one tag per variant, `ferry image tag`'s"
    kind, _, value = tags[0].partition(",value=")
    match = OUTPUT.match(value)
    assert kind == "type=raw" and match, f"image.yml's tag {tags[0]!r} is not a step's output"
    return str(steps[match.group(1)]["run"])


def test_image_workflow_pushes_only_content_tags_and_never_twice() -> None:
    variants, _, steps = _image_workflow()
    assert "ferry image tag --variant" in _pushed_tag_source()
    assert set(variants) == {"cpu", "cuda"}
    skip = next(step for step in steps.values() if "imagetools inspect" in str(step.get("run", "")))
    builds = [step for step in yaml.safe_load(IMAGE_WORKFLOW.read_text())["jobs"]["build"]["steps"]
              if str(step.get("uses", "")).startswith("docker/build-push-action")]
    assert builds and all(f"steps.{skip['id']}.outputs.exists != 'true'" in step["if"] for step in builds)


def test_the_tag_s_version_is_the_package_s() -> None:
    """Tags start with ferry.render.profiles' version; docs and the wheel say pyproject.toml's: one number."""
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == FERRY_VERSION
    assert re.fullmatch(rf"{re.escape(FERRY_VERSION)}-[0-9a-f]{{12}}", image_build.base_tag(ROOT))


def _containers(tree: Any) -> Iterator[tuple[dict[str, Any], float]]:
    """(container, GPUs its pod asks for) of every container in a rendered tree, resource manifests included."""
    if isinstance(tree, dict):
        if isinstance(tree.get("image"), str):
            limits = (tree.get("resources") or {}).get("limits") or {}
            yield tree, float(limits.get("nvidia.com/gpu", 0))
        for key, value in tree.items():
            yield from _containers(yaml.safe_load(value) if key == "manifest" and isinstance(value, str) else value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _containers(item)


def _committed() -> list[Any]:
    return [doc for path in sorted(PROD.rglob("*.yaml")) for doc in yaml.safe_load_all(path.read_text())]


def _repository() -> str:
    """What image.yml names the image: ghcr.io/<owner>/<repo>, lower case, of the repository Argo CD syncs."""
    owner_repo = PROFILES["prod"].repo_url.removeprefix("https://github.com/").removesuffix(".git")
    return f"ghcr.io/{owner_repo.lower()}"


def test_every_committed_image_is_one_image_yml_pushes() -> None:
    built = {image_build.variant_tag(ROOT, variant) for variant in _image_workflow()[0]}
    bare = {FERRY_VERSION, f"{FERRY_VERSION}-cuda", "latest"}
    containers = list(_containers(_committed()))
    assert len(containers) >= 10
    for container, _ in containers:
        repository, _, tag = container["image"].rpartition(":")
        assert repository == _repository(), container["image"]
        assert tag not in bare, f"{container['image']}: a mutable tag, pushed again with new code"
        assert tag in built, (f"{container['image']}: image.yml builds {sorted(built)} from this checkout; the code "
                              "changed since the last render: run `ferry generate` and commit what it writes")
        # With a tag that names its content, a node's cached copy is the right code; Always would only add pulls.
        assert container["imagePullPolicy"] == "IfNotPresent", container["name"]


def _gpu_model() -> ModelSpec:
    model = load_specs([ROOT / "gitops/models/fraud-detector.yaml"])[0][0].model
    training = model.spec.training
    assert training.tune is not None
    update = {"resources": training.resources.model_copy(update={"gpus_per_worker": 1.0}),
              "tune": training.tune.model_copy(update={"gpus_per_trial": 0.5})}
    return model.model_copy(update={"spec": model.spec.model_copy(
        update={"training": training.model_copy(update=update)})})


@pytest.mark.parametrize("gpu", [True, False], ids=["gpu-spec", "cpu-spec"])
def test_gpu_pods_get_the_cuda_build_and_cpu_pods_the_cpu_build(gpu: bool) -> None:
    model = _gpu_model() if gpu else load_specs([ROOT / "gitops/models/fraud-detector.yaml"])[0][0].model
    cpu_image, cuda_image = (f"{_repository()}:{image_build.variant_tag(ROOT, variant)}" for variant in ("cpu", "cuda"))
    containers = list(_containers(render_objects([model], "prod", image_build.base_tag(ROOT))))
    gpu_pods = [container for container, gpus in containers if gpus > 0]
    assert len(gpu_pods) == (2 if gpu else 0)  # the tune and train worker groups
    for container, gpus in containers:
        assert container["image"] == (cuda_image if gpus > 0 else cpu_image), (container["name"], gpus)
        assert gpus == math.ceil(gpus)  # Kubernetes schedules whole GPUs; Ray shares them within the pod
