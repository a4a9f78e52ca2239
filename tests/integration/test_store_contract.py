"""The execution store contract (history/store/base.py), on SQLite and on the real Cassandra node.

Every rule of base.py's module doc is checked on both stores alike: range_id fencing, the run and
current-run conditions of the one atomic write (nothing of a rejected write is visible, not even
its transfer and timer rows or its events), the greatest txn_id winning, the queues' order, limits
and deletes, init_cluster. Then what only Cassandra has: the number of LWTs a group commit costs,
the byte bound that cuts batches, and how driver errors are classified.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cassandra import OperationTimedOut, WriteTimeout
from cassandra import Unavailable as CassandraUnavailable
from cassandra.cluster import NoHostAvailable

from history.shard import ShardContext, Update
from history.state import MutableState, Mutation
from history.store.base import (
    EVERY_TIMER_ROW,
    TIMER_QUEUE_KAFKA,
    TIMER_QUEUE_STORE,
    CurrentRunRow,
    CurrentRunWrite,
    ExecutionStore,
    HistoryAppend,
    RunConditionFailed,
    RunWrite,
    ShardWrite,
    TimerTaskRow,
    TransferTaskRow,
    WriteOutcomeUnknown,
)
from history.store.cassandra import APPEND_BATCH_PARTITIONS, CassandraStore, _conditional_error
from history.store.sqlite import SqliteStore
from legato.config import Config, StoreConfig
from legato.errors import FailedPrecondition, ShardOwnershipLost, Unavailable

NS = "ns"


@pytest.fixture(params=["sqlite", "cassandra"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreConfig | str:
    """A Cassandra StoreConfig on the emptied test keyspace, or a fresh SQLite file."""
    if request.param == "cassandra":
        cfg: StoreConfig = request.getfixturevalue("cassandra")
        return cfg
    return str(tmp_path / "contract.db")


def _make(target: StoreConfig | str) -> ExecutionStore:
    return CassandraStore(target) if isinstance(target, StoreConfig) else SqliteStore(target)


@pytest.fixture
async def store(store_target: StoreConfig | str) -> AsyncIterator[ExecutionStore]:
    s = _make(store_target)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _run(wf: str, nxt: int, expected: int | None, run: str = "r1", state: str = "{}") -> RunWrite:
    return RunWrite(NS, wf, run, nxt, state, expected)


def _current(wf: str, run: str, expected: str | None, status: str = "running") -> CurrentRunWrite:
    return CurrentRunWrite(CurrentRunRow(NS, wf, run, status, f"req-{run}", 1000), expected)


async def _nothing_of(store: ExecutionStore, shard: int, wf: str, run: str = "r1") -> None:
    assert await store.get_run(shard, NS, wf, run) is None
    assert await store.get_current_run(shard, NS, wf) is None


async def _no_tasks(store: ExecutionStore, shard: int) -> None:
    assert await store.read_transfer_tasks(shard, 0, 100) == []
    assert await store.read_timer_tasks(shard, (0, 0), 1 << 60, 100) == []
    assert await store.read_timer_outbox(shard, 0, 100) == []


# ---------------------------------------------------------------------- cluster and shards

async def test_init_cluster_keeps_the_first_value(store: ExecutionStore, store_target: StoreConfig | str) -> None:
    assert await store.init_cluster(4) == 4
    assert await store.init_cluster(8) == 4
    other = _make(store_target)  # a second node, configured differently
    await other.open()
    try:
        assert await other.init_cluster(16) == 4
    finally:
        await other.close()


async def test_acquire_increments_range_id_and_keeps_the_ack_level(store: ExecutionStore) -> None:
    a = await store.acquire_shard(3, "node-a")
    assert (a.range_id, a.owner, a.transfer_ack_level) == (1, "node-a", 0)
    await store.update_shard(3, a.range_id, 41, [])
    b = await store.acquire_shard(3, "node-b")
    assert (b.range_id, b.owner, b.transfer_ack_level) == (2, "node-b", 41)


async def test_renew_range_is_fenced(store: ExecutionStore) -> None:
    a = await store.acquire_shard(0, "node-a")
    b = await store.acquire_shard(0, "node-b")
    with pytest.raises(ShardOwnershipLost, match="range_id 2"):
        await store.renew_range(0, a.range_id, "node-a")
    renewed = await store.renew_range(0, b.range_id, "node-b")
    assert renewed.range_id == b.range_id + 1
    # A retry of that renewal (its outcome was unknown) finds it took effect: same range, no loss.
    again = await store.renew_range(0, b.range_id, "node-b")
    assert again.range_id == renewed.range_id
    with pytest.raises(ShardOwnershipLost):
        await store.renew_range(0, b.range_id, "node-c")  # that range_id is gone for anyone else
    with pytest.raises(ShardOwnershipLost):
        await store.renew_range(0, a.range_id, "node-b")  # two ranges back: not a retry
    with pytest.raises(ShardOwnershipLost, match="no shard row"):
        await store.renew_range(9, 1, "node-a")


async def test_a_write_with_a_stale_range_id_is_rejected_and_writes_nothing(store: ExecutionStore) -> None:
    a = await store.acquire_shard(0, "node-a")
    b = await store.acquire_shard(0, "node-b")
    w = ShardWrite(0, a.range_id, [_run("wf", 3, None)], [_current("wf", "r1", None)],
                   [TransferTaskRow((1 << 20) + 1, "t")], [TimerTaskRow(500, (1 << 20) + 2, "x")],
                   timer_outbox=[TimerTaskRow(600, (1 << 20) + 3, "y")])
    with pytest.raises(ShardOwnershipLost, match=f"range_id {b.range_id}"):
        await store.write(w)
    with pytest.raises(ShardOwnershipLost):
        await store.commit([HistoryAppend(NS, "wf", "r1", 1 << 20, [(1, "e1"), (2, "e2")])], w)
    await _nothing_of(store, 0, "wf")
    await _no_tasks(store, 0)
    w.range_id = b.range_id
    await store.write(w)  # the owner's write goes through
    assert (await store.get_run(0, NS, "wf", "r1")) is not None


async def test_update_shard_with_a_stale_range_id_deletes_nothing(store: ExecutionStore) -> None:
    a = await store.acquire_shard(0, "node-a")
    await store.write(ShardWrite(0, a.range_id, transfer_tasks=[TransferTaskRow(10, "t")],
                                 timer_tasks=[TimerTaskRow(5, 11, "x")]))
    await store.acquire_shard(0, "node-b")
    with pytest.raises(ShardOwnershipLost):
        await store.update_shard(0, a.range_id, 10, [(5, 11)])
    assert [t.task_id for t in await store.read_transfer_tasks(0, 0, 10)] == [10]
    assert [t.task_id for t in await store.read_timer_tasks(0, (0, 0), 100, 10)] == [11]


# ---------------------------------------------------------------------- run conditions

async def test_a_new_run_must_not_exist(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    await store.write(ShardWrite(0, s.range_id, [_run("wf", 3, None, state="first")], [_current("wf", "r1", None)]))
    again = ShardWrite(0, s.range_id, [_run("wf", 5, None, state="second"), _run("other", 2, None, run="r9")],
                       transfer_tasks=[TransferTaskRow(7, "t")], timer_tasks=[TimerTaskRow(9, 8, "x")])
    with pytest.raises(RunConditionFailed) as e:
        await store.write(again)
    assert e.value.failed == [(NS, "wf", "r1")]
    assert "expected next_event_id none, found 3" in e.value.message
    row = await store.get_run(0, NS, "wf", "r1")
    assert row is not None and (row.next_event_id, row.state) == (3, "first")
    assert await store.get_run(0, NS, "other", "r9") is None  # its neighbour in the batch: not written
    await _no_tasks(store, 0)


async def test_an_update_needs_the_expected_next_event_id(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    await store.write(ShardWrite(0, s.range_id, [_run("wf", 3, None)]))
    with pytest.raises(RunConditionFailed) as e:
        await store.write(ShardWrite(0, s.range_id, [_run("wf", 5, 4)], transfer_tasks=[TransferTaskRow(7, "t")]))
    assert e.value.failed == [(NS, "wf", "r1")]
    assert "expected next_event_id 4, found 3" in e.value.message
    with pytest.raises(RunConditionFailed, match="expected next_event_id 1, found none"):
        await store.write(ShardWrite(0, s.range_id, [_run("ghost", 2, 1)]))
    await _no_tasks(store, 0)
    await store.write(ShardWrite(0, s.range_id, [_run("wf", 5, 3, state="moved")]))
    row = await store.get_run(0, NS, "wf", "r1")
    assert row is not None and (row.next_event_id, row.state) == (5, "moved")


async def test_current_run_pointer_conditions(store: ExecutionStore) -> None:
    s = await store.acquire_shard(1, "n")
    await store.write(ShardWrite(1, s.range_id, [_run("wf", 2, None)], [_current("wf", "r1", None)]))
    with pytest.raises(RunConditionFailed, match="current run of ns/wf: expected none, found r1") as e:
        await store.write(ShardWrite(1, s.range_id, [_run("wf", 2, None, run="r2")], [_current("wf", "r2", None)]))
    assert e.value.failed == [(NS, "wf", "r2")]
    with pytest.raises(RunConditionFailed, match="expected r0, found r1"):
        await store.write(ShardWrite(1, s.range_id, [_run("wf", 2, None, run="r2")], [_current("wf", "r2", "r0")]))
    assert await store.get_run(1, NS, "wf", "r2") is None
    await store.write(ShardWrite(1, s.range_id, [_run("wf", 4, 2), _run("wf", 2, None, run="r2")],
                                 [_current("wf", "r2", "r1", status="running")]))
    cur = await store.get_current_run(1, NS, "wf")
    assert cur is not None and (cur.run_id, cur.start_request_id, cur.start_time_ms) == ("r2", "req-r2", 1000)


async def test_one_failed_condition_rejects_every_run_of_the_batch(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    await store.write(ShardWrite(0, s.range_id, [_run("a", 2, None), _run("b", 2, None)]))
    batch = ShardWrite(0, s.range_id, [_run("a", 3, 2), _run("b", 3, 9), _run("c", 2, None)],
                       [_current("c", "r1", None)], [TransferTaskRow(100, "t")], [TimerTaskRow(50, 101, "x")])
    with pytest.raises(RunConditionFailed) as e:
        await store.write(batch)
    assert e.value.failed == [(NS, "b", "r1")]
    assert [(await store.get_run(0, NS, wf, "r1")).next_event_id for wf in "ab"] == [2, 2]  # type: ignore[union-attr]
    await _nothing_of(store, 0, "c")
    await _no_tasks(store, 0)
    batch.runs[1].expected_next_event_id = 2
    await store.write(batch)
    assert [(await store.get_run(0, NS, wf, "r1")).next_event_id for wf in "abc"] == [3, 3, 2]  # type: ignore[union-attr]
    assert [t.task_id for t in await store.read_transfer_tasks(0, 0, 10)] == [100]


# ---------------------------------------------------------------------- history events

async def test_events_of_a_rejected_write_stay_invisible(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    await store.append_history([HistoryAppend(NS, "wf", "r1", 10, [(1, "e1"), (2, "e2")])])
    await store.write(ShardWrite(0, s.range_id, [_run("wf", 3, None)]))
    await store.append_history([HistoryAppend(NS, "wf", "r1", 20, [(3, "e3"), (4, "e4")])])
    with pytest.raises(RunConditionFailed):
        await store.write(ShardWrite(0, s.range_id, [_run("wf", 5, 4)]))  # wrong expectation
    row = await store.get_run(0, NS, "wf", "r1")
    assert row is not None and row.next_event_id == 3
    assert await store.read_history(NS, "wf", "r1", 1, row.next_event_id, 100) == ["e1", "e2"]


async def test_the_greatest_txn_id_of_an_event_wins(store: ExecutionStore) -> None:
    await store.append_history([HistoryAppend(NS, "wf", "r1", 100, [(1, "a1"), (2, "a2"), (3, "a3")])])
    await store.append_history([HistoryAppend(NS, "wf", "r1", 200, [(2, "b2"), (3, "b3")])])
    await store.append_history([HistoryAppend(NS, "wf", "r1", 150, [(3, "late3")])])  # a fenced-off owner, late
    assert await store.read_history(NS, "wf", "r1", 1, 4, 100) == ["a1", "b2", "b3"]
    await store.append_history([HistoryAppend(NS, "wf", "r1", 200, [(2, "b2")])])  # the same upsert again
    assert await store.read_history(NS, "wf", "r1", 1, 4, 100) == ["a1", "b2", "b3"]


async def test_read_history_bounds_and_limit(store: ExecutionStore) -> None:
    await store.append_history([HistoryAppend(NS, "wf", "r1", 1, [(i, f"e{i}") for i in range(1, 11)]),
                                HistoryAppend(NS, "wf", "r2", 1, [(1, "other run")])])
    assert await store.read_history(NS, "wf", "r1", 1, 6, 100) == [f"e{i}" for i in range(1, 6)]
    assert await store.read_history(NS, "wf", "r1", 4, 11, 3) == ["e4", "e5", "e6"]
    assert await store.read_history(NS, "wf", "r1", 7, 7, 10) == []
    assert await store.read_history(NS, "wf", "r1", 1, 11, 0) == []
    assert await store.read_history(NS, "wf", "r2", 1, 2, 10) == ["other run"]


async def test_commit_appends_events_then_writes(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    await store.commit([HistoryAppend(NS, "wf", "r1", 5, [(1, "e1"), (2, "e2")]),
                        HistoryAppend(NS, "wf2", "r1", 5, [(1, "f1")])],
                       ShardWrite(0, s.range_id, [_run("wf", 3, None), _run("wf2", 2, None)]))
    assert await store.read_history(NS, "wf", "r1", 1, 3, 10) == ["e1", "e2"]
    assert await store.read_history(NS, "wf2", "r1", 1, 2, 10) == ["f1"]


# ---------------------------------------------------------------------- queues

async def test_transfer_tasks_in_order_with_limits_and_range_delete(store: ExecutionStore) -> None:
    s = await store.acquire_shard(2, "n")
    ids = [s.range_id << 20 | i for i in (5, 1, 3, 2, 4)]
    await store.write(ShardWrite(2, s.range_id, transfer_tasks=[TransferTaskRow(i, f"t{i}") for i in ids]))
    await store.write(ShardWrite(1, (await store.acquire_shard(1, "n")).range_id,
                                 transfer_tasks=[TransferTaskRow(1, "other shard")]))
    got = await store.read_transfer_tasks(2, 0, 100)
    assert [t.task_id for t in got] == sorted(ids) and got[0].data == f"t{min(ids)}"
    assert [t.task_id for t in await store.read_transfer_tasks(2, sorted(ids)[1], 2)] == sorted(ids)[2:4]
    await store.update_shard(2, s.range_id, sorted(ids)[2], [])
    assert [t.task_id for t in await store.read_transfer_tasks(2, 0, 100)] == sorted(ids)[3:]
    assert (await store.acquire_shard(2, "n")).transfer_ack_level == sorted(ids)[2]
    assert [t.data for t in await store.read_transfer_tasks(1, 0, 100)] == ["other shard"]


async def test_timer_tasks_in_order_with_limits_and_deletes(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    timers = [TimerTaskRow(300, 7, "c"), TimerTaskRow(100, 9, "b"), TimerTaskRow(100, 8, "a"),
              TimerTaskRow(200, 6, "x"), TimerTaskRow(900, 5, "late")]
    await store.write(ShardWrite(0, s.range_id, timer_tasks=timers))
    order = [(t.fire_time_ms, t.task_id) for t in await store.read_timer_tasks(0, (0, 0), 1000, 100)]
    assert order == [(100, 8), (100, 9), (200, 6), (300, 7), (900, 5)]
    after = [(t.fire_time_ms, t.task_id) for t in await store.read_timer_tasks(0, (100, 8), 300, 100)]
    assert after == [(100, 9), (200, 6), (300, 7)]
    assert [t.data for t in await store.read_timer_tasks(0, (0, 0), 1000, 2)] == ["a", "b"]
    assert await store.read_timer_tasks(0, (301, 0), 300, 10) == []
    await store.update_shard(0, s.range_id, 0, [(100, 8), (300, 7), (999, 1)])  # a missing one is no error
    left = [(t.fire_time_ms, t.task_id) for t in await store.read_timer_tasks(0, (0, 0), 1000, 100)]
    assert left == [(100, 9), (200, 6), (900, 5)]


async def test_the_timer_ack_level_range_deletes_below_it_and_is_kept_by_the_shard(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    assert s.timer_ack_level == 0
    timers = [TimerTaskRow(100, 9, "a"), TimerTaskRow(199, 8, "b"), TimerTaskRow(200, 7, "c"),
              TimerTaskRow(900, 5, "d")]
    await store.write(ShardWrite(0, s.range_id, timer_tasks=timers))
    await store.update_shard(0, s.range_id, 0, [(900, 5)], timer_ack_level=200)  # plus one point delete
    assert [(t.fire_time_ms, t.task_id) for t in await store.read_timer_tasks(0, (0, 0), 1000, 100)] == [(200, 7)]
    renewed = await store.renew_range(0, s.range_id, "n")
    assert renewed.timer_ack_level == 200
    await store.update_shard(0, renewed.range_id, 0, [])  # 0: the level stays, nothing more is deleted
    assert len(await store.read_timer_tasks(0, (0, 0), 1000, 100)) == 1
    assert (await store.acquire_shard(0, "other")).timer_ack_level == 200
    with pytest.raises(ShardOwnershipLost):
        await store.update_shard(0, renewed.range_id, 0, [], timer_ack_level=1000)  # fenced: nothing deleted
    assert len(await store.read_timer_tasks(0, (0, 0), 1000, 100)) == 1


async def test_the_timer_outbox_is_read_by_task_id_and_range_deleted_at_its_level(store: ExecutionStore) -> None:
    """The Kafka mode's timer outbox: rows keyed by task id (their due times in any order), read
    above a task id, range-deleted at or below the outbox ack level, which the shard row keeps."""
    s = await store.acquire_shard(0, "n", TIMER_QUEUE_KAFKA)
    assert s.timer_outbox_ack_level == 0
    rows = [TimerTaskRow(900, 5, "a"), TimerTaskRow(100, 6, "b"), TimerTaskRow(500, 7, "c"), TimerTaskRow(50, 9, "d")]
    await store.write(ShardWrite(0, s.range_id, timer_outbox=rows[:2]))
    await store.write(ShardWrite(0, s.range_id, timer_outbox=rows[2:]))
    assert await store.read_timer_outbox(0, 0, 100) == rows  # task-id order, due times kept
    assert await store.read_timer_outbox(0, 6, 1) == [rows[2]]
    assert await store.read_timer_tasks(0, (-1, 0), 1 << 60, 100) == []  # not the due-time queue's rows
    await store.update_shard(0, s.range_id, 0, [], outbox_ack_level=7)
    assert await store.read_timer_outbox(0, 0, 100) == [rows[3]]
    renewed = await store.renew_range(0, s.range_id, "n")
    assert renewed.timer_outbox_ack_level == 7
    await store.update_shard(0, renewed.range_id, 0, [])  # 0: the level stays, nothing more is deleted
    assert await store.read_timer_outbox(0, 0, 100) == [rows[3]]
    b = await store.acquire_shard(0, "other", TIMER_QUEUE_KAFKA)
    assert (b.timer_outbox_ack_level, b.timer_queue) == (7, TIMER_QUEUE_KAFKA)
    with pytest.raises(ShardOwnershipLost):
        await store.update_shard(0, renewed.range_id, 0, [], outbox_ack_level=100)  # fenced: nothing deleted
    assert await store.read_timer_outbox(0, 0, 100) == [rows[3]]


async def test_dropping_published_timer_rows_keeps_the_timer_ack_level(store: ExecutionStore) -> None:
    """A Kafka owner range-deletes the due-time rows it published without moving the timer ack
    level (a store-backed owner would otherwise move new timers up to a level far ahead)."""
    s = await store.acquire_shard(0, "n")
    await store.update_shard(0, s.range_id, 0, [], timer_ack_level=100)
    await store.write(ShardWrite(0, s.range_id, timer_tasks=[TimerTaskRow(150, 3, "a"), TimerTaskRow(5000, 4, "b"),
                                                              TimerTaskRow(9000, 5, "c")]))
    k = await store.acquire_shard(0, "k", TIMER_QUEUE_KAFKA)
    assert k.timer_rows_dropped_before == 0
    await store.update_shard(0, k.range_id, 0, [], drop_timers_before=5001)
    assert [t.task_id for t in await store.read_timer_tasks(0, (-1, 0), 1 << 60, 100)] == [5]
    renewed = await store.renew_range(0, k.range_id, "k")
    assert (renewed.timer_ack_level, renewed.timer_rows_dropped_before) == (100, 5001)
    await store.update_shard(0, renewed.range_id, 0, [], drop_timers_before=EVERY_TIMER_ROW)
    assert await store.read_timer_tasks(0, (-1, 0), 1 << 60, 100) == []
    assert (await store.acquire_shard(0, "k2", TIMER_QUEUE_KAFKA)).timer_rows_dropped_before == EVERY_TIMER_ROW


async def test_after_an_older_build_owned_the_shard_its_timer_rows_are_scanned_again(store: ExecutionStore) -> None:
    """During a rolling upgrade a build of schema version 2 may take a Kafka shard and write due-time
    timer rows (its Kafka mode did): the next owner ignores where the rows were dropped once."""
    if not isinstance(store, CassandraStore):
        pytest.skip("one SQLite file has one owner process: no rolling upgrade")
    s = await store.acquire_shard(0, "new", TIMER_QUEUE_KAFKA)
    await store.update_shard(0, s.range_id, 0, [], drop_timers_before=EVERY_TIMER_ROW)
    session = store.cql.session
    # The older build's take (level_range, no outbox_range) and a timer row it writes.
    await asyncio.to_thread(session.execute, "UPDATE executions SET range_id = %s, level_range = %s, owner = 'old' "
                                             "WHERE shard_id = 0 IF range_id = %s", (s.range_id + 1, s.range_id + 1,
                                                                                    s.range_id))
    await asyncio.to_thread(session.execute, "INSERT INTO executions (shard_id, kind, namespace, workflow_id, run_id, "
                                             "fire_time_ms, task_id, data) VALUES (0, 4, '', '', '', 50, 1, '{}')")
    info = await store.acquire_shard(0, "new again", TIMER_QUEUE_KAFKA)
    assert info.timer_rows_dropped_before == 0
    assert [t.task_id for t in await store.read_timer_tasks(0, (info.timer_ack_level - 1, 1 << 62), 1 << 62, 10)] == [1]


async def test_a_shard_whose_timers_went_to_kafka_is_refused_to_a_store_backed_owner(store: ExecutionStore) -> None:
    a = await store.acquire_shard(0, "a")
    assert a.timer_queue == ""  # a new shard: no previous owner
    b = await store.acquire_shard(0, "b", TIMER_QUEUE_KAFKA)  # store -> Kafka: the Kafka owner publishes the rows
    assert b.timer_queue == TIMER_QUEUE_STORE
    with pytest.raises(FailedPrecondition, match=r"queues\.kind: kafka") as e:
        await store.acquire_shard(0, "c", TIMER_QUEUE_STORE)
    assert e.value.reason == "TimerQueueMismatch"
    # Refused before anything was written: b still owns the shard, and it stays a Kafka shard.
    assert (await store.renew_range(0, b.range_id, "b")).range_id == b.range_id + 1
    with pytest.raises(FailedPrecondition):
        await store.acquire_shard(0, "c")
    assert (await store.acquire_shard(0, "d", TIMER_QUEUE_KAFKA)).timer_queue == TIMER_QUEUE_KAFKA


async def test_many_timer_deletes_in_one_update(store: ExecutionStore) -> None:
    s = await store.acquire_shard(0, "n")
    timers = [TimerTaskRow(10 + i % 7, i, "t") for i in range(1, 1201)]
    await store.write(ShardWrite(0, s.range_id, timer_tasks=timers[:600]))
    await store.write(ShardWrite(0, s.range_id, timer_tasks=timers[600:]))
    await store.update_shard(0, s.range_id, 0, [(t.fire_time_ms, t.task_id) for t in timers[:1100]])
    left = await store.read_timer_tasks(0, (0, 0), 1000, 1000)
    assert sorted(t.task_id for t in left) == list(range(1101, 1201))


# ---------------------------------------------------------------------- retention: delete_run

async def _two_runs(store: ExecutionStore, shard: int) -> int:
    """wf: a closed run r1 and its successor r2 (the current run); other: r1, current. Each
    with events. Returns the shard's range_id."""
    s = await store.acquire_shard(shard, "n")
    await store.commit([HistoryAppend(NS, "wf", "r1", 1, [(1, "e1"), (2, "e2")]),
                        HistoryAppend(NS, "other", "r1", 1, [(1, "o1")])],
                       ShardWrite(shard, s.range_id, [_run("wf", 3, None), _run("other", 2, None)],
                                  [_current("wf", "r1", None), _current("other", "r1", None)]))
    await store.commit([HistoryAppend(NS, "wf", "r2", 2, [(1, "f1")])],
                       ShardWrite(shard, s.range_id, [_run("wf", 2, None, run="r2")],
                                  [_current("wf", "r2", "r1")]))
    return s.range_id


