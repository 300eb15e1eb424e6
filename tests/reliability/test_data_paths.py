"""Data sources that try to leave the data root, or name a scheme ferry does not read, are refused: in
the spec (a clear error with file, line, field and an example), and at run time for what only the disk
can show (a symlink inside the root that points out of it)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ferry.adapters.registry import Registry
from ferry.adapters.workloads import load_workload
from ferry.contract.errors import StepFailed
from ferry.settings import Settings
from ferry.spec import load_spec_text
from ferry.spec.hashing import spec_hash
from ferry.steps import data as data_step
from ferry.steps.context import StepContext

ROOT = Path(__file__).resolve().parents[2]
LITE = (ROOT / "gitops/models/fraud-detector-lite.yaml").read_text()
SIMULATOR = "    source: simulator\n    params: {customers: 300, terminals: 600, days: 40, seed: 1}\n"
assert SIMULATOR in LITE


def with_data(source: str) -> str:
    return LITE.replace(SIMULATOR, source)


def parquet(path: str) -> str:
    return with_data(f"    source: parquet\n    path: {json.dumps(path)}\n")  # JSON strings are YAML too


UNSAFE = {
    "/etc/passwd": "absolute",  # pragma: allowlist secret
    "~/data.parquet": "'~'",
    "~root/x.parquet": "'~'",
    "../outside.parquet": "'..'",
    "data/../../outside.parquet": "'..'",
    "data/..": "'..'",
    "https://example.com/x.parquet": "URL scheme",
    "s3://bucket/x.parquet": "URL scheme",
    "file:///etc/passwd": "URL scheme",  # pragma: allowlist secret
    "file:x.parquet": "URL scheme",
    "hdfs:/x": "URL scheme",
    "C:/data/x.parquet": "URL scheme or drive",
    "%2e%2e/outside.parquet": "percent-encoded",
    "..%2fetc%2fpasswd": "percent-encoded",  # pragma: allowlist secret
    "data%00.parquet": "percent-encoded",
    "..\\outside.parquet": "'\\\\'",
    "data\\..\\..\\x": "'\\\\'",
    "a\tb.parquet": "control characters",
    "x.parquet\x00.csv": "control characters",
    " ": "empty",
}


@pytest.mark.parametrize("path", sorted(UNSAFE))
def test_unsafe_paths_are_rejected_naming_file_line_and_field(path: str) -> None:
    text = parquet(path)
    spec, errors = load_spec_text(text, "gitops/models/lite.yaml")
    assert spec is None
    [error] = errors
    assert error.file == "gitops/models/lite.yaml" and error.path == "spec.data.path"
    assert text.splitlines()[error.line - 1].strip().startswith("path:")
    assert "inside the data root" in error.message and UNSAFE[path].strip("'") in error.message
    assert "e.g. 'transactions/2018.parquet'" in error.message


@pytest.mark.parametrize("path", ["x.parquet", "raw/2018/tx.parquet", "./x.parquet", "a..b.parquet", "a~b.parquet"])
def test_safe_paths_pass(path: str) -> None:
    spec, errors = load_spec_text(parquet(path), "m.yaml")
    assert not errors and spec is not None and spec.model.spec.data.path == path


@pytest.mark.parametrize("source", ["s3", "http", "file", "csv", "Simulator"])
def test_unknown_sources_are_rejected(source: str) -> None:
    spec, errors = load_spec_text(with_data(f"    source: {source}\n    path: x.parquet\n"), "m.yaml")
    assert spec is None
    assert [e.path for e in errors] == ["spec.data.source"]
    assert "'simulator', 'parquet', 'log' or 'dataset'" in errors[0].message


def frame() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2, 3]})


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    root, outside = tmp_path / "data", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    frame().to_parquet(outside / "x.parquet")
    frame().to_parquet(root / "inside.parquet")
    (root / "escape.parquet").symlink_to(outside / "x.parquet")
    (root / "escape-dir").symlink_to(outside, target_is_directory=True)
    (root / "alias.parquet").symlink_to(root / "inside.parquet")
    return root, outside


def data_spec(path: str):  # type: ignore[no-untyped-def]
    spec, errors = load_spec_text(parquet(path), "m.yaml")
    assert spec is not None, errors
    return spec.model


@pytest.mark.parametrize("path", ["escape.parquet", "escape-dir/x.parquet"])
def test_symlink_out_of_the_data_root_is_refused_at_run_time(roots: tuple[Path, Path], path: str) -> None:
    root, _ = roots
    workload = load_workload("fraud_detection")
    with pytest.raises(ValueError, match=r"leaves the data root"):
        workload.load_data(data_spec(path).spec.data, root)


def test_symlink_inside_the_root_is_read(roots: tuple[Path, Path]) -> None:
    root, _ = roots
    loaded = load_workload("fraud_detection").load_data(data_spec("alias.parquet").spec.data, root)
    assert loaded.equals(frame())


def test_data_step_turns_the_escape_into_a_step_failure(roots: tuple[Path, Path], tmp_path: Path) -> None:
    """The real `ferry step data` code path, on a real (sqlite-backed, serverless) MLflow store."""
    root, _ = roots
    model = data_spec("escape.parquet")
    settings = Settings(home=tmp_path, data_root=root, outputs_dir=tmp_path / "out")
    ctx = StepContext(settings, model, spec_hash(model), "wf-escape", "data", load_workload("fraud_detection"),
                      Registry(f"sqlite:///{tmp_path / 'mlflow.db'}"))
    with pytest.raises(StepFailed, match=r"cannot build the dataset: data path 'escape.parquet' leaves the data root"):
        data_step.run(ctx)
    assert not (tmp_path / "out").exists()  # nothing emitted
