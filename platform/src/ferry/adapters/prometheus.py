"""A thin client for Prometheus' HTTP query API (instant queries), with bounded retries."""

from __future__ import annotations

from typing import Any

import httpx
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential


class PrometheusUnavailable(Exception):
    pass


class Prometheus:
    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._client = httpx.Client(timeout=timeout_s, trust_env=False)

    @retry(retry=retry_if_exception_type(httpx.TransportError), stop=stop_after_attempt(3),
           wait=wait_exponential(multiplier=0.5, max=4), reraise=True)
    def _get(self, query: str) -> dict[str, Any]:
        response = self._client.get(f"{self.base_url}/api/v1/query", params={"query": query})
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def vector(self, query: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) per series of an instant vector query."""
        try:
            body = self._get(query)
        except (httpx.HTTPError, ValueError) as exc:
            raise PrometheusUnavailable(f"Prometheus at {self.base_url} did not answer {query!r}: {exc}") from exc
        if body.get("status") != "success":
            raise PrometheusUnavailable(f"query failed: {body.get('error', body)}")
        return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]

    def close(self) -> None:
        self._client.close()
