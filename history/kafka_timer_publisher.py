"""Publishing one shard's timers to its partition of the timer topic (docs/queues.md, "History
publishes"). A timer row leaves the store only once the broker acknowledged its message: the
publisher hands the shard's flush the timer outbox's ack level (a task id), which never passes a
row the broker has not acknowledged.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from history.kafka_resources import KafkaResources
from history.queues import READ_PAGE, TimerTask
from history.store.base import EVERY_TIMER_ROW, ExecutionStore
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


class TimerPublisher:
    """Sends timers of shard `shard_id` to (topic, partition), keyed by the shard id. Every send
    is retried until acknowledged or the publisher stops (then the row stays in the store and the
    next owner publishes it).

    The store's timer outbox is ordered by task id, and so is its ack level (`outbox_ack_level`):
    the highest task id at or below which every outbox row was acknowledged by the broker, never
    past a row still being sent, nor past a stored row the start-up scan has not read yet. The
    shard persists it in its periodic flush and range-deletes the rows at or below it: one range
    tombstone per flush, none per timer, and the next owner's scan starts above it."""

    def __init__(self, shard_id: int, topic: str, partition: int, kafka: KafkaResources,
                 on_progress: Callable[[], None], outbox_ack_level: int = 0) -> None:
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
        # Outbox rows handed to publishing and not yet acknowledged (task ids), with a heap of them
        # whose stale entries are dropped lazily: the lowest bounds the level.
        self._pending: set[int] = set()
        self._pending_heap: list[int] = []
        self._max_added = outbox_ack_level  # the highest outbox task id handed to publishing
        self._scanned = outbox_ack_level  # the start-up scan of the stored outbox read every row up to this id
        self._scan_done = False
        self._drop_before = 0  # see take_drop_before

    # ------------------------------------------------------------ the outbox

    def publish_rows(self, timers: list[TimerTask]) -> None:
        """Publish outbox rows just committed (in task-id order); they count for the level once
        acknowledged. Rows already on their way are skipped."""
        fresh = self._track(timers)
        if self._stopped or not fresh:
            return
        task = asyncio.create_task(self._publish_rows(fresh), name=f"timer-publish-{self.shard_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _track(self, timers: list[TimerTask]) -> list[TimerTask]:
        """Count `timers` (outbox rows) as pending; return those that were not already."""
        fresh = [t for t in timers if t.task_id not in self._pending]
        for t in fresh:
            self._pending.add(t.task_id)
            heapq.heappush(self._pending_heap, t.task_id)
            self._max_added = max(self._max_added, t.task_id)
        return fresh

    async def _publish_rows(self, timers: list[TimerTask]) -> None:
        await self._publish(timers, rows=True)

    def outbox_ack_level(self) -> int:
        """Every outbox row with a task id at or below this was acknowledged by the broker."""
        heap = self._pending_heap
        while heap and heap[0] not in self._pending:
            heapq.heappop(heap)
        level = max(self._max_added, self._scanned) if self._scan_done else self._scanned
        if heap:
            level = min(level, heap[0] - 1)
        return level

    async def publish_stored(self, store: ExecutionStore) -> int:
        """Publish every row of the shard's timer outbox above its ack level, a page at a time in
        task-id order (each page acknowledged before the next is read); return how many rows were
        found. The scan starts at the persisted level, so it crosses none of the rows deleted."""
        count = 0
        while not self._stopped:
            rows = await store.read_timer_outbox(self.shard_id, self._scanned, READ_PAGE)
            count += len(rows)
            fresh = self._track([TimerTask(r.fire_time_ms, r.task_id, codec.loads(r.data)) for r in rows])
            # Counted as pending before the level may rely on the scan having read them.
            if rows:
                self._scanned = max(self._scanned, rows[-1].task_id)
            if len(rows) < READ_PAGE:
                self._scan_done = True
            await self._publish(fresh, rows=True)
            if self._scan_done:
                break
        return count

    async def publish_stored_timers(self, store: ExecutionStore, start_ms: int) -> int:
        """Publish the shard's due-time timer rows (not the outbox's: left by the store-backed
        timer queue before the shard moved to Kafka, or by an older build's Kafka mode, which wrote
        there) due from `start_ms` up (the timer ack level, or where an earlier Kafka owner dropped
        them), in due order; once all are acknowledged, offer to drop every such row
        (`take_drop_before`), so that later scans start past their tombstones. Return how many
        rows were found."""
        if start_ms >= EVERY_TIMER_ROW:
            return 0  # dropped already, and nobody wrote any since
        after, count = (start_ms - 1, EVERY_TIMER_ROW), 0
        while not self._stopped:
            rows = await store.read_timer_tasks(self.shard_id, after, EVERY_TIMER_ROW, READ_PAGE)
            count += len(rows)
            await self._publish([TimerTask(r.fire_time_ms, r.task_id, codec.loads(r.data)) for r in rows], rows=False)
            if len(rows) < READ_PAGE:
                break
            after = (rows[-1].fire_time_ms, rows[-1].task_id)
        # Nothing writes such rows while this node owns the shard (its writes go to the outbox,
        # the range_id fences everyone else): every one there was is on the broker now.
        if not self._stopped:
            self._drop_before = EVERY_TIMER_ROW
        return count

    def take_drop_before(self) -> int:
        out, self._drop_before = self._drop_before, 0
        return out

    def restore_drop_before(self, before: int) -> None:
        self._drop_before = max(self._drop_before, before)

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
            self._pending.discard(t.task_id)

    def stop(self) -> None:
        """Stop sending: rows not yet acknowledged stay in the store for the next owner."""
        self._stopped = True
        for task in list(self._tasks):
            task.cancel()

    async def wait_stopped(self) -> None:
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