async def test_delete_run_deletes_its_events_and_row_and_leaves_a_newer_run(store: ExecutionStore) -> None:
    rng = await _two_runs(store, 0)
    await store.delete_run(0, rng, NS, "wf", "r1")
    assert await store.get_run(0, NS, "wf", "r1") is None
    assert await store.read_history(NS, "wf", "r1", 1, 3, 10) == []
    cur = await store.get_current_run(0, NS, "wf")  # names the newer run: it stays, as does that run
    assert cur is not None and cur.run_id == "r2"
    assert (await store.get_run(0, NS, "wf", "r2")) is not None
    assert await store.read_history(NS, "wf", "r2", 1, 2, 10) == ["f1"]
    assert (await store.get_run(0, NS, "other", "r1")) is not None  # other workflows: untouched
    assert await store.read_history(NS, "other", "r1", 1, 2, 10) == ["o1"]
    await store.delete_run(0, rng, NS, "wf", "r1")  # again: harmless
    await store.delete_run(0, rng, NS, "wf", "never")  # a run that never was: harmless


async def test_delete_run_deletes_the_current_pointer_that_names_it(store: ExecutionStore) -> None:
    rng = await _two_runs(store, 0)
    await store.delete_run(0, rng, NS, "wf", "r2")
    assert await store.get_current_run(0, NS, "wf") is None
    assert await store.get_run(0, NS, "wf", "r2") is None
    assert (await store.get_run(0, NS, "wf", "r1")) is not None
    # The workflow id can start again: a new pointer with no previous one expected.
    await store.write(ShardWrite(0, rng, [_run("wf", 2, None, run="r3")], [_current("wf", "r3", None)]))
    cur = await store.get_current_run(0, NS, "wf")
    assert cur is not None and cur.run_id == "r3"


