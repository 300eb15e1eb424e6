"""The image's immutable tag: a hash of exactly what the Dockerfile copies, the same on every machine."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ferry.adapters import image_build
from ferry.cli.app import app
from ferry.render.profiles import FERRY_VERSION

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = """\
FROM python:3.11-slim AS build
COPY pyproject.toml README.md ./
COPY --chown=1000:1000 src ./src
FROM build AS runtime
COPY --from=build /opt/venv /opt/venv
"""
DOCKERIGNORE = "*\n!pyproject.toml\n!README.md\n!src\n**/__pycache__\n**/*.pyc\n"
runner = CliRunner()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    files = {image_build.DOCKERFILE: DOCKERFILE, image_build.DOCKERIGNORE: DOCKERIGNORE,
             "pyproject.toml": "[project]\n", "README.md": "# x\n", "src/pkg/a.py": "A = 1\n",
             "src/pkg/b.py": "B = 2\n", "docs/guide.md": "not copied\n", "gitops/rendered/prod/x.yaml": "image: x\n"}
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


def test_inputs_are_what_the_dockerfile_copies_from_the_context() -> None:
    assert image_build.copy_sources(DOCKERFILE) == ["pyproject.toml", "README.md", "src"]
    assert image_build.copy_sources((ROOT / image_build.DOCKERFILE).read_text()) == [
        "pyproject.toml", "README.md", "platform/src", "workloads/src"]


def test_inputs_skip_what_the_build_ignores_and_what_it_does_not_copy(home: Path) -> None:
    (home / "src/pkg/__pycache__").mkdir()
    (home / "src/pkg/__pycache__/a.cpython-311.pyc").write_bytes(b"\0")
    (home / "src/pkg/c.pyc").write_bytes(b"\0")
    assert image_build.build_inputs(home) == [
        "README.md", image_build.DOCKERFILE, image_build.DOCKERIGNORE, "pyproject.toml", "src/pkg/a.py",
        "src/pkg/b.py"]


def test_hash_changes_with_content_only(home: Path) -> None:
    before = image_build.content_hash(home)
    assert re.fullmatch(r"[0-9a-f]{12}", before)
    os.utime(home / "src/pkg/a.py", (1, 1))  # mtimes are not content
    (home / "docs/guide.md").write_text("edited\n")  # not built into the image
    (home / "gitops/rendered/prod/x.yaml").write_text("image: y\n")  # the manifests that carry the tag
    assert image_build.content_hash(home) == before
    (home / "src/pkg/a.py").write_text("A = 2\n")
    assert image_build.content_hash(home) != before


def test_hash_sees_a_moved_file_and_a_dockerfile_edit(home: Path) -> None:
    before = image_build.content_hash(home)
    (home / "src/pkg/b.py").rename(home / "src/pkg/c.py")
    moved = image_build.content_hash(home)
    assert moved != before
    (home / image_build.DOCKERFILE).write_text(DOCKERFILE + "ENV X=1\n")
    assert image_build.content_hash(home) != moved


def test_base_and_variant_tags(home: Path) -> None:
    digest = image_build.content_hash(home)
    assert image_build.base_tag(home) == f"{FERRY_VERSION}-{digest}"
    assert image_build.variant_tag(home, "cpu") == f"{FERRY_VERSION}-{digest}"
    assert image_build.variant_tag(home, "cuda") == f"{FERRY_VERSION}-{digest}-cuda"


def test_missing_inputs_say_what_and_where(home: Path) -> None:
    (home / "src/pkg/a.py").unlink()
    (home / "src/pkg/b.py").unlink()
    (home / "src/pkg").rmdir()
    (home / "src").rmdir()
    with pytest.raises(image_build.ImageInputsMissing, match=r"copies src, which is not in .*FERRY_HOME"):
        image_build.build_inputs(home)
    (home / image_build.DOCKERFILE).unlink()
    with pytest.raises(image_build.ImageInputsMissing, match=r"platform/deploy/Dockerfile is not in"):
        image_build.base_tag(home)


def test_cli_prints_the_tag_and_its_inputs(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_HOME", str(home))
    assert runner.invoke(app, ["image", "tag"]).output == f"{image_build.base_tag(home)}\n"
    assert runner.invoke(app, ["image", "tag", "--variant", "cuda"]).output.strip().endswith("-cuda")
    assert runner.invoke(app, ["image", "tag", "--inputs"]).output.splitlines() == image_build.build_inputs(home)
    (home / image_build.DOCKERFILE).unlink()
    missing = runner.invoke(app, ["image", "tag"])
    assert missing.exit_code == 1 and "Dockerfile is not in" in missing.output
