"""`PrometheusQuery` over Prometheus' HTTP query API (instant queries), with bounded retries.

Growth since an instant is written as an exact counter difference, `x - (x @ since or x * 0)`: the value
now minus the value the last scrape before `since` held (0 for a series born after it), clamped at 0 per
series, summed after the difference. Unlike `increase(x[w])` it does not extrapolate to the window's
edges, so a series one scrape old counts fully and every histogram bucket is scaled by the same factor
(per-bucket extrapolation made the PSI of two identical models read up to 0.7). `since` is the caller's
wall clock read against Prometheus' (`@` takes unix time): the two must agree to within a scrape
interval, which NTP-synchronised nodes do.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from ferry.adapters.prometheus_port import PrometheusQuery, PrometheusUnavailable, Sample, Selector
from ferry.adapters.tls import tls_context


def promql_selector(series: Selector) -> str:
    """`metric{a="x",b=~"1|2"}`: a tuple of values is a regex alternation of the values, each escaped."""
    matchers = [f"{name}=~{json.dumps('|'.join(re.escape(v) for v in wanted))}" if isinstance(wanted, tuple)
                else f"{name}={json.dumps(wanted)}" for name, wanted in series.labels.items()]
    return f"{series.metric}{{{','.join(matchers)}}}"


def since_start(series: str, since_unix: float) -> str:
    """PromQL for how much each series of a counter grew since `since_unix`, exactly."""
    return f"clamp_min({series} - ({series} @ {since_unix:.3f} or {series} * 0), 0)"


def growth_query(series: Selector, by: tuple[str, ...], since_unix: float) -> str:
    return f"sum by ({', '.join(by)}) ({since_start(promql_selector(series), since_unix)})"


class Prometheus(PrometheusQuery):
    def __init__(self, base_url: str, timeout_s: float = 5.0, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s, trust_env=False, transport=transport,
                                    verify=tls_context())

    @retry(retry=retry_if_exception_type(httpx.TransportError), stop=stop_after_attempt(3),
           wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
    def _get(self, query: str) -> dict[str, Any]:
        response = self._client.get(f"{self.base_url}/api/v1/query", params={"query": query})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) per series of an instant vector query (any PromQL)."""
        try:
            body = self._get(query)
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.base_url} did not answer {query!r}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"query failed: {body.get('error', body)}")
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def growth_since(self, series: Selector, by: tuple[str, ...], since_unix: float) -> list[Sample]:
        return [Sample(labels, value) for labels, value in self.vector(growth_query(series, by, since_unix))]


    def close(self) -> None:
        self._client.close()