async def test_delete_run_with_a_stale_range_id_leaves_the_rows(store: ExecutionStore) -> None:
    rng = await _two_runs(store, 0)
    await store.acquire_shard(0, "node-b")
    with pytest.raises(ShardOwnershipLost):
        await store.delete_run(0, rng, NS, "wf", "r2")
    cur = await store.get_current_run(0, NS, "wf")
    assert cur is not None and cur.run_id == "r2"
    assert (await store.get_run(0, NS, "wf", "r2")) is not None


# ---------------------------------------------------------------------- Cassandra only

@pytest.fixture
async def cstore(cassandra: StoreConfig) -> AsyncIterator[CassandraStore]:
    s = CassandraStore(cassandra)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


async def test_a_batch_of_many_runs_is_one_lwt(cstore: CassandraStore) -> None:
    s = await cstore.acquire_shard(0, "n")
    runs = [_run(f"wf{i}", 3, None, state="s" * 500) for i in range(30)]
    before = cstore.lwt_count
    await cstore.commit([HistoryAppend(NS, f"wf{i}", "r1", 1, [(1, "e1"), (2, "e2")]) for i in range(30)],
                        ShardWrite(0, s.range_id, runs, [_current(f"wf{i}", "r1", None) for i in range(30)],
                                   [TransferTaskRow(i, "t") for i in range(1, 31)],
                                   [TimerTaskRow(100, 100 + i, "x") for i in range(30)]))
    assert cstore.lwt_count == before + 1
    assert all([await cstore.get_run(0, NS, f"wf{i}", "r1") for i in range(30)])
    assert len(await cstore.read_transfer_tasks(0, 0, 100)) == 30


