"""A checkout of its own for CLI tests: the specs, and the image's build inputs the prod render hashes."""

from __future__ import annotations

import shutil
from pathlib import Path

from ferry.adapters import image_build

ROOT = Path(__file__).resolve().parents[2]


def copy_image_inputs(home: Path) -> None:
    """What `ferry image tag` hashes (the prod manifests name the image by it), copied from this checkout."""
    for rel in image_build.build_inputs(ROOT):
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, home / rel)
