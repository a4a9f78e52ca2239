"""KafkaTimerQueue: one owned shard's timers on its partition of the timer topic (docs/queues.md,
"History publishes" and "The shard owner fires timers"); the queues.kind = kafka alternative to
history.queues.TimerQueueProcessor.

A timer lives in the store (a row of the shard's atomic write) until the broker acknowledged its
message, then in the log until its effect is durable. The invariant that makes every crash safe:
*every timer not yet fired has a row in the store or a message at or above the committed offset*.

* Timers are written to the store's timer outbox, ordered by task id, and published in that order.
  Rows leave the store (the shard's flush, conditioned on range_id: one range delete at or below
  the outbox ack level) only after the ack of every row up to them. A crash between commit and
  publish, or between ack and delete, leaves the row: the next owner publishes every row above the
  persisted level on start (a duplicate message is harmless, see below), and never reads what was
  deleted below it.
* A message counts as done only once its timer fired with a durable effect (history committed
  it), or a copy was acknowledged further on in the log (re-publishing). The committed offset is
  the oldest offset not done (or the next to read), so a new owner re-reads every timer not done.
* Firing is idempotent and never early: a timer fires when the clock reached its due time, and
  history drops a timer its run no longer expects (a duplicate, or a stale timer).
* Far timers stay out of the log: a timer due past the shard's boundary (about
  `timer_publish_lookahead_ms` ahead of the clock) is written to the store's due-time timer rows
  instead of the outbox. As the clock moves the queue moves the boundary up and publishes the rows
  it passed (a scan, in due order); once every row below a due time is acknowledged, the shard's
  flush range-deletes them (`take_drop_before`) and the next scan starts there. A timer in the log
  is thus due within about a lookahead, so the committed offset trails the head by about that
  much, whatever the timers far ahead (a closed run's retention timer, a week-long sleep).
* A timer held `timer_republish_horizon_ms` without coming due (the lookahead was set longer, or
  its fire keeps failing) is published again and its old message counted done once the copy is
  acknowledged: the committed offset keeps moving.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from history.fire_lags import FireLags
from history.kafka_resources import KafkaResources
from history.kafka_timer_publisher import TimerObsolete, TimerPublisher
from history.queues import TimerTask
from history.retries import Backoff, retry_delay_s, worth_a_warning
from history.store.base import EVERY_TIMER_ROW, ExecutionStore, ShardInfo
from history.timers import FireTimer, TimerQueueFactory
from legato.config import QueuesConfig
from legato.errors import ShardOwnershipLost
from legato.kafka import TimerMessage, consumer_config, decode_timer, timer_partition, topics
from legato.kafka_client import PumpedConsumer, commit_offsets

log = logging.getLogger("legato.history")

_R = TypeVar("_R")
READ_BATCH = 1000  # the most messages the consumer hands over at once
COMPACT_SLACK = 1024  # a heap is rebuilt from its live entries once it has this many more than twice them


# A timer's identity, as in the store's timer outbox: task ids alone repeat when a store is
# re-created under topics that still hold an earlier store's timers.
TimerKey = tuple[int, int]  # (fire_time_ms, task_id)


def timer_key(t: TimerTask) -> TimerKey:
    return (t.fire_time_ms, t.task_id)


@dataclass(slots=True)
class _Held:
    """A timer in memory, with the message whose offset it keeps open (the oldest copy it has)."""

    task: TimerTask
    offset: int
    due_at: int  # when it fires: its due time, later after a failed attempt
    limit_at: int  # when it is re-published if still not due (held a horizon)
    republishing: bool = False

    @property
    def key(self) -> TimerKey:
        return timer_key(self.task)


class OffsetTracker:
    """The offsets of this shard's messages consumed and not yet done. Everything below the
    oldest of them is done, so that is what may be committed (the next offset to read when none
    is open: other shards' messages and fired timers need no re-reading)."""

    def __init__(self) -> None:
        self._heap: list[int] = []
        self._open: set[int] = set()

    def open(self, offset: int) -> None:
        if offset not in self._open:
            self._open.add(offset)
            heapq.heappush(self._heap, offset)
            if len(self._heap) > 2 * len(self._open) + COMPACT_SLACK:
                self._heap = sorted(self._open)  # done offsets behind a long-open one: drop them

    def done(self, offset: int) -> None:
        self._open.discard(offset)

    def low(self, next_offset: int) -> int:
        while self._heap and self._heap[0] not in self._open:
            heapq.heappop(self._heap)
        return self._heap[0] if self._heap else next_offset

    def __len__(self) -> int:
        return len(self._open)


class KafkaTimerQueue:
    """Implements history.timers.TimerQueue for one shard. `start` runs it; `stop` drops it at
    once (the shard was lost: nothing more is committed); `close` commits what is done first."""

    def __init__(self, shard_id: int, store: ExecutionStore, clock: Callable[[], int], fire: FireTimer,
                 cfg: QueuesConfig, kafka: KafkaResources, outbox_ack_level: int = 0,
                 timer_ack_level: int = 0, max_firing: int = 100, obsolete: TimerObsolete | None = None) -> None:
        """`outbox_ack_level`: where the start-up scan of the outbox begins (a task id);
        `timer_ack_level`: where scans of the store's due-time timer rows begin (ms: the shard's
        timer ack level, or where an earlier Kafka owner dropped the rows it had published).
        `obsolete`: tells a timer no run expects any more; with it, new outbox timers are held
        up to `cfg.timer_publish_hold_ms` before they are published (kafka_timer_publisher)."""
        self.shard_id = shard_id
        self._store = store
        self._clock = clock
        self._fire = fire
        self._cfg = cfg
        self._horizon = cfg.timer_republish_horizon_ms
        self._lookahead = cfg.timer_publish_lookahead_ms
        self._commit_interval_s = cfg.commit_interval_ms / 1000.0
        self.group = f"{cfg.topic_prefix}.timers.shard-{shard_id}"
        self.tp = TopicPartition(topics(cfg).timers, timer_partition(cfg, shard_id))
        self.publisher = TimerPublisher(shard_id, self.tp.topic, self.tp.partition, kafka, self._progressed,
                                        outbox_ack_level, timer_ack_level, clock() + self._lookahead,
                                        clock=clock, hold_ms=cfg.timer_publish_hold_ms, obsolete=obsolete)
        self.lags = FireLags()
        self._consumer: PumpedConsumer | None = None
        self._offsets = OffsetTracker()
        self._next = 0  # the next offset to read
        self._start_end = 0  # the end of the partition when this owner started reading
        self.committed: int | None = None  # the group's committed offset, as far as this queue knows
        self._ready = False  # consuming, and every row found in the store on start published
        self._held: dict[TimerKey, _Held] = {}  # (fire time, task id) -> timer
        # (at, task id); an entry counts while the held timer's due_at / limit_at is still `at`
        self._due: list[tuple[int, TimerKey]] = []
        self._limits: list[tuple[int, TimerKey]] = []
        self._firing: dict[TimerKey, asyncio.Task[None]] = {}
        self._max_firing = max_firing  # history.timer_fires_in_flight
        self._republishes: set[asyncio.Task[None]] = set()
        self._retries: dict[TimerKey, int] = {}
        self._wake = asyncio.Event()  # the fire loop looks again
        self._scan_wake = asyncio.Event()  # the far-timer scan looks at the clock again
        self._changed = asyncio.Event()  # consumed, acknowledged, or ready: fire_due looks again
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False
        self._lost = False
        self._closed: asyncio.Future[None] | None = None

    # ================================================================ lifecycle

    def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._run(), name=f"kafka-timers-{self.shard_id}"))

    def stop(self) -> None:
        self._lost = True
        self._halt()

    async def close(self) -> None:
        self._halt()
        if self._closed is None:
            self._closed = asyncio.get_running_loop().create_future()
            try:
                await self._release()
            finally:
                self._closed.set_result(None)
        await self._closed

    def _halt(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.publisher.stop()
        if self._consumer is not None:
            self._consumer.stop_reading()
        current = asyncio.current_task()
        for task in [*self._tasks, *self._firing.values(), *self._republishes]:
            if task is not current:
                task.cancel()
        self._changed.set()

    async def _release(self) -> None:
        """After a halt: wait for the cancelled tasks, commit what is done unless the shard was
        lost (a node that lost a shard writes nothing more), and close the consumer."""
        await asyncio.gather(*self._tasks, *self._firing.values(), *self._republishes, return_exceptions=True)
        await self.publisher.wait_stopped()
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        try:
            if not self._lost:
                await self._commit(consumer)
        except Exception as e:  # shutting down anyway; the next owner re-reads a little more
            log.warning("shard %d: final timer offset commit failed: %s", self.shard_id, e)
        finally:
            await consumer.close()

    async def _run(self) -> None:
        """Open the consumer, then (while it consumes) publish the rows left in the store."""
        await self._retry("opening the timer consumer", self._open)
        if self._consumer is None:
            return  # stopped first
        self._tasks += [asyncio.create_task(self._fire_loop(), name=f"kafka-timers-fire-{self.shard_id}"),
                        asyncio.create_task(self._commit_loop(), name=f"kafka-timers-commit-{self.shard_id}")]
        found = await self._retry("publishing the timer outbox", lambda: self.publisher.publish_stored(self._store))
        log.debug("shard %d: %s timer outbox rows found in the store were published", self.shard_id, found)
        rows = await self._retry("publishing the timer rows due within the lookahead", self._publish_due_rows)
        log.debug("shard %d: %s due-time timer rows found in the store were published", self.shard_id, rows)
        if self._stopped:
            return
        self._ready = True
        self._progressed()
        self._tasks.append(asyncio.create_task(self._scan_loop(), name=f"kafka-timers-scan-{self.shard_id}"))

    async def _open(self) -> None:
        consumer = PumpedConsumer(consumer_config(self._cfg, self.group), self._take_batch,
                                  f"timers of shard {self.shard_id}", READ_BATCH)
        try:
            self._next, self._start_end, self.committed = await consumer.call(self._assign)
        except BaseException:
            await consumer.close()
            raise
        self._consumer = consumer
        consumer.read()

    def _assign(self, consumer: Consumer) -> tuple[int, int, int | None]:
        """Blocking: read the partition from the group's committed offset (else from its start);
        return (that offset, the partition's end, the committed offset or None)."""
        timeout_s = self._cfg.request_timeout_ms / 1000.0
        [committed] = consumer.committed([TopicPartition(self.tp.topic, self.tp.partition)], timeout_s)
        if committed.error is not None:
            raise KafkaException(committed.error)
        low, high = consumer.get_watermark_offsets(self.tp, timeout_s)
        have = committed.offset if committed.offset >= 0 else None
        start = max(low, have if have is not None else low)
        consumer.assign([TopicPartition(self.tp.topic, self.tp.partition, start)])
        return start, high, have

    async def _retry(self, what: str, fn: Callable[[], Awaitable[_R]]) -> _R | None:
        backoff = Backoff()
        while not self._stopped:
            try:
                return await fn()
            except ShardOwnershipLost:
                break
            except Exception as e:
                log.log(logging.WARNING if backoff.loud() else logging.DEBUG,
                        "shard %d: %s failed (%d time(s)), retrying: %s", self.shard_id, what, backoff.failures + 1, e)
                await backoff.wait()
        return None

    # ================================================================ publishing (the shard's side)

    def outbox_until(self) -> int:
        return self.publisher.outbox_until()

    def add(self, timers: list[TimerTask]) -> None:
        self.publisher.publish_rows(timers)

    def add_far(self, timers: list[TimerTask]) -> None:
        self.publisher.publish_far(timers)

    def ack_level(self) -> int | None:
        """None: the timer rows ordered by due time are not this queue's (see outbox_ack_level)."""
        return None

    def outbox_ack_level(self) -> int:
        return self.publisher.outbox_ack_level()

    def take_drop_before(self) -> int:
        return self.publisher.take_drop_before()

    def restore_drop_before(self, before: int) -> None:
        self.publisher.restore_drop_before(before)

    def take_deletes(self) -> list[tuple[int, int]]:
        return []  # outbox rows go by the range delete at or below outbox_ack_level, never one by one

    def restore_deletes(self, deletes: list[tuple[int, int]]) -> None:
        return None

    def deleted(self, deletes: list[tuple[int, int]]) -> None:
        return None

    # ================================================================ consuming

    def _take_batch(self, messages: list[Message]) -> None:
        """What the consumer read (on the loop, in offset order)."""
        if self._stopped:
            return
        for m in messages:
            offset = m.offset()
            if offset is not None:
                self._take(offset, m.value() or b"")
        self._progressed()

    def _take(self, offset: int, value: bytes) -> None:
        self._next = max(self._next, offset + 1)
        try:
            msg = decode_timer(value)
        except Exception as e:  # nothing can fire it; re-reading it would not help either
            log.error("shard %d: skipping an unreadable timer message at offset %d: %s", self.shard_id, offset, e)
            return
        if msg.shard_id != self.shard_id:
            return  # another shard that shares the partition: its own group reads it
        held = self._held.get((msg.fire_time_ms, msg.task_id))
        if held is None:
            self._hold(msg, offset)
        elif held.republishing and offset > held.offset:
            self._move(held, offset)  # the copy carries the timer on; the old offset is done once acked
        # else: a duplicate of a timer already held; the held copy keeps its own offset open

    def _hold(self, msg: TimerMessage, offset: int) -> None:
        held = _Held(TimerTask(msg.fire_time_ms, msg.task_id, msg.data), offset, msg.fire_time_ms, 0)
        self._held[held.key] = held
        self._offsets.open(offset)
        self._set_due(held, msg.fire_time_ms)
        self._set_limit(held, self._clock() + self._horizon)

    def _move(self, held: _Held, offset: int) -> None:
        held.offset, held.republishing = offset, False
        self._offsets.open(offset)
        self._set_limit(held, self._clock() + self._horizon)

    def _set_due(self, held: _Held, at: int) -> None:
        if not self._due or at < self._due[0][0]:
            self._wake.set()
        held.due_at = at
        self._due = _push(self._due, (at, held.key), self._held, lambda h: h.due_at)

    def _set_limit(self, held: _Held, at: int) -> None:
        held.limit_at = at
        self._limits = _push(self._limits, (at, held.key), self._held, lambda h: h.limit_at)

    def _progressed(self) -> None:
        self._changed.set()

    @property
    def pending(self) -> int:
        return len(self._held) + self.publisher.held

    @property
    def next_due_ms(self) -> int | None:
        """Approximate: the head of the due heap may belong to a timer that fired meanwhile."""
        return self._due[0][0] if self._due else None

    @property
    def open_offsets(self) -> int:
        return len(self._offsets)

    # ================================================================ firing

    def poke(self) -> None:
        self.publisher.release_due()
        self._wake.set()
        self._scan_wake.set()

    # ================================================================ far timers

    async def _scan_loop(self) -> None:
        """Move the boundary up every half lookahead, publishing the rows it passes."""
        while not self._stopped:
            wait_ms = self._next_scan_ms()
            if wait_ms > 0:
                self._scan_wake.clear()
                try:
                    await asyncio.wait_for(self._scan_wake.wait(), wait_ms / 1000.0)
                except TimeoutError:
                    pass
                continue
            if await self._retry("publishing the timer rows coming due", self._publish_due_rows) is None:
                return  # stopped, or the shard was lost

    def _next_scan_ms(self) -> int:
        """How long until the boundary should move (at most 0: now; at once after a failed scan,
        whose rows the boundary has already passed)."""
        if self.publisher.rows_behind():
            return 0
        return self.publisher.outbox_until() - self._lookahead // 2 - self._clock()

    async def _publish_due_rows(self) -> int:
        return await self.publisher.publish_due_rows(self._store, self._clock() + self._lookahead)

    async def _fire_loop(self) -> None:
        while not self._stopped:
            self._wake.clear()
            self._tick()
            wait_ms = self._next_wake_ms()
            if wait_ms is None:
                await self._wake.wait()
            elif wait_ms > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), wait_ms / 1000.0)
                except TimeoutError:
                    pass

    def _next_wake_ms(self) -> int | None:
        heads = [h[0][0] for h in (self._due, self._limits) if h and (h is self._limits or self._can_fire())]
        return max(1, min(heads) - self._clock()) if heads else None

    def _can_fire(self) -> bool:
        """A slot is free (else a fire's end wakes the loop)."""
        return len(self._firing) < self._max_firing

    def _tick(self) -> int:
        """Start firing what is due and re-publishing what was held a horizon; return how many fire."""
        now = self._clock()
        fired = 0
        while self._due and self._due[0][0] <= now and self._can_fire():
            at, tid = heapq.heappop(self._due)
            held = self._held.get(tid)
            if held is not None and held.due_at == at and tid not in self._firing:
                self._firing[tid] = asyncio.create_task(self._fire_one(held),
                                                        name=f"timer-{self.shard_id}-{tid[1]}")
                fired += 1
        while self._limits and self._limits[0][0] <= now:
            at, tid = heapq.heappop(self._limits)
            held = self._held.get(tid)
            if held is not None and held.limit_at == at:
                self._maybe_republish(held, now)
        return fired

    async def _fire_one(self, held: _Held) -> None:
        t = held.task
        started = self._clock()
        try:
            await self._fire(t)
        except ShardOwnershipLost:
            return  # the shard is being dropped; the message stays for the next owner
        except Exception as e:
            self._retry_later(held, e)
        else:
            self._retries.pop(held.key, None)
            self.lags.record(started - t.fire_time_ms)
            self._offsets.done(held.offset)
            if self._held.get(held.key) is held:
                del self._held[held.key]
        finally:
            self._firing.pop(held.key, None)
            self._wake.set()  # a slot is free: a timer waiting its turn may start

    def _retry_later(self, held: _Held, e: Exception) -> None:
        t = held.task
        n = self._retries.get(held.key, 0) + 1
        self._retries[held.key] = n
        delay_ms = int(retry_delay_s(n) * 1000)
        log.log(logging.WARNING if worth_a_warning(n) else logging.DEBUG,
                "shard %d: timer %d (%s) failed (attempt %d), retrying in %d ms: %s",
                self.shard_id, t.task_id, t.data.get("k"), n, delay_ms, e)
        self._set_due(held, self._clock() + delay_ms)

    # ================================================================ re-publishing

    def _maybe_republish(self, held: _Held, now: int) -> None:
        """A timer held a horizon: publish it again unless it is due (then it fires, or is being
        retried) or already on its way."""
        if held.task.fire_time_ms <= now or held.republishing:
            self._set_limit(held, now + self._horizon)
            return
        held.republishing = True
        task = asyncio.create_task(self._republish(held, held.offset), name=f"timer-republish-{self.shard_id}")
        self._republishes.add(task)
        task.add_done_callback(self._republishes.discard)

    async def _republish(self, held: _Held, old_offset: int) -> None:
        offset = await self.publisher.publish_copy(held.task)
        if offset is not None:  # the copy is in the log: the old message is no longer needed
            self._offsets.done(old_offset)

    # ================================================================ committing

    async def _commit_loop(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self._commit_interval_s)
            try:
                await self.commit()
            except Exception as e:
                log.warning("shard %d: committing the timer offset failed: %s", self.shard_id, e)

    async def commit(self) -> int | None:
        """Commit the offset below which every message of the partition is done for this shard
        (now; normally every commit_interval_ms). Returns the committed offset."""
        if self._consumer is None or self._stopped:
            return self.committed
        return await self._commit(self._consumer)

    async def _commit(self, consumer: PumpedConsumer) -> int:
        low = self._offsets.low(self._next)
        if low != self.committed:
            tp = TopicPartition(self.tp.topic, self.tp.partition, low)
            await consumer.call(lambda c: commit_offsets(c, [tp]))
            self.committed = low
        return low

    # ================================================================ tests

    async def fire_due(self) -> int:
        """Fire everything due now and wait for the effects, including timers those effects
        publish that are already due: first wait until this queue has read everything it (and the
        previous owners) published. Returns how many timers this call started."""
        fired = 0
        while not self._stopped:
            self.publisher.release_due()
            await self._caught_up()
            if self._next_scan_ms() <= 0:
                await self._publish_due_rows()  # (the scan loop may not have looked yet)
                continue
            fired += self._tick()
            busy = [*self._firing.values(), *self._republishes]
            if not busy:
                break
            await asyncio.gather(*busy, return_exceptions=True)
        return fired

    def _is_caught_up(self, offset: int) -> bool:
        return (self._ready and self.publisher.unacked == 0 and self._next > max(offset, self.publisher.max_offset)
                and self._next >= self._start_end)

    async def _caught_up(self, offset: int = -1) -> None:
        while not self._stopped and not self._is_caught_up(offset):
            self._changed.clear()
            await self._changed.wait()

    async def read_past(self, offset: int) -> None:
        """Wait until this queue has read the message at `offset` of its partition (tests)."""
        await self._caught_up(offset)