def _config(**history: object) -> Config:
    return Config.model_validate({"history": {"num_shards": 1, **history}})


async def _shard_commits(store: CassandraStore, n: int, state_bytes: int) -> tuple[int, list[int]]:
    """n workflows' first commits, ready together, through a real shard's group commit: the LWTs
    they cost, and the number of runs of each conditional write."""
    info = await store.acquire_shard(0, "n")

    async def nothing(_: object) -> None:
        return None

    shard = ShardContext(info, store, _config(), lambda: 0, nothing, nothing, lambda _: None)
    writes: list[int] = []
    write = store.write

    async def recorded(w: ShardWrite) -> None:
        writes.append(len(w.runs))
        await write(w)

    store.write = recorded  # type: ignore[method-assign,assignment]
    await shard.start()
    try:
        updates = []
        for i in range(n):
            st = MutableState(NS, f"wf{i}", "r1", "t", "q", 0, memo={"pad": "p" * state_bytes})
            st.next_event_id = 2
            updates.append(Update([Mutation(st, 0, None, encoded=[(1, "e1")], transfer=[{"k": "wt"}])],
                                  CurrentRunWrite(CurrentRunRow(NS, f"wf{i}", "r1", "running"), None)))
        before = store.lwt_count
        await asyncio.gather(*(shard.commit(u) for u in updates))
        lwts = store.lwt_count - before
    finally:
        await shard.stop()
    for i in range(n):
        assert await store.get_run(0, NS, f"wf{i}", "r1") is not None
    return lwts, writes


