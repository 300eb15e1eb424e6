"""A bounded, open-loop HTTP load generator for the reliability scenarios (loopback only).

Open loop: requests leave on a fixed schedule whether or not earlier ones have answered, so a stalled
server shows up as errors and latency instead of silently lowering the offered rate (the coordinated
omission a closed loop hides). Bounded three ways: a request count, a duration, and a cap on requests
in flight (past it a scheduled request is counted as `dropped`, never queued without bound). Only
127.0.0.1/localhost URLs are accepted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

LOOPBACK = ("127.0.0.1", "localhost", "::1")
QUIET_S = 5  # undisturbed seconds in a row that end an outage (see `outage`)


@dataclass
class Sample:
    sent_s: float  # since the start of the run
    status: int  # HTTP status; 0 when no response (connection error, timeout)
    latency_ms: float
    error: str = ""
    body: str = ""  # the start of a failed answer's body: which component answered it (proxy, replica, router)

    @property
    def answered_s(self) -> float:
        """When the answer (or the client's giving up) came, on the run's clock."""
        return self.sent_s + self.latency_ms / 1000


@dataclass
class LoadResult:
    rate: float
    duration_s: float
    samples: list[Sample] = field(default_factory=list)
    dropped: int = 0
    started_at: float = 0.0  # time.perf_counter() at the run's start: the origin of every `sent_s`

    def clock(self, perf_counter: float) -> float:
        """A `time.perf_counter()` reading taken beside the run (a fault injected), on the run's clock."""
        return perf_counter - self.started_at

    @property
    def sent(self) -> int:
        return len(self.samples)

    @property
    def ok(self) -> int:
        return sum(1 for s in self.samples if s.status == 200)

    @property
    def failed(self) -> list[Sample]:
        return [s for s in self.samples if s.status != 200]

    def failure_examples(self) -> dict[str, str]:
        """The first failed answer's body per status (which component answered it)."""
        examples: dict[str, str] = {}
        for sample in self.failed:
            examples.setdefault(str(sample.status) if sample.status else (sample.error or "no answer"), sample.body)
        return examples

    def statuses(self) -> dict[str, int]:
        return dict(Counter(str(s.status) if s.status else (s.error or "no answer") for s in self.samples))

    def percentile(self, q: float, only_ok: bool = True) -> float:
        values = sorted(s.latency_ms for s in self.samples if s.status == 200 or not only_ok)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(q / 100 * len(values)))]

    def summary(self) -> dict[str, Any]:
        return {"rate_rps": self.rate, "duration_s": round(self.duration_s, 1), "sent": self.sent, "ok": self.ok,
                "failed": len(self.failed), "dropped": self.dropped, "statuses": self.statuses(),
                "p50_ms": round(self.percentile(50), 1), "p99_ms": round(self.percentile(99), 1),
                "max_ms": round(max((s.latency_ms for s in self.samples), default=float("nan")), 1)}


def check_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    if host not in LOOPBACK:
        raise ValueError(f"load is only ever sent to loopback, not {host!r}")


async def _one(client: httpx.AsyncClient, url: str, body: Any, started: float, out: list[Sample]) -> None:
    sent = time.perf_counter()
    try:
        response = await client.post(url, json=body)
        latency_ms = (time.perf_counter() - sent) * 1000
        failed = response.status_code != 200
        out.append(Sample(sent - started, response.status_code, latency_ms, body=response.text[:160] if failed else ""))
    except httpx.HTTPError as exc:
        out.append(Sample(sent - started, 0, (time.perf_counter() - sent) * 1000, type(exc).__name__))


async def _run(url: str, payload: Callable[[int], Any], rate: float, duration_s: float, max_requests: int,
               max_in_flight: int, timeout_s: float, stop: threading.Event | None) -> LoadResult:
    result = LoadResult(rate=rate, duration_s=0.0)
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits, trust_env=False) as client:
        started = result.started_at = time.perf_counter()
        tasks: set[asyncio.Task[None]] = set()
        for i in range(max_requests):
            due = started + i / rate
            if due - started >= duration_s or (stop is not None and stop.is_set()):
                break
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            if len(tasks) >= max_in_flight:
                result.dropped += 1
                continue
            task = asyncio.create_task(_one(client, url, payload(i), started, result.samples))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 1)
        result.duration_s = time.perf_counter() - started
    result.samples.sort(key=lambda s: s.sent_s)
    return result


def run_load(url: str, payload: Callable[[int], Any], *, rate: float, duration_s: float, max_requests: int = 100_000,
             max_in_flight: int = 64, timeout_s: float = 10.0, stop: threading.Event | None = None) -> LoadResult:
    """POST `payload(i)` to `url` at `rate` requests/s for at most `duration_s` and `max_requests`
    (or until `stop` is set, for load that runs beside a scenario in another thread)."""
    check_loopback(url)
    if not (0 < rate <= 2_000 and 0 < duration_s <= 1_800 and 0 < max_requests <= 1_000_000):
        raise ValueError("rate, duration and count must be positive and bounded (rate <= 2000/s, <= 30 min)")
    return asyncio.run(_run(url, payload, rate, duration_s, max_requests, max_in_flight, timeout_s, stop))


