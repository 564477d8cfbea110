"""The one latency and throughput timer: evaluate's per-model latency, export's end-to-end
latency and batched throughput, and the benchmarks all measure with it.

Timings are reported figures only: nothing in the pipeline is chosen by them. Importing this
module is cheap (no TensorFlow).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Latency:
    """Wall time of one call, in milliseconds: median and 99th percentile."""

    p50_ms: float
    p99_ms: float

    def rounded(self, digits: int = 4) -> dict[str, float]:
        """``{"p50_ms": ..., "p99_ms": ...}`` rounded for a metrics file."""
        return {"p50_ms": round(self.p50_ms, digits), "p99_ms": round(self.p99_ms, digits)}


def latency(call: Callable[[Any], object], arguments: Iterable[Any], *,
            warm_up: int = 5) -> Latency:
    """Time ``call(argument)`` once per argument, after ``warm_up`` untimed calls on the first
    arguments (tracing, first-call allocations)."""
    arguments = list(arguments)
    if not arguments:
        raise ValueError("latency needs at least one call to time")
    for argument in arguments[:warm_up]:
        call(argument)
    times = np.empty(len(arguments))
    for index, argument in enumerate(arguments):
        started = time.perf_counter()
        call(argument)
        times[index] = (time.perf_counter() - started) * 1000.0
    p50, p99 = np.percentile(times, [50, 99])
    return Latency(float(p50), float(p99))


def throughput(call: Callable[[], object], items_per_call: int, *, seconds: float,
               min_calls: int = 1) -> float:
    """Items per second of ``call()`` (each call handling ``items_per_call`` items), run for
    at least ``seconds`` and ``min_calls`` calls after one warm-up call."""
    call()
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done < min_calls:
        call()
        done += 1
    return done * items_per_call / (time.perf_counter() - started)
