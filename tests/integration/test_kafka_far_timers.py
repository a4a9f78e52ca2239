"""Far timers on Kafka (history/kafka_timers.py, "Far timers"; docs/queues.md): a timer due past the
shard's boundary (about `queues.timer_publish_lookahead_ms` ahead) waits in the store's due-time
rows, not in the timer topic; the queue publishes the rows as the boundary passes them and the
shard's flush range-deletes them once the broker acknowledged every one below. So the log holds
only timers due soon, and a new owner re-reads about a lookahead of it.

Against the real broker, on each store (SQLite, and the real Cassandra node). A fake clock makes
timers due; `fire_due` moves the boundary when the clock says so, and returns once the queue read
what it published and the effects are done. The fire callback records every call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from history.kafka_resources import KafkaResources
from history.state import TM_DELETE_HISTORY
from history.store.base import (
    EVERY_TIMER_ROW,
    TIMER_QUEUE_KAFKA,
    ExecutionStore,
    HistoryAppend,
    ShardWrite,
    TimerTaskRow,
)
from history.store.sqlite import SqliteStore
from legato import codec
from legato.api import ExecutionRef
from legato.config import QueuesConfig
from legato.errors import NotFound, Unavailable
from legato.kafka import decode_timer
from tests.integration.test_kafka_timer_outbox import (
    MAX_TOMBSTONES,
    SHARD,
    T0,
    TIMERS_PER_RUN,
    Owner,
    _commit_timers,
    _in_due_order_never_early,
    _outbox,
    _owner,
    _timer_rows,
    _traced_tombstones,
)
from tests.integration.test_kafka_timers import (
    WAIT_S,
    GatedKafka,
    kafka_config,
    kafka_env,
    stop_env,
    timer_messages,
)
from tests.unit.history.conftest import complete_wf

pytestmark = pytest.mark.timeout(300)

LOOKAHEAD_MS = QueuesConfig().timer_publish_lookahead_ms  # the default
HOUR_MS = 3_600_000


@pytest.fixture
def store(shard_store: ExecutionStore) -> ExecutionStore:
    return shard_store


@contextlib.asynccontextmanager
async def _owned(store: ExecutionStore, queues: QueuesConfig, name: str, now: int,
                 kafka: KafkaResources | None = None) -> AsyncIterator[Owner]:
    """An owner of the shard, stopped at the end whatever happened (stopping twice is harmless)."""
    owner = await _owner(store, queues, name, now, kafka)
    try:
        yield owner
    finally:
        await owner.stop()


def _published(messages: list[tuple[int, bytes, bytes]]) -> list[int]:
    """The due times of the timer messages, sorted."""
    return sorted(decode_timer(v).fire_time_ms for _, _, v in messages)


async def test_far_timers_wait_in_the_store_and_reach_the_log_when_they_come_near(
        store: ExecutionStore, kafka_queues: QueuesConfig) -> None:
    """Half of one commit's timers are due in a second, half in an hour: the near half goes
    through the outbox and fires; the far half stays in the due-time rows, out of the log, and
    holds no offset. When the clock comes within the lookahead, they are published, fire on time
    in due order, once each, and their rows go with one range delete that the next scan starts
    past."""
    half = TIMERS_PER_RUN // 2
    async with _owned(store, kafka_queues, "k", T0) as k:
        due = await _commit_timers(k.shard, 0, 1,
                                   lambda i: T0 + 1000 + 10 * i if i < half else T0 + HOUR_MS + 10 * i)
        await k.shard.timers.fire_due()
        await k.shard.flush()
        assert await _outbox(store) == []
        assert sorted(f for f, _ in await _timer_rows(store)) == due[half:]  # the far ones wait in the store
        assert _published(await timer_messages(kafka_queues)) == due[:half]  # the log has the near ones alone

        await k.advance(T0 + 2000)
        assert sorted(f for f, _ in k.fired) == due[:half]
        assert k.queue.open_offsets == 0 and await k.queue.commit() == half  # far timers hold no offset

        k.clock[0] = T0 + HOUR_MS - LOOKAHEAD_MS  # (nothing due in between: skip the steps)
        await k.advance(T0 + HOUR_MS + 10 * TIMERS_PER_RUN)
        _in_due_order_never_early(k, T0)
        assert sorted(f for f, _ in k.fired) == due  # every timer, once
        assert await _timer_rows(store) == []
        assert _published(await timer_messages(kafka_queues)) == due  # each far one published once, when near
    info = await store.acquire_shard(SHARD, "probe", TIMER_QUEUE_KAFKA)
    assert max(due) < info.timer_rows_dropped_before < EVERY_TIMER_ROW
    crossed = await _traced_tombstones(store, "timer_read",
                                       (SHARD, info.timer_rows_dropped_before - 1, 1 << 62, 1 << 62, 100_000))
    assert crossed is None or crossed <= MAX_TOMBSTONES


async def test_far_rows_published_by_an_owner_that_died_before_dropping_them_fire_once(
        store: ExecutionStore, kafka_queues: QueuesConfig) -> None:
    """The owner publishes far rows as the boundary passes them, then dies before its flush
    drops them: the next owner publishes them again (and re-reads the first copies), and fires
    each once, none early."""
    async with _owned(store, kafka_queues, "k", T0) as k:
        due = await _commit_timers(k.shard, 0, 1, lambda i: T0 + 2 * LOOKAHEAD_MS + 10 * i)
        k.clock[0] = T0 + LOOKAHEAD_MS + LOOKAHEAD_MS // 2  # the boundary must move: the scan reaches them
        await k.shard.timers.fire_due()
        assert len(await timer_messages(kafka_queues)) == TIMERS_PER_RUN
        assert k.fired == []
        await k.crash()

    async with _owned(store, kafka_queues, "k2", T0 + LOOKAHEAD_MS + LOOKAHEAD_MS // 2) as k2:
        assert len(await timer_messages(kafka_queues)) == 2 * TIMERS_PER_RUN  # the rows were still there
        await k2.advance(max(due) + 1000)
        _in_due_order_never_early(k2, k2.clock[0])
        assert sorted(f for f, _ in k2.fired) == due
        assert await _timer_rows(store) == []


class HeldCommits(SqliteStore):
    """The real SQLite store, but a commit writing due-time timer rows waits while `hold` is set."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.hold = asyncio.Event()
        self.entered = asyncio.Event()
        self.released = asyncio.Event()

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        if write.timer_tasks and self.hold.is_set():
            self.entered.set()
            await self.released.wait()
        await super().commit(appends, write)


