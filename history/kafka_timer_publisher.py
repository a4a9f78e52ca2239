"""Publishing one shard's timers to its partition of the timer topic (docs/queues.md, "History
publishes", "Held timers" and "Far timers"). A timer row leaves the store only once the broker
acknowledged its message, or once the run it belongs to no longer expects it: the publisher hands
the shard's flush the timer outbox's ack level (a task id) and the due-time rows' drop level (ms),
neither of which passes a row still waiting to be sent or acknowledged.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable

from history.kafka_resources import KafkaResources
from history.queues import READ_PAGE, TimerTask
from history.retries import Backoff
from history.store.base import EVERY_TIMER_ROW, ExecutionStore
from legato import codec, metrics
from legato.kafka import TimerMessage, encode_timer

log = logging.getLogger("legato.history")
_TIMERS_UNSENT = metrics.kafka_timers_unsent

# What a published timer is, for what its acknowledgement releases.
_OUTBOX = 0  # a row of the timer outbox: counts for the outbox ack level
_ROW = 1  # a due-time timer row (due past the boundary when written): counts for the rows' drop level
_COPY = 2  # a copy of a timer already in the log (re-published forward): no row

# A held timer is sent this long before it is due (docs/queues.md, "Held timers"), so that the
# shard's consumer has it before it comes due, however late the broker acknowledges.
PUBLISH_MARGIN_MS = 1_000

# (timer) -> True when no run will ever expect it (history judges on the run's committed state).
TimerObsolete = Callable[[TimerTask], bool]


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
                 on_progress: Callable[[], None], outbox_ack_level: int = 0, rows_from_ms: int = 0,
                 until_ms: int = 0, *, clock: Callable[[], int] | None = None, hold_ms: int = 0,
                 obsolete: TimerObsolete | None = None) -> None:
        """`outbox_ack_level`: where the start-up scan of the outbox begins (a task id);
        `rows_from_ms`: where scans of the due-time timer rows begin (every row due earlier was
        dropped); `until_ms`: the first boundary (timers due at or before it go to the outbox).
        With `hold_ms`, `clock` and `obsolete`, a just-committed outbox timer waits in memory up
        to `hold_ms` (and no later than PUBLISH_MARGIN_MS before it is due), and is not sent at
        all if by then `obsolete` says no run expects it."""
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
        # Far timers (docs/queues.md, "Far timers"): due past the boundary `_until` when written,
        # they wait in the store's due-time rows; a scan publishes them as the boundary moves up.
        self._until = max(until_ms, rows_from_ms)
        self._rows_read = rows_from_ms - 1  # every row due at or before this was read by a completed scan
        self._rows_pending: set[tuple[int, int]] = set()  # rows published, not yet acknowledged
        self._rows_heap: list[tuple[int, int]] = []  # the same, lazily: the lowest bounds the drop level
        self._dropped = rows_from_ms  # the last drop level handed to the shard
        self._scan_lock = asyncio.Lock()
        # Held timers (docs/queues.md, "Held timers"): outbox rows not sent yet, in a heap by when
        # they are to be looked at again; they stay pending, so the ack level waits for them.
        self._clock = clock
        self._hold_ms = hold_ms if clock is not None and obsolete is not None else 0
        self._obsolete = obsolete
        self._held: list[tuple[int, int, TimerTask]] = []  # (release ms, task id, timer)
        self._release_at: int | None = None  # when the armed wake-up looks at the heap (ms)
        self._release_handle: asyncio.TimerHandle | None = None
        self.unsent = 0  # held or far timers never sent: their run no longer expected them

    # ------------------------------------------------------------ the outbox

    def publish_rows(self, timers: list[TimerTask]) -> None:
        """Publish outbox rows just committed (in task-id order), or hold those due later (see
        `_hold`); they count for the level once acknowledged (or found obsolete). Rows already on
        their way are skipped."""
        fresh = self._track(timers)
        if self._stopped or not fresh:
            return
        self._send_rows(self._hold(fresh))

    def _send_rows(self, timers: list[TimerTask]) -> None:
        if not timers:
            return
        self.unacked += len(timers)  # at once: whoever waits for the publisher to catch up sees them
        task = asyncio.create_task(self._publish_rows(timers), name=f"timer-publish-{self.shard_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------ held timers

    def _hold(self, timers: list[TimerTask]) -> list[TimerTask]:
        """Keep back the timers not due within the margin, each until hold_ms from now or the
        margin before it is due, whichever is first; return those to send now. Most of a run's
        timers guard something that ends within milliseconds (a workflow task's timeout, an
        activity's): looked at again later, they are usually obsolete and never reach the log."""
        if not self._hold_ms or self._clock is None:
            return timers
        now = self._clock()
        send: list[TimerTask] = []
        for t in timers:
            release = min(t.fire_time_ms - PUBLISH_MARGIN_MS, now + self._hold_ms)
            if release <= now:
                send.append(t)
            else:
                heapq.heappush(self._held, (release, t.task_id, t))
        self._arm()
        return send

    @property
    def held(self) -> int:
        """Timers held back, not yet looked at again."""
        return len(self._held)

    def release_due(self) -> int:
        """Look at the held timers whose time has come: send those a run may still expect, count
        the others as done (their rows go with the outbox's range delete). Returns how many were
        looked at. Runs on its own when their time comes; tests with a controllable clock call it."""
        if self._stopped or self._clock is None or not self._held:
            return 0
        now, send, looked = self._clock(), [], 0
        while self._held and self._held[0][0] <= now:
            _, _, t = heapq.heappop(self._held)
            looked += 1
            if self._is_obsolete(t):
                self._pending.discard(t.task_id)
                self._count_unsent(1)
            else:
                send.append(t)
        self._send_rows(send)
        if looked > len(send):
            self._on_progress()  # the ack level may have moved
        self._arm()
        return looked

    def _is_obsolete(self, t: TimerTask) -> bool:
        assert self._obsolete is not None
        try:
            return self._obsolete(t)
        except Exception:  # a bug in the judgement must not lose a timer: send it
            log.exception("shard %d: could not tell whether timer %d is still expected; sending it",
                          self.shard_id, t.task_id)
            return False

    def _count_unsent(self, n: int) -> None:
        self.unsent += n
        _TIMERS_UNSENT.inc(n)

    def _arm(self) -> None:
        """Have `release_due` run when the earliest held timer's time comes."""
        if not self._held or self._stopped or self._clock is None:
            return
        at = self._held[0][0]
        if self._release_handle is not None:
            if self._release_at is not None and self._release_at <= at:
                return
            self._release_handle.cancel()
        self._release_at = at
        self._release_handle = asyncio.get_running_loop().call_later(
            max(0, at - self._clock()) / 1000, self._on_release)

    def _on_release(self) -> None:
        self._release_handle = None
        self._release_at = None
        if self._clock is not None and self._held and self._held[0][0] > self._clock():
            self._arm()  # woken early (the loop's clock and the shard's may drift apart)
            return
        self.release_due()

    def _track(self, timers: list[TimerTask]) -> list[TimerTask]:
        """Count `timers` (outbox rows) as pending; return those that were not already."""
        fresh = [t for t in timers if t.task_id not in self._pending]
        for t in fresh:
            self._pending.add(t.task_id)
            heapq.heappush(self._pending_heap, t.task_id)
            self._max_added = max(self._max_added, t.task_id)
        return fresh

    async def _publish_rows(self, timers: list[TimerTask]) -> None:
        await self._publish(timers, _OUTBOX, counted=True)

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
            await self._publish(fresh, _OUTBOX)
            if self._scan_done:
                break
        return count

    # ------------------------------------------------------------ far timers, in the due-time rows

    def outbox_until(self) -> int:
        return self._until

    def rows_behind(self) -> bool:
        """Whether the boundary moved past rows no completed scan has read (a scan failed)."""
        return self._rows_read < self._until

    def publish_far(self, timers: list[TimerTask]) -> None:
        """Timer rows just committed past the boundary the shard saw when it wrote them: those the
        boundary has passed since (a scan may have read before they were committed) are published
        here, and bound the rows' drop level until acknowledged; the others wait for a scan."""
        fresh = self._track_rows([t for t in timers if t.fire_time_ms <= self._until])
        if self._stopped or not fresh:
            return
        task = asyncio.create_task(self._publish_far(fresh), name=f"timer-publish-far-{self.shard_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish_far(self, timers: list[TimerTask]) -> None:
        await self._publish(timers, _ROW)

    async def publish_due_rows(self, store: ExecutionStore, until_ms: int) -> int:
        """Move the boundary up to `until_ms` and publish every due-time timer row up to it not
        published yet, a page at a time in due order (each page acknowledged before the next is
        read); return how many rows were found. Rows no run expects any more are not published
        (`_still_expected`). Commits from now on write timers due before the boundary to the
        outbox; rows they wrote before it moved reach `publish_far`."""
        async with self._scan_lock:
            self._until = max(self._until, until_ms)
            target, after, count = self._until, (self._rows_read, EVERY_TIMER_ROW), 0
            while not self._stopped:
                rows = await store.read_timer_tasks(self.shard_id, after, target, READ_PAGE)
                count += len(rows)
                found = [TimerTask(r.fire_time_ms, r.task_id, codec.loads(r.data)) for r in rows]
                await self._publish(self._track_rows(self._still_expected(found)), _ROW)
                if len(rows) < READ_PAGE:
                    if not self._stopped:  # (else some may not be acknowledged)
                        self._rows_read = target
                    break
                after = (rows[-1].fire_time_ms, rows[-1].task_id)
            return count

    def _still_expected(self, timers: list[TimerTask]) -> list[TimerTask]:
        """Far timers a scan read, less those no run expects any more (judged as held timers
        are, when holding is on). Most were written long before they come near (an activity's
        default five-minute start-to-close timeout) and guard work long done; those left out
        count as read, so the drop level passes them and their rows go with the range delete."""
        if not self._hold_ms or not timers:
            return timers
        keep = [t for t in timers if not self._is_obsolete(t)]
        if len(keep) < len(timers):
            self._count_unsent(len(timers) - len(keep))
        return keep

    def _track_rows(self, timers: list[TimerTask]) -> list[TimerTask]:
        fresh = [t for t in timers if (t.fire_time_ms, t.task_id) not in self._rows_pending]
        for t in fresh:
            key = (t.fire_time_ms, t.task_id)
            self._rows_pending.add(key)
            heapq.heappush(self._rows_heap, key)
        return fresh

    def take_drop_before(self) -> int:
        """A due time below which every timer row is on the broker: read by a completed scan or
        handed to `publish_far`, and acknowledged (0: no higher than the last one taken). The shard
        takes it under its write lock, so every row committed so far was handed over already."""
        heap = self._rows_heap
        while heap and heap[0] not in self._rows_pending:
            heapq.heappop(heap)
        level = self._rows_read + 1
        if heap:
            level = min(level, heap[0][0])
        if level <= self._dropped:
            return 0
        self._dropped = level
        return level

    def restore_drop_before(self, before: int) -> None:
        """The flush that carried `before` failed: offer it again."""
        if before:
            self._dropped = min(self._dropped, before - 1)

    # ------------------------------------------------------------ copies

    async def publish_copy(self, timer: TimerTask) -> int | None:
        """Publish a timer again (moved forward in the log); return the new offset once acked,
        None if the publisher stopped first."""
        offsets = await self._publish([timer], _COPY)
        return offsets[0] if offsets else None

    # ------------------------------------------------------------ sending

    async def _publish(self, timers: list[TimerTask], kind: int, counted: bool = False) -> list[int]:
        """Send until every timer is acknowledged (or the publisher stops); return their offsets.
        `counted`: the caller already counted them in `unacked`."""
        left: list[TimerTask] = list(timers)
        offsets: list[int] = []
        backoff = Backoff()
        if not counted:
            self.unacked += len(left)
        try:
            while left and not self._stopped:
                results = await asyncio.gather(*(self._send(t) for t in left), return_exceptions=True)
                failed = [t for t, r in zip(left, results, strict=True) if isinstance(r, BaseException)]
                for t, r in zip(left, results, strict=True):
                    if not isinstance(r, BaseException):
                        offsets.append(r)
                        self._acked(t, r, kind)
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

    def _acked(self, t: TimerTask, offset: int, kind: int) -> None:
        self.unacked -= 1
        self.max_offset = max(self.max_offset, offset)
        if kind == _OUTBOX:
            self._pending.discard(t.task_id)
        elif kind == _ROW:
            self._rows_pending.discard((t.fire_time_ms, t.task_id))

    def stop(self) -> None:
        """Stop sending: rows not yet acknowledged stay in the store for the next owner."""
        self._stopped = True
        if self._release_handle is not None:
            self._release_handle.cancel()
            self._release_handle = None
        self._held.clear()
        for task in list(self._tasks):
            task.cancel()

    async def wait_stopped(self) -> None:
        await asyncio.gather(*list(self._tasks), return_exceptions=True)
