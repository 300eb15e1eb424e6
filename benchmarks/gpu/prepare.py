"""Build what the GPU check carries to the device machine: one archive of the Python packages its image lacks.

The device machine (one NVIDIA H200; see docs/benchmarks/gpu.md) has python3 3.12 with torch, numpy, pandas,
pyarrow, scikit-learn, pyyaml, requests, click, msgpack, protobuf and fsspec, but no ray, pydantic or mlflow,
and no network. `ferry.steps.train` and `ferry.steps.tune` import mlflow (for the step's run) and pydantic
(the spec), so the check carries those too, at the versions this venv runs, as cp312 manylinux wheels.

Ray's wheel (~79 MB) holds a 32 MB Java jar that Python never loads, and the dashboard's web UI; both are
left out. The rest is unpacked and written as one `.tar.xz` (xz shrinks Ray's binaries far more than the
wheel's zip does, and tar keeps their execute bits), so the working tree plus the carry stays under the
`run` tool's 64 MiB.

Run here, with the project's venv (its versions are the ones carried)::

    .venv/bin/python benchmarks/gpu/prepare.py        # writes .gpu-carry/site.tar.xz, prints sizes
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CARRY = ROOT / ".gpu-carry"
ARCHIVE = CARRY / "site.tar.xz"
MANIFEST = CARRY / "manifest.json"
WHEELS = ROOT / ".gpu-wheels"
LIMIT = 64 * 2**20
# What the device image lacks along the check's import path (ray[train,tune], ferry.steps.{train,tune},
# fraud_detection). protobuf and typing-extensions are in the image, but mlflow's generated protos and
# pydantic need versions at least as new as this venv's, so this venv's travel and come first on the path.
PACKAGES = (
    "ray", "jsonschema", "referencing", "rpds-py", "jsonschema-specifications", "tensorboardX",
    "pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "pydantic-settings",
    "mlflow-skinny", "databricks-sdk", "opentelemetry-api", "opentelemetry-sdk", "opentelemetry-proto",
    "opentelemetry-semantic-conventions", "fastapi", "starlette", "cachetools", "croniter", "python-dotenv",
    "sqlparse", "importlib-metadata", "protobuf",
)
# Never used by the check: Ray's Java jar and its dashboard UI (the check starts Ray without a dashboard).
DROPPED = ("ray/jars/", "ray/dashboard/client/build/")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")


def pinned() -> list[str]:
    """Each package at the version this interpreter has; the check must run what the tests run."""
    missing = [name for name in PACKAGES if _version(name) is None]
    if missing:
        raise SystemExit(f"this Python ({sys.executable}) lacks {', '.join(missing)}; run prepare.py with the "
                         "project's venv, e.g. `.venv/bin/python benchmarks/gpu/prepare.py`")
    return [f"{name}=={_version(name)}" for name in PACKAGES]


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def download(requirements: list[str]) -> list[Path]:
    WHEELS.mkdir(exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(WHEELS),
                    *requirements], check=True)
    wanted = {_wheel_key(r.split("==")[0]) + "-" + r.split("==")[1] for r in requirements}
    wheels = [w for w in WHEELS.glob("*.whl") if "-".join(w.name.split("-")[:2]).lower() in wanted]
    if len(wheels) != len(requirements):
        found = sorted(w.name for w in wheels)
        raise SystemExit(f"expected {len(requirements)} wheels in {WHEELS}, found {len(wheels)}: {found}; "
                         "delete the folder and run again")
    return wheels


def _wheel_key(name: str) -> str:
    return name.replace("-", "_").lower()


def bundle(wheels: list[Path]) -> int:
    """Unpack every wheel's files (less DROPPED and the `.data/` scripts) into one tar.xz; returns bytes dropped."""
    CARRY.mkdir(exist_ok=True)
    dropped = 0
    with tarfile.open(ARCHIVE, "w:xz", preset=6) as tar:
        for wheel in sorted(wheels):
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    if info.is_dir() or ".data/" in info.filename or info.filename.startswith(DROPPED):
                        dropped += info.file_size if not info.is_dir() else 0
                        continue
                    entry = tarfile.TarInfo(info.filename)
                    entry.size = info.file_size
                    entry.mode = (info.external_attr >> 16) & 0o777 or 0o644
                    tar.addfile(entry, io.BytesIO(zf.read(info)))
    return dropped


def tree_bytes() -> int:
    """What a `run` call sends besides the carry: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    return sum((ROOT / name).stat().st_size for name in listed if name and (ROOT / name).is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    requirements = pinned()
    wheels = download(requirements)
    wheel_bytes = sum(w.stat().st_size for w in wheels)
    dropped = bundle(wheels)
    MANIFEST.write_text(json.dumps({"python": "cp312", "packages": requirements, "dropped": list(DROPPED)},
                                   indent=2) + "\n")
    carry = ARCHIVE.stat().st_size + MANIFEST.stat().st_size
    tree = tree_bytes()
    mib = 2**20
    print(f"wheels: {len(wheels)}, {wheel_bytes / mib:.1f} MiB; left out {dropped / mib:.1f} MiB unpacked "
          f"({', '.join(DROPPED)})")
    print(f"carry {CARRY.relative_to(ROOT)}/: {carry / mib:.1f} MiB; working tree: {tree / mib:.1f} MiB; "
          f"together {(carry + tree) / mib:.1f} MiB of the run tool's 64 MiB")
    if carry + tree > LIMIT:
        raise SystemExit("over the run tool's 64 MiB: the call would be refused; drop more from the archive")


if __name__ == "__main__":
    main()
