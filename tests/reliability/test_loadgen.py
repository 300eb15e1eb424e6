"""The load generator's bounds and its outage arithmetic (pure; no server)."""

from __future__ import annotations

import pytest

from tests.reliability.loadgen import LoadResult, Sample, by_second, outage, run_load


@pytest.mark.parametrize("url", ["http://10.0.0.1/predict", "http://example.com/", "http://0.0.0.0:8000/"])
def test_only_loopback(url: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        run_load(url, lambda i: {}, rate=1, duration_s=1)


@pytest.mark.parametrize("kwargs", [{"rate": 0, "duration_s": 1}, {"rate": 5000, "duration_s": 1},
                                    {"rate": 1, "duration_s": 3600}, {"rate": 1, "duration_s": 1, "max_requests": 0}])
def test_bounded(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="bounded"):
        run_load("http://127.0.0.1:1/", lambda i: {}, **kwargs)


def test_refused_connections_are_counted_not_raised() -> None:
    result = run_load("http://127.0.0.1:1/predict", lambda i: {}, rate=20, duration_s=0.5, timeout_s=1)
    assert result.sent == 10 and result.ok == 0 and set(result.statuses()) == {"ConnectError"}


def samples(spec: list[tuple[float, int, float]]) -> LoadResult:
    return LoadResult(rate=10, duration_s=10, samples=[Sample(t, status, ms, "" if status else "ReadTimeout")
                                                       for t, status, ms in spec])


def test_outage_counts_failures_and_stalls_after_the_fault() -> None:
    result = samples([(0.0, 200, 10), (0.5, 200, 12), (1.0, 200, 10),  # before: p50 10 ms -> slow is > 100 ms
                      (2.0, 200, 3000), (2.5, 503, 5), (3.0, 0, 1000), (4.0, 200, 900), (6.0, 200, 11)])
    lost = outage(result, fault_s=2.0)
    assert lost["failed_after_fault"] == 2 and lost["slow_after_fault"] == 2 and lost["sent_after_fault"] == 5
    assert lost["recovery_s"] == pytest.approx(3.0)  # the 2.0 s request took 3 s: the last bad answer ends at 5 s
    assert lost["failure_statuses"] == {"503": 1, "ReadTimeout": 1} and lost["slowest_ok_ms"] == 3000


def test_no_fault_cost_is_zero() -> None:
    lost = outage(samples([(0.0, 200, 10), (1.0, 200, 10), (2.0, 200, 12)]), fault_s=1.0)
    assert lost["failed_after_fault"] == 0 and lost["recovery_s"] == 0.0


def test_a_request_in_flight_at_the_fault_is_hit_by_it() -> None:
    """Sent before a SIGKILL but still on the killed replica: the kill failed it, not the time before it."""
    result = samples([(0.0, 200, 10), (1.0, 200, 10), (1.9, 500, 150), (1.95, 200, 10), (2.5, 408, 5000)])
    lost = outage(result, fault_s=2.0)
    assert lost["in_flight_at_fault"] == 1 and lost["sent_after_fault"] == 1 and lost["failed_after_fault"] == 2
    assert lost["no_answer_after_fault"] == 0 and lost["slowest_failure_ms"] == 5000
    assert lost["recovery_s"] == pytest.approx(5.5)  # the 408 sent at 2.5 s answered at 7.5 s


def test_events_beside_a_run_go_on_its_clock() -> None:
    result = run_load("http://127.0.0.1:1/predict", lambda i: {}, rate=10, duration_s=0.3, timeout_s=1)
    assert result.started_at > 0 and result.clock(result.started_at + 1.5) == pytest.approx(1.5)


def test_one_slow_answer_among_normal_ones_is_not_the_outage_going_on() -> None:
    """A GC pause 20 s after the service is back slows one request; the outage ended long before it."""
    steady = [(t / 25, 200, 10.0) for t in range(50)]  # 2 s before the fault: p50 10 ms -> slow is > 100 ms
    after = [(2.0 + t / 25, 200, 10.0) for t in range(25 * 30)]
    after[25 * 3] = (after[25 * 3][0], 503, 5.0)  # a failure 3 s after the fault
    after[25 * 20] = (after[25 * 20][0], 200, 180.0)  # one slow answer among 25 that second, 20 s after
    lost = outage(samples(steady + after), fault_s=2.0)
    assert lost["failed_after_fault"] == 1 and lost["slow_after_fault"] == 1
    assert lost["recovery_s"] == pytest.approx(3.0, abs=0.01)  # the failure 3 s after the fault


def test_a_second_of_mostly_slow_answers_is_still_the_outage() -> None:
    steady = [(t / 25, 200, 10.0) for t in range(50)]
    after = [(2.0 + t / 25, 200, 150.0 if 25 * 6 <= t < 25 * 7 else 10.0) for t in range(25 * 10)]
    lost = outage(samples(steady + after), fault_s=2.0)
    assert lost["recovery_s"] == pytest.approx(7.11, abs=0.05)  # the last slow answer of the 6th second


def test_a_slow_spell_long_after_the_service_is_back_is_reported_not_counted() -> None:
    """The shared machine busy elsewhere 20 s after the outage ended: the spell is named, recovery is not
    pushed out to it. A failure that late would still count (the next test)."""
    steady = [(t / 25, 200, 10.0) for t in range(50)]
    after = [(2.0 + t / 25, 200, 10.0) for t in range(25 * 30)]
    after[:25 * 4] = [(t, 408, 5000.0) if i % 5 == 0 else (t, 200, 10.0) for i, (t, _, _) in enumerate(after[:100])]
    after[25 * 22:25 * 24] = [(t, 200, 400.0) for t, _, _ in after[25 * 22:25 * 24]]
    lost = outage(samples(steady + after), fault_s=2.0)
    assert lost["recovery_s"] == pytest.approx(8.8, abs=0.01)  # the last 408: sent at 5.8 s, answered 5 s later
    assert lost["slow_spells_after_recovery"] == [22, 23, 24]  # 400 ms answers sent at 22-24 s, answered later
    assert lost["slow_after_fault"] == 50


def test_a_failure_long_after_the_service_is_back_is_never_excused() -> None:
    steady = [(t / 25, 200, 10.0) for t in range(50)]
    after = [(2.0 + t / 25, 503 if t < 25 or t == 25 * 20 else 200, 10.0) for t in range(25 * 30)]
    lost = outage(samples(steady + after), fault_s=2.0)
    assert lost["recovery_s"] == pytest.approx(20.01, abs=0.01)  # the 503 sent 20 s after the fault
    assert lost["failed_after_fault"] == 26


def test_a_slow_spell_before_the_service_is_quiet_again_is_the_outage() -> None:
    steady = [(t / 25, 200, 10.0) for t in range(50)]
    after = [(2.0 + t / 25, 503 if t < 25 else 200, 400.0 if 25 * 4 <= t < 25 * 5 else 10.0) for t in range(250)]
    lost = outage(samples(steady + after), fault_s=2.0)
    assert lost["recovery_s"] == pytest.approx(5.36, abs=0.01)  # slow second 4 (last answer 4.96 + 0.4 s) came
    assert lost["slow_spells_after_recovery"] == []  # before 5 quiet seconds in a row


def test_answers_by_second_after_the_fault() -> None:
    result = samples([(0.0, 200, 10), (1.0, 200, 10), (2.1, 408, 5000), (2.5, 200, 300), (3.0, 200, 10)])
    assert by_second(result, fault_s=2.0) == "0:1/0/1 1:1/0/0 5:1/1/0"
