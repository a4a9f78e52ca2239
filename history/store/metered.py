"""Store metrics: every operation of an ExecutionStore class counted and timed, by store and
operation (legato_store_operations_total, legato_store_errors_total,
legato_store_latency_seconds), without touching the operations themselves."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from legato import metrics

T = TypeVar("T")

# The ExecutionStore operations worth a series each (history/store/base.py).
OPERATIONS = ("acquire_shard", "renew_range", "update_shard", "get_current_run", "get_run", "append_history",
              "write", "commit", "read_history", "delete_run", "read_transfer_tasks", "read_timer_tasks",
              "read_timer_outbox", "scan_runs")


def metered(store: str) -> Callable[[type[T]], type[T]]:
    """Class decorator: wrap each of OPERATIONS the class has with its metrics."""

    def wrap(cls: type[T]) -> type[T]:
        for name in OPERATIONS:
            fn = getattr(cls, name, None)
            if fn is not None:
                setattr(cls, name, _timed(fn, store, name))
        return cls

    return wrap


def _timed(fn: Callable[..., Awaitable[Any]], store: str, operation: str) -> Callable[..., Awaitable[Any]]:
    count = metrics.store_operations.labels(store, operation)  # resolved once: the hot path only counts
    latency = metrics.store_latency.labels(store, operation)

    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        count.inc()
        try:
            return await fn(*args, **kwargs)
        except Exception as e:
            metrics.store_errors.labels(store, operation, metrics.error_kind(e)).inc()
            raise
        finally:
            latency.observe(time.perf_counter() - started)

    return timed