async def test_group_commit_is_one_lwt_under_the_byte_bound(cstore: CassandraStore) -> None:
    lwts, writes = await _shard_commits(cstore, 20, 500)
    assert (lwts, writes) == (1, [20])
    # the 20 tasks were dispatched, and the shard's last flush range-deleted them
    assert await cstore.read_transfer_tasks(0, 0, 100) == []
    assert (await cstore.acquire_shard(0, "next")).transfer_ack_level > 0


async def test_the_byte_bound_splits_a_group_commit(cassandra: StoreConfig) -> None:
    store = CassandraStore(cassandra.model_copy(update={"cassandra_max_batch_bytes": 4000}))
    await store.open()
    try:
        lwts, writes = await _shard_commits(store, 20, 1200)  # about 1.6 KB per update: two fit in 4000 bytes
    finally:
        await store.close()
    assert writes == [2] * 10 and lwts == 10


async def test_one_update_above_the_byte_bound_goes_alone(cassandra: StoreConfig) -> None:
    store = CassandraStore(cassandra.model_copy(update={"cassandra_max_batch_bytes": 1000}))
    await store.open()
    try:
        lwts, writes = await _shard_commits(store, 3, 5000)
    finally:
        await store.close()
    assert writes == [1, 1, 1] and lwts == 3


