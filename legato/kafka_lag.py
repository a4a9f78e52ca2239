"""Consumer lag per partition, from librdkafka's statistics (legato_kafka_consumer_lag).

Every consumer of the project reports its statistics every `queues.statistics_interval_ms` (its
`stats_cb`, on the thread that polls it); the lag of each partition it reads is kept with the
time it was reported, and read by Prometheus's scrape. A partition read by several consumer
groups (the timer partitions: one group per shard) reports the largest lag; a report older than
STALE_AFTER_S (its consumer closed) is dropped.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

from legato import metrics
from legato.metrics import Sample

STALE_AFTER_S = 60.0  # a partition's lag not reported again for this long is dropped (its consumer closed)

_lock = threading.Lock()
# (group, topic, partition) -> (lag in messages, monotonic time of the report)
_lags: dict[tuple[str, str, int], tuple[int, float]] = {}


def on_stats(stats_json: str) -> None:
    """librdkafka's stats_cb: keep the consumer lag of every partition the consumer reads."""
    try:
        stats = json.loads(stats_json)
    except ValueError:
        return
    if stats.get("type") != "consumer":
        return
    group = str(stats.get("client_id", ""))
    now = time.monotonic()
    found: dict[tuple[str, str, int], tuple[int, float]] = {}
    for topic, t in (stats.get("topics") or {}).items():
        for part, p in (t.get("partitions") or {}).items():
            lag = p.get("consumer_lag", -1)
            if int(part) >= 0 and isinstance(lag, int) and lag >= 0:
                found[(group, topic, int(part))] = (lag, now)
    with _lock:
        _lags.update(found)


def gauges() -> Iterator[Sample]:
    now = time.monotonic()
    worst: dict[tuple[str, str], int] = {}
    with _lock:
        for key, (lag, at) in list(_lags.items()):
            if now - at > STALE_AFTER_S:
                del _lags[key]
                continue
            label = (key[1], str(key[2]))
            worst[label] = max(worst.get(label, 0), lag)
    for label, lag in worst.items():
        yield "legato_kafka_consumer_lag", label, float(lag)


metrics.sources.add(gauges)