def _second(sample: Sample, fault_s: float) -> int:
    return int((sample.answered_s - fault_s) // 1.0)


def _disturbed_seconds(hit: list[Sample], bad: list[Sample], fault_s: float) -> set[int]:
    """The seconds after the fault in which an answer failed or over a tenth were slow (see `outage`)."""
    answers = Counter(_second(s, fault_s) for s in hit)
    slow = Counter(_second(s, fault_s) for s in bad if s.status == 200)
    failing = {_second(s, fault_s) for s in bad if s.status != 200}
    return failing | {second for second, n in slow.items() if 10 * n > answers[second]}


def _first_quiet_run(hit: list[Sample], disturbed: set[int], fault_s: float) -> float:
    """The first second of the first QUIET_S seconds in a row, after the first disturbed one, that each had
    answers and none disturbed (inf when the run never had them): where the outage ended. A second with no
    answer is not quiet; quiet seconds before the outage began do not end it."""
    answered = {_second(s, fault_s) for s in hit}
    run_start: int | None = None
    for second in range(min(disturbed, default=0) + 1, max(answered, default=-1) + 1):
        if second not in answered or second in disturbed:
            run_start = None
            continue
        run_start = second if run_start is None else run_start
        if second - run_start + 1 >= QUIET_S:
            return run_start
    return float("inf")


def by_second(result: LoadResult, fault_s: float) -> str:
    """Answers per second after the fault as `second:answered/failed/slow`, to read when a bound is missed."""
    hit = [s for s in result.samples if s.answered_s >= fault_s]
    normal_ms = _normal_ms(result, fault_s)
    seconds = sorted({_second(s, fault_s) for s in hit})
    counts = {second: [0, 0, 0] for second in seconds}
    for sample in hit:
        count = counts[_second(sample, fault_s)]
        count[0] += 1
        count[1] += sample.status != 200
        count[2] += sample.status == 200 and sample.latency_ms > normal_ms
    return " ".join(f"{second}:{a}/{f}/{w}" for second, (a, f, w) in counts.items())


def _normal_ms(result: LoadResult, fault_s: float) -> float:
    before = sorted(s.latency_ms for s in result.samples if s.answered_s < fault_s and s.status == 200)
    return max(100.0, 5 * before[len(before) // 2], 2 * before[int(0.99 * len(before))]) if before else 100.0


def outage(result: LoadResult, fault_s: float) -> dict[str, Any]:
    """What a fault at `fault_s` (on the run's clock: `LoadResult.clock`) cost.

    A request is hit by the fault when it was sent after it or was still unanswered at it (in flight in a
    process that was killed). Counted: hit requests that failed, those of them the client gave up on (no
    answer: the server let them hang), when the first request sent after the fault was answered 200, and
    the recovery time: from the fault to the last bad answer of the outage. Slow is over 5x the pre-fault
    p50 and 2x its p99, at least 100 ms: a machine that was noisy before the fault is not held to a quieter
    standard after it. A second (of answers, counted from the fault) is disturbed when any answer in it
    failed or more than a tenth of them were slow: one request held up by a GC pause or a scrape long after
    the service is back is not the outage going on, a stalled queue is. The outage ends at the first
    QUIET_S undisturbed seconds in a row; a slow spell after that (the shared machine busy elsewhere) is
    reported as `slow_spells_after_recovery`, not counted, but a failed answer is never excused: the
    recovery time reaches the last one. A server that queues requests through an outage loses none but
    stalls: the stall is the cost.
    """
    normal_ms = _normal_ms(result, fault_s)
    hit = [s for s in result.samples if s.answered_s >= fault_s]
    failed = [s for s in hit if s.status != 200]
    bad = [s for s in hit if s.status != 200 or s.latency_ms > normal_ms]
    disturbed = _disturbed_seconds(hit, bad, fault_s)
    quiet_from = _first_quiet_run(hit, disturbed, fault_s)
    counted = [s for s in bad if _second(s, fault_s) in disturbed
               and (s.status != 200 or _second(s, fault_s) < quiet_from)]
    recovered_s = max((s.answered_s - fault_s for s in counted), default=0.0)
    slowest = max((s.latency_ms for s in hit if s.status == 200), default=float("nan"))
    first_ok = min((s.answered_s - fault_s for s in hit if s.status == 200 and s.sent_s >= fault_s),
                   default=float("nan"))
    return {"failed_after_fault": len(failed), "sent_after_fault": sum(s.sent_s >= fault_s for s in hit),
            "in_flight_at_fault": sum(s.sent_s < fault_s for s in hit),
            "no_answer_after_fault": sum(s.status == 0 for s in failed),
            "slow_after_fault": len(bad) - len(failed), "slow_means_over_ms": round(normal_ms, 1),
            "first_ok_after_fault_s": round(first_ok, 2),
            "recovery_s": round(recovered_s, 2),
            "slow_spells_after_recovery": sorted(second for second in disturbed if second >= quiet_from),
            "slowest_ok_ms": round(slowest, 1),
            "slowest_failure_ms": round(max((s.latency_ms for s in failed), default=0.0), 1),
            "failure_statuses": dict(Counter(str(s.status) if s.status else s.error for s in failed))}
