"""What a shard needs from its timer queue, whichever carries the timers: the store's timer rows
(history.queues.TimerQueueProcessor) or a Kafka partition (history.kafka_timers.KafkaTimerQueue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from history.fire_lags import FireLags
from history.store.base import ExecutionStore, ShardInfo


@dataclass(slots=True)
class TimerTask:
    """A timer as the queues hold it: when it fires, its row's task id, what it does."""

    fire_time_ms: int
    task_id: int
    data: dict[str, Any]


FireTimer = Callable[[TimerTask], Awaitable[None]]


class TimerQueue(Protocol):
    """One shard's timers. The shard hands over the timers of each committed write (`add`), asks
    for the (fire_time_ms, task_id) of the timer rows it may delete (`take_deletes`), deletes them
    conditioned on its range_id and reports back (`deleted`, or `restore_deletes` if the delete
    failed). The queue fires due timers through the callback it was built with; history drops a
    timer its run no longer expects, so a queue may fire a timer twice, but never early."""

    lags: FireLags

    def start(self) -> None: ...

    def stop(self) -> None:
        """Stop at once (the shard was lost): no more fires, publishes or commits."""

    async def close(self) -> None:
        """Stop (shutdown), keep what is done for the next owner, release resources."""

    def outbox_until(self) -> int | None:
        """Where the shard writes a timer: due at or before this (ms), to the store's timer outbox
        (ordered by task id), else to the timer rows ordered by due time; None: every timer to
        the timer rows. Read when a write is prepared; it only moves up."""

    def add(self, timers: list[TimerTask]) -> None:
        """The timers of a committed write: every one when outbox_until() is None, else those
        written to the outbox."""

    def add_far(self, timers: list[TimerTask]) -> None:
        """The timers of a committed write that went to the timer rows because they were due past
        outbox_until() (which may have moved past them since)."""

    def poke(self) -> None:
        """The clock may have moved (a controllable clock): look again."""

    async def fire_due(self) -> int:
        """Fire every timer due now and wait for the effects (tests)."""

    def ack_level(self) -> int | None:
        """The fire time (ms) below which every stored timer of the shard has fired with a durable
        effect (the shard persists it and range-deletes below it), or None if this queue keeps no
        such level (its rows leave the store by the point deletes of `take_deletes` alone)."""

    def outbox_ack_level(self) -> int | None:
        """The task id at or below which every timer outbox row was handed on for good (the shard
        persists it and range-deletes at or below it), or None if this queue uses no outbox."""

    def take_drop_before(self) -> int:
        """A due time (ms) below which every timer row of the store (not the outbox) was handed on
        for good, for the shard's flush to range-delete without moving the timer ack level; 0: none.
        Taken once; `restore_drop_before` gives it back if the flush failed."""

    def restore_drop_before(self, before: int) -> None: ...

    def take_deletes(self) -> list[tuple[int, int]]: ...

    def restore_deletes(self, deletes: list[tuple[int, int]]) -> None: ...

    def deleted(self, deletes: list[tuple[int, int]]) -> None: ...

    @property
    def pending(self) -> int: ...

    @property
    def next_due_ms(self) -> int | None:
        """The due time of the earliest timer waiting in memory (None: none), for the overdue gauge."""


class TimerDeletes:
    """The delete bookkeeping of a TimerQueue (`take_deletes`, `restore_deletes`, `deleted`):
    `_held` has the task ids of the timer rows the queue holds in memory and has not seen deleted,
    `_deletes` the (fire_time_ms, task_id) of those the shard's flush may now delete."""

    def __init__(self) -> None:
        self._held: set[int] = set()
        self._deletes: list[tuple[int, int]] = []

    def _deletable(self, t: TimerTask) -> None:
        self._deletes.append((t.fire_time_ms, t.task_id))

    def take_deletes(self) -> list[tuple[int, int]]:
        out, self._deletes = self._deletes, []
        return out

    def restore_deletes(self, deletes: list[tuple[int, int]]) -> None:
        self._deletes.extend(deletes)

    def deleted(self, deletes: list[tuple[int, int]]) -> None:
        for _, task_id in deletes:
            self._held.discard(task_id)


# (the shard as acquired, store, clock, fire) -> that shard's timer queue
TimerQueueFactory = Callable[[ShardInfo, ExecutionStore, Callable[[], int], FireTimer], TimerQueue]
