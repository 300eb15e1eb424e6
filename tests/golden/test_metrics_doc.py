"""docs/reference/metrics.md is generated from the metric catalogue (`python -m ferry.render.metrics_doc`);
CI fails here when the committed page is stale."""

from __future__ import annotations

from pathlib import Path

import pytest

from ferry.contract import metrics
from ferry.render import metrics_doc

ROOT = Path(__file__).resolve().parents[2]


def test_committed_metrics_reference_is_current() -> None:
    committed = ROOT / metrics_doc.METRICS_DOC_PATH
    assert committed.read_text() == metrics_doc.metrics_markdown(), \
        f"{metrics_doc.METRICS_DOC_PATH} is stale: run `python -m ferry.render.metrics_doc`"


def test_every_catalogued_metric_has_one_row() -> None:
    text = metrics_doc.metrics_markdown()
    for metric in metrics.CATALOGUE:
        name = f"`{metric.series}<window>`" if metric.windowed else f"`{metric.series}`"
        assert text.count(f"| {name} |") == 1, metric.series


def test_the_writer_checks_and_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert metrics_doc.main(["--check"]) == 1  # nothing written yet
    assert metrics_doc.main([]) == 0
    assert metrics_doc.main(["--check"]) == 0
    (tmp_path / metrics_doc.METRICS_DOC_PATH).write_text("hand-edited\n")
    assert metrics_doc.main(["--check"]) == 1
