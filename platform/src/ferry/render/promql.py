"""Small PromQL builders shared by the alert rules and the dashboards.

Every metric a rule or a dashboard reads is named once, in the catalogue `ferry.contract.metrics` (whose
entries know the name Prometheus sees after Ray's `ray_` prefix), and documented from it in
docs/reference/metrics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from ferry.contract.metrics import LATENCY_BOUNDARIES_MS


def eq(label: str, value: str) -> str:
    return f'{label}="{value}"'


def regex(label: str, pattern: str) -> str:
    return f'{label}=~"{pattern}"'


def sel(metric: str, *matchers: str) -> str:
    """A selector; always with braces, so every metric name in an expression is followed by `{`."""
    return f"{metric}{{{','.join(matchers)}}}"


def number(value: float) -> str:
    """A float as PromQL reads it, without binary noise: 1 - 0.999 is 0.001, not 0.0010000000000000009."""
    return f"{value:.12g}"


def le_matcher(boundary: float) -> str:
    """Match one histogram bucket whatever the exporter's float formatting: `100` and `100.0` alike.

    Ray's OpenCensus path writes `str(bound)`, the OpenTelemetry path may write `100.0`, and Prometheus 3
    normalises `le` on ingestion; the regex accepts each spelling of the same number.
    """
    if float(boundary).is_integer():
        return regex("le", f"{int(boundary)}(\\\\.0)?")
    return regex("le", number(boundary).replace(".", "\\\\."))


def bucket_at_or_above(value: float, boundaries: Sequence[float] = LATENCY_BOUNDARIES_MS) -> tuple[float, str]:
    """The histogram boundary a threshold is measured at, and a sentence saying so when it is not exact."""
    finite = sorted(float(b) for b in boundaries)
    above = [b for b in finite if b >= value - 1e-9]
    if above and math.isclose(above[0], value):
        return above[0], ""
    if above:
        return above[0], (f" {number(value)} ms is not a latency bucket boundary, so the nearest boundary at or"
                          f" above it, {number(above[0])} ms, is used.")
    return finite[-1], (f" {number(value)} ms is above the largest latency bucket boundary, so"
                        f" {number(finite[-1])} ms is used (stricter than the SLO).")


def increased(selector: str, window: str, by: Sequence[str] = ()) -> str:
    """At least one event in `window` on a counter, counting the series a first event creates.

    A labelled counter (prometheus_client, OpenTelemetry) appears with the value 1 at its first event, and
    `increase()` never counts a series' first sample; `unless ... offset` catches a series that is new.
    """
    grouping = f"sum by ({', '.join(by)}) " if by else "sum"
    return (f"{grouping}(increase({selector}[{window}])) > 0"
            f"\nor {grouping}({selector} unless {selector} offset {window}) > 0")
