"""docs/reference/metrics.md is generated from the metric catalogue (`ferry generate`); tests/golden/test_generated.py
checks the committed page for drift with every other generated file."""

from __future__ import annotations

from ferry.contract import metrics
from ferry.render import metrics_doc


def test_every_catalogued_metric_has_one_row() -> None:
    text = metrics_doc.metrics_markdown()
    for metric in metrics.CATALOGUE:
        name = f"`{metric.series}<window>`" if metric.windowed else f"`{metric.series}`"
        assert text.count(f"| {name} |") == 1, metric.series