def _push(heap: list[tuple[int, TimerKey]], entry: tuple[int, TimerKey], held: dict[TimerKey, _Held],
          at: Callable[[_Held], int]) -> list[tuple[int, TimerKey]]:
    """Push onto a heap of (at, timer key); rebuilt from the held timers when entries of timers that
    fired outnumber the live ones (a fired timer's re-publish entry would stay up to a horizon)."""
    heapq.heappush(heap, entry)
    if len(heap) <= 2 * len(held) + COMPACT_SLACK:
        return heap
    fresh = [(at(h), tid) for tid, h in held.items()]
    heapq.heapify(fresh)
    return fresh


def kafka_timer_queues(cfg: QueuesConfig, kafka: KafkaResources, max_firing: int,
                       obsolete: TimerObsolete | None = None) -> TimerQueueFactory:
    """The factory a shard builds its timer queue with when queues.kind is kafka. `obsolete`:
    see KafkaTimerQueue."""

    def make(info: ShardInfo, store: ExecutionStore, clock: Callable[[], int], fire: FireTimer) -> KafkaTimerQueue:
        # EVERY_TIMER_ROW: a build before far timers dropped every row it published, and a later
        # owner may have written far timers since; scan from the timer ack level (one range
        # tombstone to cross, once: this owner's first drop records a real level).
        dropped = info.timer_rows_dropped_before if info.timer_rows_dropped_before < EVERY_TIMER_ROW else 0
        return KafkaTimerQueue(info.shard_id, store, clock, fire, cfg, kafka, info.timer_outbox_ack_level,
                               max(info.timer_ack_level, dropped), max_firing, obsolete)

    return make
