"""The Kafka mode's timer outbox level (history/kafka_timer_publisher.py): the task id at or below
which every outbox row was acknowledged by the broker. It must never pass a row the broker has
not acknowledged, nor a stored row the start-up scan has not read yet.

The broker here is a fake whose acknowledgements the test releases one by one (the real broker
is in tests/integration/test_kafka_timer_outbox.py); the store is SQLite in memory.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import pytest

from history import kafka_timer_publisher
from history.kafka_resources import KafkaResources
from history.kafka_timer_publisher import TimerPublisher
from history.queues import TimerTask
from history.store.base import TIMER_QUEUE_KAFKA, ShardWrite, TimerTaskRow
from history.store.sqlite import SqliteStore
from legato.kafka import decode_timer

WAIT_S = 5.0  # safety net for waits; never reached when tests pass


class HeldAcks:
    """A broker stand-in: every send waits until the test acknowledges its task id (or fails it)."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[int]] = {}
        self.sent: list[int] = []  # task ids, in the order they were sent
        self.arrived = asyncio.Event()
        self._offset = 0

    async def send(self, topic: str, partition: int, key: bytes, value: bytes) -> int:
        task_id = decode_timer(value).task_id
        fut = self.waiting[task_id] = asyncio.get_running_loop().create_future()
        self.sent.append(task_id)
        self.arrived.set()
        return await fut

    def ack(self, *task_ids: int) -> None:
        for t in task_ids:
            self._offset += 1
            self.waiting.pop(t).set_result(self._offset)

    def fail(self, task_id: int) -> None:
        self.waiting.pop(task_id).set_exception(RuntimeError("broker unavailable"))

    async def until_sent(self, *task_ids: int) -> None:
        while not set(task_ids) <= set(self.waiting):
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), WAIT_S)


class Progress:
    """The publisher's on_progress callback: set after every round of acknowledgements."""

    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.event.set()

    async def until(self, cond: Callable[[], bool]) -> None:
        while not cond():
            self.event.clear()
            await asyncio.wait_for(self.event.wait(), WAIT_S)


def _publisher(acks: HeldAcks, level: int = 0) -> tuple[TimerPublisher, Progress]:
    progress = Progress()
    return TimerPublisher(0, "timers", 0, cast(KafkaResources, acks), progress, level), progress


def _timers(*ids: int) -> list[TimerTask]:
    return [TimerTask(1000 - i, i, {"k": "t"}) for i in ids]  # due times against the task-id order


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = SqliteStore(None)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_the_level_waits_for_the_lowest_unacknowledged_row() -> None:
    acks = HeldAcks()
    p, progress = _publisher(acks, level=10)
    assert p.outbox_ack_level() == 10  # nothing scanned yet: the persisted level
    p.publish_rows(_timers(11, 12))  # two commits' rows
    p.publish_rows(_timers(13, 14))
    await acks.until_sent(11, 12, 13, 14)
    assert acks.sent == [11, 12, 13, 14]  # in task-id order
    acks.ack(13, 14)
    await progress.until(lambda: p.unacked == 2)
    assert p.outbox_ack_level() == 10  # 11 and 12 are not acknowledged: nothing passes them
    acks.ack(12)
    p._scan_done = True  # the stored outbox was read (empty)
    assert p.outbox_ack_level() == 10
    acks.ack(11)
    await progress.until(lambda: p.unacked == 0)
    assert p.outbox_ack_level() == 14
    p.publish_rows(_timers(15, 16))
    await acks.until_sent(15, 16)
    acks.ack(15)
    assert p.outbox_ack_level() == 14


