"""The one latency and throughput timer (handwriting.timing), on a fake clock: what it calls,
what it counts, and what it reports."""

from __future__ import annotations

import pytest

from handwriting import timing


class FakeClock:
    """perf_counter that moves only when the timed call says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(timing.time, "perf_counter", fake)
    return fake


def test_latency_times_each_argument_after_the_warm_up(clock):
    seen = []

    def call(milliseconds):
        seen.append(milliseconds)
        clock.now += milliseconds / 1000.0

    measured = timing.latency(call, [1.0, 2.0, 3.0, 4.0, 100.0], warm_up=2)
    assert seen == [1.0, 2.0, 1.0, 2.0, 3.0, 4.0, 100.0]  # two warm-up calls, then each once
    assert measured.p50_ms == pytest.approx(3.0)
    assert 4.0 < measured.p99_ms <= 100.0
    assert measured.rounded(1) == {"p50_ms": 3.0, "p99_ms": round(measured.p99_ms, 1)}


def test_latency_needs_a_call_to_time():
    with pytest.raises(ValueError, match="at least one call"):
        timing.latency(lambda _: None, [])


def test_throughput_counts_items_per_second(clock):
    calls = []

    def call():
        calls.append(1)
        clock.now += 0.25  # a quarter of a second per call of 10 items: 40 items/s

    assert timing.throughput(call, 10, seconds=1.0) == pytest.approx(40.0)
    assert len(calls) == 1 + 4  # the warm-up, then calls until a second has passed


def test_throughput_makes_at_least_the_minimum_calls(clock):
    calls = []

    def call():
        calls.append(1)
        clock.now += 5.0

    timing.throughput(call, 1, seconds=1.0, min_calls=3)
    assert len(calls) == 1 + 3