async def test_a_far_row_committed_after_the_scan_passed_it_is_published_and_kept_until_acknowledged(
        kafka_queues: QueuesConfig, tmp_path: Path) -> None:
    """The race the boundary has: a timer written as a far row, whose commit lands after the
    boundary moved past it and the scan read the rows. The shard hands it to the queue, which
    publishes it; the flush does not drop its row before the broker acknowledged it; it fires
    once. (Without that hand-over the flush would drop the row and the timer would never fire.)"""
    s = HeldCommits(str(tmp_path / "held.db"))
    await s.open()
    kafka = GatedKafka(kafka_queues)
    try:
        async with _owned(s, kafka_queues, "k", T0, kafka) as k:
            try:
                await _race(s, kafka, kafka_queues, k)
            finally:  # (else the owner's stop would wait for the held commit)
                s.released.set()
                kafka.gate.set()
    finally:
        await s.close()


async def _race(s: HeldCommits, kafka: GatedKafka, kafka_queues: QueuesConfig, k: Owner) -> None:
    due = T0 + LOOKAHEAD_MS + 5000  # past the boundary (T0 + lookahead) when written
    s.hold.set()
    commit = asyncio.create_task(_commit_timers(k.shard, 0, 1, lambda i: due + 10 * i))
    await asyncio.wait_for(s.entered.wait(), WAIT_S)
    k.clock[0] = T0 + LOOKAHEAD_MS // 2 + 1000  # half a lookahead on: the boundary moves
    await k.shard.timers.fire_due()  # the scan reads the rows: this commit's are not there yet
    assert k.queue.outbox_until() >= due + 10 * TIMERS_PER_RUN and await timer_messages(kafka_queues) == []
    kafka.gate.clear()  # the broker's acknowledgements are held back
    s.hold.clear()
    s.released.set()
    written = await asyncio.wait_for(commit, WAIT_S)
    await k.shard.flush()
    assert sorted(f for f, _ in await _timer_rows(s)) == written  # not acknowledged: not dropped
    await asyncio.wait_for(_broker_has(kafka, TIMERS_PER_RUN), WAIT_S)  # handed over and published
    kafka.gate.set()
    await k.advance(due + 10 * TIMERS_PER_RUN)
    assert sorted(f for f, _ in k.fired) == written  # each once
    assert await _timer_rows(s) == []


async def _broker_has(kafka: GatedKafka, n: int) -> None:
    while kafka.broker_has < n:
        kafka.sent.clear()
        await kafka.sent.wait()


