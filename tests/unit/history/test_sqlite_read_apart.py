"""Visibility's lists and counts on SQLite run on a connection and thread of their own
(`SqliteStore.read_apart`): a long count must not hold up the engine's writes, and it sees every
write committed before it starts."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore
from legato.api import WorkflowExecutionInfo, WorkflowStatus
from legato.errors import Unavailable

Stores = tuple[SqliteStore, SqliteVisibilityStore]
READ_HELD_S = 30.0  # how long the held read waits for the test to let it go (a failure, not a hang)


def _info(n: int) -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo(namespace="default", workflow_id=f"w{n}", run_id=f"r{n}", workflow_type="t",
                                 task_queue="q", status=WorkflowStatus.RUNNING, start_time_ms=1_000 + n)


@pytest.fixture(params=["file", "memory"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """A file (reads on their own connection and thread) and an in-memory database (one connection)."""
    store = SqliteStore(str(tmp_path / "s.db") if request.param == "file" else None)
    await store.open()
    try:
        yield store, SqliteVisibilityStore(store)
    finally:
        await store.close()


async def test_a_read_in_progress_does_not_hold_up_writes(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    vis = SqliteVisibilityStore(store)
    try:
        release, entered = threading.Event(), threading.Event()

        def held_read(c: object) -> bool:
            entered.set()
            return release.wait(READ_HELD_S)

        read = asyncio.create_task(store.read_apart(held_read))
        await asyncio.to_thread(entered.wait, READ_HELD_S)
        # The read is in progress on its own thread; a write (and its commit) still goes through.
        await vis.upsert(_info(1))
        assert not read.done()
        release.set()
        assert await read is True
        assert await vis.count("default", "") == 1
    finally:
        await store.close()


async def test_a_read_sees_what_was_committed_before_it(stores: Stores) -> None:
    _, vis = stores
    for n in range(3):
        await vis.upsert(_info(n))
        assert await vis.count("default", "") == n + 1
    await vis.upsert(dataclasses.replace(_info(0), status=WorkflowStatus.COMPLETED, close_time_ms=5_000))
    assert await vis.count_by_status("default", "") == {WorkflowStatus.RUNNING: 2, WorkflowStatus.COMPLETED: 1}


async def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    await store.open()
    await store.read_apart(lambda c: None)
    await store.close()
    with pytest.raises(Unavailable, match="not open"):
        await store.read_apart(lambda c: None)
