"""SqliteStore: shard acquisition and fencing, conditional writes, history visibility rules,
outbox reads and deletes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from history.store.base import (
    CurrentRunRow,
    CurrentRunWrite,
    HistoryAppend,
    RunConditionFailed,
    RunWrite,
    ShardWrite,
    TimerTaskRow,
    TransferTaskRow,
)
from history.store.sqlite import SqliteStore
from legato.errors import ShardOwnershipLost, Unavailable


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = SqliteStore(None)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _run(next_event_id: int, expected: int | None, run_id: str = "r1") -> RunWrite:
    return RunWrite("ns", "wf", run_id, next_event_id, f'{{"next": {next_event_id}}}', expected)


def _events(run_id: str, txn: int, *ids: int, tag: str = "") -> HistoryAppend:
    return HistoryAppend("ns", "wf", run_id, txn, [(i, f"event-{i}{tag}") for i in ids])


async def test_acquire_increments_range_and_renew_is_conditional(store: SqliteStore) -> None:
    a = await store.acquire_shard(0, "node-a")
    b = await store.acquire_shard(0, "node-b")
    assert (a.range_id, b.range_id, b.owner) == (1, 2, "node-b")
    with pytest.raises(ShardOwnershipLost, match="holds range_id 1 but the store has range_id 2"):
        await store.renew_range(0, 1, "node-a")
    c = await store.renew_range(0, 2, "node-b")
    assert c.range_id == 3
    assert await store.init_cluster(4) == 4
    assert await store.init_cluster(8) == 4  # fixed at creation


async def test_conditional_write_and_history_bound(store: SqliteStore) -> None:
    info = await store.acquire_shard(0, "n")
    cur = CurrentRunRow("ns", "wf", "r1", "RUNNING", "req", 1)
    first = ShardWrite(0, info.range_id, [_run(3, None)], [CurrentRunWrite(cur, None)], [TransferTaskRow(11, "t")],
                       [TimerTaskRow(500, 12, "x")])
    await store.commit([_events("r1", 10, 1, 2)], first)
    assert await store.read_history("ns", "wf", "r1", 1, 3, 100) == ["event-1", "event-2"]
    assert (await store.get_run(0, "ns", "wf", "r1")).next_event_id == 3  # type: ignore[union-attr]
    assert (await store.get_current_run(0, "ns", "wf")) == cur
    # a new run must not exist yet
    with pytest.raises(RunConditionFailed, match="expected next_event_id none, found 3"):
        await store.commit([_events("r1", 13, 3)], ShardWrite(0, info.range_id, [_run(4, None)]))
    # the current-run pointer has a condition on the previous run id
    with pytest.raises(RunConditionFailed, match="current run of ns/wf: expected none, found r1"):
        await store.write(ShardWrite(0, info.range_id, [_run(1, None, "r2")],
                                     [CurrentRunWrite(CurrentRunRow("ns", "wf", "r2", "RUNNING"), None)]))
    # a wrong range id: ownership lost, nothing written
    with pytest.raises(ShardOwnershipLost):
        await store.commit([_events("r1", 14, 3)], ShardWrite(0, info.range_id + 1, [_run(4, 3)]))
    assert (await store.get_run(0, "ns", "wf", "r1")).next_event_id == 3  # type: ignore[union-attr]
    assert await store.read_history("ns", "wf", "r1", 1, 10, 100) == ["event-1", "event-2"]
    assert await store.get_run(0, "ns", "wf", "r2") is None


async def test_appended_events_of_a_rejected_write_are_invisible(store: SqliteStore) -> None:
    """The Cassandra-shaped path: events are upserted first, then the conditional write fails."""
    info = await store.acquire_shard(0, "n")
    await store.commit([_events("r1", 10, 1, 2)], ShardWrite(0, info.range_id, [_run(3, None)]))
    await store.append_history([_events("r1", 20, 3, 4, tag="-stale")])
    with pytest.raises(RunConditionFailed):
        await store.write(ShardWrite(0, info.range_id, [_run(5, 99)]))
    bound = (await store.get_run(0, "ns", "wf", "r1")).next_event_id  # type: ignore[union-attr]
    assert await store.read_history("ns", "wf", "r1", 1, bound, 100) == ["event-1", "event-2"]
    # a later successful write of the same ids with a greater txn id wins over the stale rows
    await store.commit([_events("r1", 30, 3)], ShardWrite(0, info.range_id, [_run(4, 3)]))
    assert await store.read_history("ns", "wf", "r1", 1, 4, 100) == ["event-1", "event-2", "event-3"]
    # and a late append of a fenced-off owner (smaller txn id) does not shadow it
    await store.append_history([_events("r1", 5, 3, tag="-old-owner")])
    assert await store.read_history("ns", "wf", "r1", 3, 4, 100) == ["event-3"]
    assert await store.read_history("ns", "wf", "r1", 2, 4, 1) == ["event-2"]


async def test_outbox_reads_and_fenced_deletes(store: SqliteStore) -> None:
    info = await store.acquire_shard(0, "n")
    await store.write(ShardWrite(0, info.range_id, transfer_tasks=[TransferTaskRow(i, f"t{i}") for i in (5, 6, 7)],
                                 timer_tasks=[TimerTaskRow(100, 8, "a"), TimerTaskRow(100, 9, "b"),
                                              TimerTaskRow(200, 10, "c")]))
    assert [t.task_id for t in await store.read_transfer_tasks(0, 5, 10)] == [6, 7]
    assert [(t.fire_time_ms, t.task_id) for t in await store.read_timer_tasks(0, (-1, 0), 150, 10)] == \
        [(100, 8), (100, 9)]
    assert [t.task_id for t in await store.read_timer_tasks(0, (100, 8), 1000, 10)] == [9, 10]
    with pytest.raises(ShardOwnershipLost):
        await store.update_shard(0, info.range_id + 5, 6, [(100, 8)])
    await store.update_shard(0, info.range_id, 6, [(100, 8)])
    assert [t.task_id for t in await store.read_transfer_tasks(0, 0, 10)] == [7]
    assert [t.task_id for t in await store.read_timer_tasks(0, (-1, 0), 1000, 10)] == [9, 10]
    again = await store.acquire_shard(0, "m")
    assert again.transfer_ack_level == 6


async def test_file_reopen_and_closed_store(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    s = SqliteStore(path)
    await s.open()
    info = await s.acquire_shard(3, "n")
    await s.commit([_events("r1", 1, 1)], ShardWrite(3, info.range_id, [_run(2, None)]))
    await s.close()
    with pytest.raises(Unavailable, match="not open"):
        await s.get_run(3, "ns", "wf", "r1")
    s2 = SqliteStore(path)
    await s2.open()
    try:
        assert (await s2.get_run(3, "ns", "wf", "r1")).next_event_id == 2  # type: ignore[union-attr]
        assert await s2.read_history("ns", "wf", "r1", 1, 2, 10) == ["event-1"]

        def pragmas(c: object) -> tuple[str, int]:
            import sqlite3
            assert isinstance(c, sqlite3.Connection)
            return c.execute("PRAGMA journal_mode").fetchone()[0], c.execute("PRAGMA synchronous").fetchone()[0]

        assert await s2.call(pragmas) == ("wal", 1)  # WAL, synchronous=NORMAL
    finally:
        await s2.close()