async def test_after_a_build_that_dropped_every_row_far_rows_written_since_are_found(
        store: ExecutionStore, kafka_queues: QueuesConfig) -> None:
    """A build before far timers dropped every due-time row it published (recording EVERY_TIMER_ROW);
    a far timer written after that (by an owner that died before its first flush) is found by the
    next owner, which scans from the timer ack level, fires it, and records a real level."""
    info = await store.acquire_shard(SHARD, "old", TIMER_QUEUE_KAFKA)
    await store.update_shard(SHARD, info.range_id, 0, [], drop_timers_before=EVERY_TIMER_ROW)
    due = T0 + 2 * LOOKAHEAD_MS
    row = TimerTaskRow(due, (info.range_id << 20) + 1, codec.dump_record({"k": "test"}))
    await store.write(ShardWrite(SHARD, info.range_id, timer_tasks=[row]))
    async with _owned(store, kafka_queues, "k", T0) as k:
        k.clock[0] = due - LOOKAHEAD_MS
        await k.advance(due + 1000)
        assert k.fired == [(due, row.task_id)]
        assert await _timer_rows(store) == []
    probe = await store.acquire_shard(SHARD, "probe", TIMER_QUEUE_KAFKA)
    assert due < probe.timer_rows_dropped_before < EVERY_TIMER_ROW


async def test_a_closed_runs_retention_timer_waits_in_the_store_not_in_the_log(
        kafka_queues: QueuesConfig, tmp_path: Path) -> None:
    """What far timers are for: every closed run has a retention timer; on Kafka it stays in the
    store's rows until it comes near, so the log's committed offset is not held by it (a new owner
    re-reads none of them); when retention has passed it fires and the run is deleted."""
    cfg = kafka_config(kafka_queues)
    cfg.history.retention = HOUR_MS
    env = await kafka_env(cfg, tmp_path / "h.db")
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", complete_wf())
        await env.fire()
        await env.history.flush()
        kinds = [codec.loads(v)["data"]["k"] for _, _, v in await timer_messages(kafka_queues)]
        assert TM_DELETE_HISTORY not in kinds  # (the task's timeout, stale, is held and then dropped)
        sid = env.history.shard_for("default", "wf-1")
        rows = await env.store.read_timer_tasks(sid, (-1, 0), 1 << 62, 100)
        assert [codec.loads(r.data)["k"] for r in rows] == [TM_DELETE_HISTORY]
        q = env.history.shard(sid).timers
        await env.fire(10_000)  # the workflow task's timeout comes due (stale): nothing is held now
        assert q.pending == 0 and q.open_offsets == 0  # type: ignore[attr-defined]
        await env.fire(HOUR_MS)
        with pytest.raises(NotFound):
            await env.history.describe_workflow(ExecutionRef("wf-1"))
        await env.history.flush()
        assert await env.store.read_timer_tasks(sid, (-1, 0), 1 << 62, 100) == []
    finally:
        await stop_env(env)



class FailingReads(SqliteStore):
    """The real SQLite store, but the next `failures` reads of the due-time timer rows fail."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.failures = 0

    async def read_timer_tasks(self, shard_id: int, after: tuple[int, int], until_fire_ms: int,
                               limit: int) -> list[TimerTaskRow]:
        if self.failures:
            self.failures -= 1
            raise Unavailable("test: the store did not answer")
        return await super().read_timer_tasks(shard_id, after, until_fire_ms, limit)


async def test_a_scan_that_fails_is_retried_and_its_timers_fire(
        kafka_queues: QueuesConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The queue's own scan loop (not `fire_due`) moves the boundary when the clock says so; its
    reads fail twice (a store that does not answer): it says so once, retries, publishes the
    rows, and each timer fires once."""
    s = FailingReads(str(tmp_path / "flaky.db"))
    await s.open()
    kafka = GatedKafka(kafka_queues)
    try:
        async with _owned(s, kafka_queues, "k", T0, kafka) as k:
            due = await _commit_timers(k.shard, 0, 1, lambda i: T0 + 2 * LOOKAHEAD_MS + 10 * i)
            s.failures = 2
            k.clock[0] = T0 + LOOKAHEAD_MS + LOOKAHEAD_MS // 2  # the boundary must move
            k.queue.poke()  # the scan loop looks at the clock
            await asyncio.wait_for(_broker_has(kafka, TIMERS_PER_RUN), WAIT_S)
            assert s.failures == 0
            await k.advance(max(due) + 1000)
            assert sorted(f for f, _ in k.fired) == due
            assert await _timer_rows(s) == []
    finally:
        await s.close()
    failed = [r for r in caplog.records if "publishing the timer rows coming due failed" in r.getMessage()]
    assert [r.levelname for r in failed] == ["WARNING"]  # the first failure; the second is quiet
