"""Publishing one shard's timers to its partition of the timer topic (docs/queues.md, "History
publishes"). A timer row leaves the store only once the broker acknowledged its message: the
publisher hands the shard's flush the (fire_time_ms, task_id) of acknowledged rows, never others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from history.kafka_resources import KafkaResources
from history.queues import READ_PAGE, TimerTask
from history.store.base import ExecutionStore
from history.timers import TimerDeletes
from legato import codec
from legato.kafka import TimerMessage, encode_timer

log = logging.getLogger("legato.history")

MAX_RETRY_DELAY_S = 10.0


class Backoff:
    """Doubling delays between retries of something that must eventually happen."""

    def __init__(self, first_s: float = 0.05, cap_s: float = MAX_RETRY_DELAY_S) -> None:
        self._first = self._delay = first_s
        self._cap = cap_s
        self.failures = 0

    def reset(self) -> None:
        """It worked: the next failure starts over with the first delay."""
        self._delay = self._first
        self.failures = 0

    async def wait(self) -> None:
        self.failures += 1
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self._cap)

    def loud(self) -> bool:
        """Whether the latest failure is worth a warning (the first, then every 20th)."""
        return self.failures <= 1 or self.failures % 20 == 0


class TimerPublisher(TimerDeletes):
    """Sends timers of shard `shard_id` to (topic, partition), keyed by the shard id. Every send
    is retried until acknowledged or the publisher stops (then the row stays in the store and the
    next owner publishes it)."""

    def __init__(self, shard_id: int, topic: str, partition: int, kafka: KafkaResources,
                 on_progress: Callable[[], None]) -> None:
        super().__init__()  # _held: store rows being published, or acked and not yet deleted
        self.shard_id = shard_id
        self._topic = topic
        self._partition = partition
        self._key = str(shard_id).encode()
        self._kafka = kafka
        self._on_progress = on_progress
        self._tasks: set[asyncio.Task[None]] = set()
        self.unacked = 0  # timers being published and not yet acknowledged
        self.max_offset = -1  # the highest offset the broker acknowledged to this publisher
        self._stopped = False

    # ------------------------------------------------------------ store rows

    def publish_rows(self, timers: list[TimerTask]) -> None:
        """Publish timer rows just committed (or found in the store); they become deletable once
        acknowledged. Rows already on their way are skipped."""
        fresh = [t for t in timers if t.task_id not in self._held]
        if self._stopped or not fresh:
            return
        self._held.update(t.task_id for t in fresh)
        task = asyncio.create_task(self._publish_rows(fresh), name=f"timer-publish-{self.shard_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_rows(self, timers: list[TimerTask]) -> None:
        await self._publish(timers, rows=True)

    async def publish_stored(self, store: ExecutionStore) -> int:
        """Publish every timer row of the shard still in the store, a page at a time (each page
        acknowledged before the next is read); return how many rows were found."""
        after, count = (-1, 1 << 62), 0
        while not self._stopped:
            rows = await store.read_timer_tasks(self.shard_id, after, 1 << 62, READ_PAGE)
            count += len(rows)
            fresh = [TimerTask(r.fire_time_ms, r.task_id, codec.loads(r.data)) for r in rows
                     if r.task_id not in self._held]
            self._held.update(t.task_id for t in fresh)
            await self._publish(fresh, rows=True)
            if len(rows) < READ_PAGE:
                break
            after = (rows[-1].fire_time_ms, rows[-1].task_id)
        return count

    # ------------------------------------------------------------ copies

    async def publish_copy(self, timer: TimerTask) -> int | None:
        """Publish a timer again (moved forward in the log); return the new offset once acked,
        None if the publisher stopped first."""
        offsets = await self._publish([timer], rows=False)
        return offsets[0] if offsets else None

    # ------------------------------------------------------------ sending

    async def _publish(self, timers: list[TimerTask], rows: bool) -> list[int]:
        """Send until every timer is acknowledged (or the publisher stops); return their offsets."""
        left: list[TimerTask] = list(timers)
        offsets: list[int] = []
        backoff = Backoff()
        self.unacked += len(left)
        try:
            while left and not self._stopped:
                results = await asyncio.gather(*(self._send(t) for t in left), return_exceptions=True)
                failed = [t for t, r in zip(left, results, strict=True) if isinstance(r, BaseException)]
                for t, r in zip(left, results, strict=True):
                    if not isinstance(r, BaseException):
                        offsets.append(r)
                        self._acked(t, r, rows)
                left = failed
                self._on_progress()
                if failed:
                    err = next(r for r in results if isinstance(r, BaseException))
                    log.log(logging.WARNING if backoff.loud() else logging.DEBUG,
                            "shard %d: publishing %d timer(s) failed (%d time(s)), retrying: %s",
                            self.shard_id, len(failed), backoff.failures + 1, err)
                    await backoff.wait()
        finally:
            self.unacked -= len(left)
            self._on_progress()
        return offsets

    async def _send(self, t: TimerTask) -> int:
        value = encode_timer(TimerMessage(self.shard_id, t.fire_time_ms, t.task_id, t.data))
        return await self._kafka.send(self._topic, self._partition, self._key, value)

    def _acked(self, t: TimerTask, offset: int, rows: bool) -> None:
        self.unacked -= 1
        self.max_offset = max(self.max_offset, offset)
        if rows:
            self._deletable(t)

    def stop(self) -> None:
        """Stop sending: rows not yet acknowledged stay in the store for the next owner."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()

    async def wait_stopped(self) -> None:
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
