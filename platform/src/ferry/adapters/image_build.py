"""The ferry image's immutable tag: `<version>-<hash of what the image is built from>` (`ferry image tag`).

The inputs are read from platform/deploy/Dockerfile itself (its plain COPY sources, with the Dockerfile and its
.dockerignore), so the hash covers exactly what the build copies: a change to any of them is a new tag, which
image.yml pushes once and the rendered prod manifests name, while a change to docs, tests or gitops/rendered (the
manifests that carry the tag: hashing them would be a cycle) is not. Deterministic across machines: paths
sorted, POSIX-relative, file bytes only (no mtimes or modes), and the .dockerignore's `**/` exclusions
(__pycache__, .pyc) applied as the build applies them.
"""

from __future__ import annotations

import hashlib
import shlex
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

from ferry.contract.errors import FerryError
from ferry.render.profiles import FERRY_VERSION, ImageVariant, image_tag

DOCKERFILE = "platform/deploy/Dockerfile"
DOCKERIGNORE = f"{DOCKERFILE}.dockerignore"  # BuildKit reads <Dockerfile>.dockerignore next to the Dockerfile
HASH_LENGTH = 12  # hex digits: 48 bits, far from a collision among one repository's builds


class ImageInputsMissing(FerryError):
    """The checkout lacks the Dockerfile or a file it copies, so the image's tag cannot be computed."""


def build_inputs(home: Path) -> list[str]:
    """Every file the image is built from, relative to the checkout, sorted."""
    dockerfile = _read(home, DOCKERFILE)
    excluded = _excluded_names(_read(home, DOCKERIGNORE))
    files = {DOCKERFILE, DOCKERIGNORE}
    for source in copy_sources(dockerfile):
        path = home / source
        if path.is_file():
            files.add(source)
        elif path.is_dir():
            files.update(p.relative_to(home).as_posix() for p in path.rglob("*")
                         if p.is_file() and not _is_excluded(p.relative_to(home).as_posix(), excluded))
        else:
            raise ImageInputsMissing(f"{DOCKERFILE} copies {source}, which is not in {home}: "
                                     "run ferry from the repository's checkout (FERRY_HOME)")
    return sorted(files)


def copy_sources(dockerfile: str) -> list[str]:
    """The build-context paths of every COPY that does not copy from another stage."""
    sources: list[str] = []
    for line in dockerfile.splitlines():
        words = shlex.split(line, comments=True) if line.strip().upper().startswith("COPY ") else []
        if words and not any(word.startswith("--from") for word in words):
            sources.extend(word.rstrip("/") for word in words[1:-1] if not word.startswith("--"))
    return sources


def content_hash(home: Path) -> str:
    digest = hashlib.sha256()
    for rel in build_inputs(home):
        data = (home / rel).read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:HASH_LENGTH]


def base_tag(home: Path) -> str:
    """The CPU build's tag for this checkout; the CUDA build's adds its suffix (ferry.render.profiles)."""
    return f"{FERRY_VERSION}-{content_hash(home)}"


def variant_tag(home: Path, variant: ImageVariant) -> str:
    return image_tag(base_tag(home), variant)


def _read(home: Path, rel: str) -> str:
    try:
        return (home / rel).read_text()
    except FileNotFoundError:
        raise ImageInputsMissing(
            f"{rel} is not in {home}: the prod manifests name the image by a hash of its build inputs, "
            "so render them from the repository's checkout (FERRY_HOME)") from None


def _excluded_names(dockerignore: str) -> list[str]:
    """The .dockerignore's `**/<name>` patterns: names excluded at any depth."""
    return [line.strip()[3:] for line in dockerignore.splitlines() if line.strip().startswith("**/")]


def _is_excluded(rel: str, excluded: list[str]) -> bool:
    return any(fnmatch(part, pattern) for part in PurePosixPath(rel).parts for pattern in excluded)