async def test_a_failed_send_holds_the_level_until_its_retry_is_acknowledged(monkeypatch: pytest.MonkeyPatch) -> None:
    retried = asyncio.Event()

    async def no_wait(self: Any) -> None:  # the retry delay is not what this test is about
        self.failures += 1
        retried.set()

    monkeypatch.setattr(kafka_timer_publisher.Backoff, "wait", no_wait)
    acks = HeldAcks()
    p, progress = _publisher(acks)
    p._scan_done = True
    p.publish_rows(_timers(1, 2))
    await acks.until_sent(1, 2)
    acks.ack(2)
    acks.fail(1)
    await asyncio.wait_for(retried.wait(), WAIT_S)
    await acks.until_sent(1)
    assert p.outbox_ack_level() == 0  # 2 is acknowledged, 1 is not: the level stays below both
    acks.ack(1)
    await progress.until(lambda: p.unacked == 0)
    assert p.outbox_ack_level() == 2


async def test_the_level_does_not_pass_stored_rows_the_scan_has_not_read(store: SqliteStore,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Rows committed by this owner (higher task ids) may be acknowledged while the start-up scan
    is still reading the stored outbox a page at a time: the level stays at what the scan read."""
    monkeypatch.setattr(kafka_timer_publisher, "READ_PAGE", 2)
    s = await store.acquire_shard(0, "n", TIMER_QUEUE_KAFKA)
    await store.write(ShardWrite(0, s.range_id, timer_outbox=[TimerTaskRow(900, i, "{}") for i in (3, 4, 5, 6, 7)]))
    await store.update_shard(0, s.range_id, 0, [], outbox_ack_level=3)  # row 3 was published before
    acks = HeldAcks()
    p, progress = _publisher(acks, level=3)
    p.publish_rows(_timers(100, 101))  # this owner's new rows
    await acks.until_sent(100, 101)
    acks.ack(100, 101)
    await progress.until(lambda: p.unacked == 0)
    scan = asyncio.create_task(p.publish_stored(store))
    await acks.until_sent(4, 5)  # the first page
    assert p.outbox_ack_level() == 3
    acks.ack(4, 5)
    await acks.until_sent(6, 7)  # the second page: read only once the first was acknowledged
    assert p.outbox_ack_level() == 5
    acks.ack(6, 7)
    assert await asyncio.wait_for(scan, WAIT_S) == 4
    assert p.outbox_ack_level() == 101


async def test_a_stopped_publisher_keeps_the_level_below_what_was_not_acknowledged() -> None:
    acks = HeldAcks()
    p, progress = _publisher(acks)
    p._scan_done = True
    p.publish_rows(_timers(1))
    p.publish_rows(_timers(2, 3))
    await acks.until_sent(1, 2, 3)
    acks.ack(1, 3)
    await progress.until(lambda: p.unacked == 2)
    p.stop()
    await p.wait_stopped()
    assert p.outbox_ack_level() == 1  # 2 and 3 stay in the store for the next owner


async def test_a_sqlite_database_of_an_older_build_gets_the_outbox_on_open(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript("""
        CREATE TABLE shards (shard_id INTEGER PRIMARY KEY, range_id INTEGER NOT NULL, owner TEXT NOT NULL,
                             transfer_ack_level INTEGER NOT NULL DEFAULT 0, updated_ms INTEGER NOT NULL DEFAULT 0,
                             timer_ack_level INTEGER NOT NULL DEFAULT 0);
        INSERT INTO shards (shard_id, range_id, owner, transfer_ack_level, timer_ack_level) VALUES (0, 4, 'old', 9, 7);
    """)
    conn.close()
    store = SqliteStore(path)
    await store.open()
    try:
        info = await store.acquire_shard(0, "new", TIMER_QUEUE_KAFKA)
        assert (info.range_id, info.timer_ack_level, info.timer_outbox_ack_level, info.timer_queue) == (5, 7, 0, "")
        await store.write(ShardWrite(0, info.range_id, timer_outbox=[TimerTaskRow(50, 20, "{}")]))
        assert [r.task_id for r in await store.read_timer_outbox(0, 0, 10)] == [20]
    finally:
        await store.close()
    again = SqliteStore(path)  # opening again adds nothing twice
    await again.open()
    await again.close()