async def test_a_group_commits_events_share_unlogged_batches(cassandra: StoreConfig) -> None:
    """Many runs' events (one partition each) in unlogged batches of APPEND_BATCH_PARTITIONS runs
    to the one node, all readable."""
    store = CassandraStore(cassandra)
    await store.open()
    try:
        appends = [HistoryAppend(NS, f"wf{i}", "r1", 7, [(1, f"{i}:a"), (2, f"{i}:b")]) for i in range(25)]
        requests = store._event_requests(appends)
        assert [len(r._statements_and_parameters) for r in requests] == [2 * APPEND_BATCH_PARTITIONS] * 2 + [10]
        await store.append_history(appends)
        for i in range(20):
            assert await store.read_history(NS, f"wf{i}", "r1", 1, 3, 100) == [f"{i}:a", f"{i}:b"]
    finally:
        await store.close()


def test_driver_errors_are_classified() -> None:
    """Refused before it ran: plain Unavailable. Sent and not answered: WriteOutcomeUnknown."""
    not_applied = [CassandraUnavailable("no replicas"), NoHostAvailable("down", {})]
    unknown = [WriteTimeout("cas timeout", write_type=5), OperationTimedOut("client timeout"), ConnectionResetError()]
    for e in not_applied:
        err = _conditional_error(e, "writing shard 0")
        assert type(err) is Unavailable and "Cassandra" in err.message and "writing shard 0" in err.message
    for e in unknown:
        assert isinstance(_conditional_error(e, "writing shard 0"), WriteOutcomeUnknown)


async def test_events_above_the_byte_bound_are_appended_in_several_requests(cassandra: StoreConfig) -> None:
    store = CassandraStore(cassandra.model_copy(update={"cassandra_max_batch_bytes": 1000}))
    await store.open()
    try:
        events = [(i, f"{i}:" + "x" * 300) for i in range(1, 11)]  # ~370 bytes each: two per batch
        requests = store._event_requests([HistoryAppend(NS, "wf", "r1", 1, events)])
        assert len(requests) == 5
        await store.append_history([HistoryAppend(NS, "wf", "r1", 1, events),
                                    HistoryAppend(NS, "wf", "r2", 1, [(1, "y" * 5000)])])  # alone: no batch
        assert await store.read_history(NS, "wf", "r1", 1, 11, 100) == [d for _, d in events]
        assert await store.read_history(NS, "wf", "r2", 1, 2, 100) == ["y" * 5000]
    finally:
        await store.close()
