"""SqliteStore group commits: writes that arrive together share one transaction, and each one
still succeeds or fails on its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from history.store.base import HistoryAppend, RunConditionFailed, RunWrite, ShardWrite, TransferTaskRow
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


def _write(shard: int, range_id: int, run: str, nxt: int, expected: int | None,
           tasks: list[int] | None = None) -> tuple[list[HistoryAppend], ShardWrite]:
    appends = [HistoryAppend("ns", f"wf-{run}", run, 1, [(i, f"e{i}") for i in range(expected or 1, nxt)])]
    w = ShardWrite(shard, range_id, [RunWrite("ns", f"wf-{run}", run, nxt, "{}", expected)],
                   transfer_tasks=[TransferTaskRow(t, "{}") for t in tasks or []])
    return appends, w


def _count_groups(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    orig = store._commit_group

    def counted(items: list[Any]) -> list[Exception | None]:
        sizes.append(len(items))
        return orig(items)

    monkeypatch.setattr(store, "_commit_group", counted)
    return sizes


async def test_concurrent_writes_share_one_transaction(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    a = await store.acquire_shard(0, "n")
    b = await store.acquire_shard(1, "n")
    sizes = _count_groups(store, monkeypatch)
    await asyncio.gather(store.commit(*_write(0, a.range_id, "r1", 3, None)),
                         store.commit(*_write(1, b.range_id, "r2", 3, None)),
                         store.commit(*_write(1, b.range_id, "r3", 2, None)))
    assert sizes == [3]
    assert (await store.get_run(0, "ns", "wf-r1", "r1")) is not None
    assert (await store.get_run(1, "ns", "wf-r2", "r2")) is not None
    assert await store.read_history("ns", "wf-r2", "r2", 1, 3, 10) == ["e1", "e2"]
    assert await store.call(lambda c: c.in_transaction) is False


async def test_under_load_a_transaction_waits_for_more_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """With a commit window, a write arriving right after a shared transaction waits for company;
    a lone write after a quiet spell does not wait."""
    s = SqliteStore(None, commit_window_ms=50)
    await s.open()
    try:
        a = await s.acquire_shard(0, "n")
        sizes = _count_groups(s, monkeypatch)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await s.commit(*_write(0, a.range_id, "r0", 2, None))  # quiet: at once
        assert loop.time() - t0 < 0.04
        await asyncio.gather(*(s.commit(*_write(0, a.range_id, f"r{i}", 2, None)) for i in (1, 2)))
        first = asyncio.ensure_future(s.commit(*_write(0, a.range_id, "r3", 2, None)))
        await asyncio.sleep(0.01)  # within the window: joins the same transaction
        await asyncio.gather(first, s.commit(*_write(0, a.range_id, "r4", 2, None)))
        assert sizes == [1, 2, 2]
    finally:
        await s.close()


async def test_a_rejected_write_does_not_fail_its_neighbours(store: SqliteStore) -> None:
    a = await store.acquire_shard(0, "n")
    b = await store.acquire_shard(1, "n")
    await store.commit(*_write(0, a.range_id, "r1", 3, None))
    results = await asyncio.gather(
        store.commit(*_write(0, a.range_id, "r1", 5, 4)),  # wrong expected next_event_id
        store.commit(*_write(1, b.range_id, "r2", 3, None)),
        store.commit(*_write(1, b.range_id + 1, "r3", 3, None)),  # fenced off
        return_exceptions=True)
    assert isinstance(results[0], RunConditionFailed) and "expected next_event_id 4, found 3" in str(results[0])
    assert results[1] is None
    assert isinstance(results[2], ShardOwnershipLost)
    assert (await store.get_run(0, "ns", "wf-r1", "r1")).next_event_id == 3  # type: ignore[union-attr]
    assert await store.read_history("ns", "wf-r1", "r1", 1, 10, 10) == ["e1", "e2"]  # nothing of the rejected one
    assert await store.get_run(1, "ns", "wf-r3", "r3") is None


async def test_a_write_that_breaks_a_constraint_fails_alone(store: SqliteStore) -> None:
    a = await store.acquire_shard(0, "n")
    await store.commit(*_write(0, a.range_id, "r1", 2, None, tasks=[100]))
    results = await asyncio.gather(
        store.commit(*_write(0, a.range_id, "r2", 2, None, tasks=[100])),  # transfer task id 100 exists
        store.commit(*_write(0, a.range_id, "r3", 2, None, tasks=[101])),
        return_exceptions=True)
    assert isinstance(results[0], Unavailable) and "UNIQUE" in str(results[0])
    assert results[1] is None
    assert await store.get_run(0, "ns", "wf-r2", "r2") is None
    assert await store.get_run(0, "ns", "wf-r3", "r3") is not None


async def test_writes_queued_before_close_are_written(tmp_path: Any) -> None:
    s = SqliteStore(str(tmp_path / "x.db"))
    await s.open()
    a = await s.acquire_shard(0, "n")
    pending = asyncio.ensure_future(s.commit(*_write(0, a.range_id, "r1", 2, None)))
    await asyncio.sleep(0)
    await s.close()
    await pending
    s2 = SqliteStore(str(tmp_path / "x.db"))
    await s2.open()
    try:
        assert await s2.get_run(0, "ns", "wf-r1", "r1") is not None
    finally:
        await s2.close()


async def test_writes_of_one_run_in_a_group_are_done_in_order(store: SqliteStore) -> None:
    """Two writes of one run in one transaction (two owners of a shard could queue them): the
    second one's condition sees what the first one wrote."""
    a = await store.acquire_shard(0, "n")
    await store.commit(*_write(0, a.range_id, "r1", 3, None))
    await asyncio.gather(store.commit(*_write(0, a.range_id, "r1", 5, 3)),
                         store.commit(*_write(0, a.range_id, "r1", 7, 5)))
    assert (await store.get_run(0, "ns", "wf-r1", "r1")).next_event_id == 7  # type: ignore[union-attr]
    assert await store.read_history("ns", "wf-r1", "r1", 1, 7, 10) == ["e1", "e2", "e3", "e4", "e5", "e6"]


async def test_a_write_of_several_runs_checks_each(store: SqliteStore) -> None:
    a = await store.acquire_shard(0, "n")
    b = await store.acquire_shard(1, "n")
    await store.commit(*_write(0, a.range_id, "r1", 3, None))
    await store.commit(*_write(0, a.range_id, "r2", 4, None))
    both = ShardWrite(0, a.range_id, [RunWrite("ns", "wf-r1", "r1", 5, "{}", 3),
                                      RunWrite("ns", "wf-r2", "r2", 6, "{}", 4)])
    wrong = ShardWrite(0, a.range_id, [RunWrite("ns", "wf-r1", "r1", 9, "{}", 5),
                                       RunWrite("ns", "wf-r2", "r2", 9, "{}", 9)])
    other = _write(1, b.range_id, "r3", 2, None)
    results = await asyncio.gather(store.commit([], both), store.commit(*other), return_exceptions=True)
    assert results == [None, None]
    with pytest.raises(RunConditionFailed, match="wf-r2/r2: expected next_event_id 9, found 6") as e:
        await asyncio.gather(store.commit([], wrong), store.commit(*_write(1, b.range_id, "r4", 2, None)))
    assert e.value.failed == [("ns", "wf-r2", "r2")]
    assert (await store.get_run(0, "ns", "wf-r1", "r1")).next_event_id == 5  # type: ignore[union-attr]
    assert await store.get_run(1, "ns", "wf-r4", "r4") is not None
