"""Timer fire lag: how late each timer fired (the clock when its queue handed it to history minus
its due time), kept by every timer queue so a benchmark can report p50/p99."""

from __future__ import annotations

from collections import deque

from legato import metrics

LAG_SAMPLES = 100_000  # the last this many fire lags are kept (under a megabyte)


class FireLags:
    """The last `capacity` lags in ms. A bounded window rather than a histogram, so a benchmark
    reports exact percentiles of the run it measured (its timers are the most recent ones)."""

    def __init__(self, capacity: int = LAG_SAMPLES) -> None:
        self._lags: deque[int] = deque(maxlen=capacity)
        self.count = 0  # every lag ever recorded, also those that left the window

    def record(self, lag_ms: int) -> None:
        self._lags.append(lag_ms)
        self.count += 1
        metrics.timer_fire_lag.observe(max(0, lag_ms) / 1000.0)

    def samples(self) -> list[int]:
        return list(self._lags)

    def clear(self) -> None:
        self._lags.clear()


def percentile(samples: list[int], p: float) -> int | None:
    """The p-th percentile (0 < p <= 100, nearest rank) of `samples`; None if there are none."""
    if not samples:
        return None
    ordered = sorted(samples)
    rank = -(-len(ordered) * p // 100)  # ceil(n * p / 100)
    return ordered[min(len(ordered), max(1, int(rank))) - 1]


def merged(lags: list[FireLags]) -> list[int]:
    """The samples of several queues (every shard of a node), sorted."""
    return sorted(v for lg in lags for v in lg.samples())
