"""Fault injection for tests and reliability runs, in the spirit of Istio's HTTP fault injection.

Off unless the Serve application's args say `allow_fault_injection: true` (`AppArgs`, default false). The
renderer never sets it, so no RayService carries it; `deploy_local(..., allow_fault_injection=True)` is
the only way to turn it on. While it is off nothing here runs and the version tags below are ignored.

While it is on, the router reads two model-version tags of the champion and the challenger on every
registry poll (so setting or clearing them takes effect within `poll_interval_s`, without a redeploy):

    ferry.fault.error_rate   0..1: that share of the version's rows fails: the HTTP request answers 500
                             and the row counts as `outcome="server_error"` for that version and variant
                             (it is not scored, and, unlike a real challenger failure, not answered by
                             the champion: the point is what a canary sees when users get errors)
    ferry.fault.latency_ms   ≥ 0: every request that touches the version is answered that much later
                             (an `asyncio.sleep` in the request, so the replica keeps serving others);
                             the delay is inside the router's latency histogram

A missing or malformed tag is no fault. A `/predict/batch` request fails as a whole when any of its rows
drew a fault (its other rows were scored and count as ok).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ferry.contract.errors import FerryError
from ferry.contract.names import TAG_FAULT_ERROR_RATE, TAG_FAULT_LATENCY_MS
from ferry.serving.schemas import Prediction

MAX_LATENCY_MS = 60_000.0

ReadTags = Callable[[str], Mapping[str, str]]


class InjectedFault(FerryError):
    """A row that failed on purpose (ferry.fault.error_rate); already counted as a server error."""

    def __init__(self, version: str, variant: str) -> None:
        super().__init__(f"injected fault: {variant} version {version} failed this request (ferry.fault.error_rate)")
        self.version, self.variant = version, variant


@dataclass(frozen=True)
class Fault:
    error_rate: float = 0.0
    latency_ms: float = 0.0

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Fault | None:
        fault = cls(_number(tags.get(TAG_FAULT_ERROR_RATE), 1.0),
                    _number(tags.get(TAG_FAULT_LATENCY_MS), MAX_LATENCY_MS))
        return fault if fault.error_rate > 0 or fault.latency_ms > 0 else None


def _number(raw: str | None, upper: float) -> float:
    try:
        value = float(raw) if raw is not None else 0.0
    except ValueError:
        return 0.0
    return min(max(value, 0.0), upper) if math.isfinite(value) else 0.0


class FaultBook:
    """The faults of the versions being served, re-read with every registry poll (never on a request)."""

    def __init__(self, read_tags: ReadTags, draw: Callable[[], float] = random.random,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._read_tags = read_tags
        self._draw = draw
        self._sleep = sleep
        self.faults: dict[str, Fault] = {}

    def refresh(self, versions: Iterable[str | None]) -> None:
        found = {}
        for version in {v for v in versions if v}:
            fault = Fault.from_tags(self._read_tags(version))
            if fault is not None:
                found[version] = fault
        self.faults = found  # one reference swap: request handlers never see a half-built dict

    def fails(self, version: str) -> bool:
        fault = self.faults.get(version)
        return fault is not None and fault.error_rate > 0 and self._draw() < fault.error_rate

    def delay_s(self, versions: Iterable[str]) -> float:
        return max((self.faults[v].latency_ms for v in versions if v in self.faults), default=0.0) / 1000

    async def delay(self, versions: Iterable[str]) -> None:
        """Wait the injected latency of the versions involved, if any."""
        seconds = self.delay_s(versions)
        if seconds > 0:
            await self._sleep(seconds)

    async def settle(self, results: Sequence[Prediction | InjectedFault]) -> list[Prediction]:
        """Apply the delay of the versions involved, then raise the first injected failure, if any."""
        await self.delay({r.version for r in results})
        return predictions(results)


def predictions(results: Sequence[Prediction | InjectedFault]) -> list[Prediction]:
    """The predictions, or the first injected failure raised."""
    out = []
    for result in results:
        if isinstance(result, InjectedFault):
            raise result
        out.append(result)
    return out


async def settle(results: Sequence[Prediction | InjectedFault], book: FaultBook | None) -> list[Prediction]:
    return predictions(results) if book is None else await book.settle(results)


async def settle_batch(book: FaultBook, versions: set[str], fault: InjectedFault | None) -> None:
    """`settle` for a column-wise batch: the delay of the versions involved, then its first failure."""
    await book.delay(versions)
    if fault is not None:
        raise fault
