"""Durability and fencing, on a real SQLite file and on the real Cassandra node: reopen keeps
everything, unacknowledged tasks are redelivered, timers survive, and a fenced-off node's writes
never become visible."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from history.service import HistoryServiceImpl
from history.store.cassandra import CassandraStore
from history.store.factory import open_stores
from history.store.sqlite import SqliteStore
from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    RespondActivityTaskCompletedRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    TaskKind,
    WorkflowStatus,
)
from legato.errors import AlreadyStarted, FailedPrecondition, ShardOwnershipLost, Unavailable
from legato.events import EventType as E
from tests.conftest import store_config_from_env
from tests.unit.history.conftest import (
    Env,
    FakeClock,
    FakeMatching,
    activity,
    close_env,
    complete_wf,
    make_config,
    make_env,
    timer,
)

pytestmark = pytest.mark.usefixtures("history_store")


async def raw_event_ids(env: Env, path: str, namespace: str, workflow_id: str, run_id: str) -> list[int]:
    """Every stored history row's event id, visible or not (straight from the database)."""
    store = env.store
    if isinstance(store, SqliteStore):
        raw = sqlite3.connect(path)
        try:
            rows = raw.execute("SELECT event_id FROM history_events WHERE run_id = ? ORDER BY event_id",
                               (run_id,)).fetchall()
        finally:
            raw.close()
        return [r[0] for r in rows]
    assert isinstance(store, CassandraStore)
    rows = await store.cql.execute(f"SELECT event_id FROM {store.keyspace}.history_events "
                                   "WHERE namespace = ? AND workflow_id = ? AND run_id = ?",
                                   (namespace, workflow_id, run_id))
    return [r.event_id for r in rows]


async def test_reopened_file_keeps_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "legato.db")
    clock = FakeClock()
    env = await make_env(path, clock=clock)
    run_id = await env.start("wf-1", input=["a"])
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1"), timer("t", 60_000))
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s", {"x": 1}, request_id="r1"))
    before = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
    await close_env(env)

    env2 = await make_env(path, clock=clock, identity="h2")
    try:
        after = (await env2.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
        assert [e.to_dict() for e in after] == [e.to_dict() for e in before]
        d = await env2.history.describe_workflow(ExecutionRef("wf-1"))
        assert d.info.run_id == run_id and d.info.status == WorkflowStatus.RUNNING and d.pending_timers == 1
        assert [a.activity_id for a in d.pending_activities] == ["1"]
        # signal dedupe survives the restart
        await env2.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s", request_id="r1"))
        assert (await env2.types("wf-1")).count(E.WorkflowExecutionSignaled) == 1
        # the durable timer fires after the restart
        assert await env2.fire(60_000) == 2  # the user timer, and the stale workflow-task timeout (dropped)
        assert E.TimerFired in await env2.types("wf-1")
        # task ids keep growing across owners
        assert env2.history.shard(0).range_id == 2
    finally:
        await close_env(env2)


async def test_unpolled_queue_blocks_nothing_and_unacked_tasks_are_redelivered(tmp_path: Path) -> None:
    path = str(tmp_path / "legato.db")
    matching = FakeMatching()
    matching.blocked.add("slow")
    env = await make_env(path, make_config(num_shards=1), matching=matching)
    await env.start("wf-slow", task_queue="slow")
    await env.start("wf-fast", task_queue="q")
    await env.wft_task("wf-fast")  # dispatched although the "slow" task is still in flight
    shard = env.history.shard(0)
    assert shard.transfer.inflight >= 1
    await env.history.flush()
    slow_task_id = min(t for t in shard.transfer._inflight)
    assert shard.persisted_ack_level < slow_task_id
    await close_env(env)

    matching2 = FakeMatching()
    env2 = await make_env(path, make_config(num_shards=1), matching=matching2, identity="h2")
    try:
        t = await env2.wft_task("wf-slow")  # read back from the outbox and dispatched again
        assert t.task_queue == "slow" and t.task_id == slow_task_id
        await env2.history.wait_transfer_idle()
        await env2.history.flush()
        rows = await env2.store.read_transfer_tasks(0, 0, 100)
        assert rows == []  # everything acknowledged and range-deleted
    finally:
        await close_env(env2)


async def test_num_shards_is_fixed_at_creation(tmp_path: Path) -> None:
    path = str(tmp_path / "legato.db")
    env = await make_env(path, make_config(num_shards=2))
    await close_env(env)
    with pytest.raises(FailedPrecondition, match=r"created with history.num_shards = 2.*configured with 3"):
        await make_env(path, make_config(num_shards=3))


async def test_fencing_second_owner_takes_over_and_first_is_rejected(tmp_path: Path) -> None:
    path = str(tmp_path / "legato.db")
    clock = FakeClock()
    h1 = await make_env(path, clock=clock, identity="node-1")
    h2 = None
    try:
        run_id = await h1.start("wf-1")
        sid = h1.history.shard_for("default", "wf-1")
        h2 = await make_env(path, clock=clock, identity="node-2")  # acquires every shard: range_id + 1
        assert h2.history.shard(sid).range_id == h1.history.shard(sid).range_id + 1
        with pytest.raises(ShardOwnershipLost, match="another history node owns the shard"):
            await h1.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "from-node-1"))
        assert sid not in h1.history.owned_shards()
        with pytest.raises(ShardOwnershipLost, match="no longer owned"):
            await h1.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "again"))
        # nothing node 1 tried to write is visible ...
        events = (await h2.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
        assert [e.event_type for e in events] == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled]
        raw = await raw_event_ids(h2, path, "default", "wf-1", run_id)
        if store_config_from_env() is None:
            assert raw == [1, 2]  # SQLite checks the conditions first: nothing was appended
        else:
            assert raw == [1, 2, 3]  # Cassandra: appended before the rejected batch, and invisible
        await h2.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "from-node-2"))
        events = (await h2.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
        assert events[2].attrs["signal_name"] == "from-node-2"
        # node 1's other shard is dropped on its next write
        other = next(f"w{i}" for i in range(100) if h1.history.shard_for("default", f"w{i}") != sid)
        assert len(h1.history.owned_shards()) == 1
        with pytest.raises(ShardOwnershipLost):
            await h1.start(other)
        assert h1.history.owned_shards() == []
        assert await h2.start(other)  # the new owner serves it
    finally:
        await close_env(h1)
        if h2 is not None:
            await close_env(h2)


async def test_fenced_node_timer_and_task_effects_are_rejected(tmp_path: Path) -> None:
    path = str(tmp_path / "legato.db")
    clock = FakeClock()
    h1 = await make_env(path, make_config(num_shards=1), clock=clock, identity="node-1")
    h2 = None
    try:
        await h1.start("wf-1", execution_timeout_ms=1000)
        task = await h1.wft_task("wf-1")
        h2 = await make_env(path, make_config(num_shards=1), clock=clock, identity="node-2")
        with pytest.raises(ShardOwnershipLost):
            await h1.history.record_workflow_task_started(task, "r", "w")
        wt = await h2.history.record_workflow_task_started(task, "r", "w")  # node 2 serves the same task
        assert wt.started_event_id == 3
        clock.advance(1000)
        assert await h1.history.fire_due_timers() == 0  # the dropped shard fires nothing
        events = (await h2.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
        assert len(events) == 3
        await h2.history.fire_due_timers()
        assert (await h2.types("wf-1"))[-1] == E.WorkflowExecutionTimedOut
    finally:
        await close_env(h1)
        if h2 is not None:
            await close_env(h2)


async def test_group_commit_isolates_a_conflicting_run() -> None:
    env = await make_env(None, make_config(num_shards=1))
    try:
        ids = ["a", "b", "c", "d"]
        for wf in ids:
            await env.start(wf)
        shard = env.history.shard(0)
        before = shard.commits
        await asyncio.gather(*(env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef(wf), "s"))
                               for wf in ids))
        assert shard.commits == before + 1  # four runs, one atomic write

        # make run "b"'s cache disagree with the store (as if a write it believes applied had not):
        # its conditional write fails, the others must not. (A cache BEHIND its own shard's writes
        # cannot happen — an unknown outcome renews the range and reloads — and on Cassandra it
        # would let a same-range append shadow committed events; see history/store/base.py.)
        entry = next(e for k, e in shard.runs._d.items() if k[1] == "b")
        entry.state.next_event_id += 1
        before = shard.commits
        await asyncio.gather(*(env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef(wf), "t"))
                               for wf in ids))
        assert shard.commits == before + 4  # batch rejected; a, c, d one by one; b after reloading
        for wf in ids:
            events = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef(wf)))).events
            assert [e.event_id for e in events] == [1, 2, 3, 4]
            assert [e.attrs.get("signal_name") for e in events[2:]] == ["s", "t"]
    finally:
        await close_env(env)


async def test_transfer_tasks_of_both_kinds_reach_matching(tmp_path: Path) -> None:
    env = await make_env(str(tmp_path / "x.db"))
    try:
        await env.start("wf-1")
        wt = await env.poll_wft("wf-1")
        await env.complete(wt, activity("1", task_queue="acts"))
        t = await env.act_task("wf-1", 5)
        assert t.kind == TaskKind.ACTIVITY and t.task_queue == "acts"
        ids = [x.task_id for x in env.matching.tasks]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
    finally:
        await close_env(env)


async def test_everything_works_without_a_cache() -> None:
    env = await make_env(None, make_config(num_shards=1, mutable_state_cache_size=0))
    try:
        run_id = await env.start("wf-1", request_id="req-1")
        again = await env.history.start_workflow(StartWorkflowRequest("wf-1", "t", "q", request_id="req-1"))
        assert (again.run_id, again.started) == (run_id, False)
        with pytest.raises(AlreadyStarted):
            await env.start("wf-1")
        wt = await env.poll_wft("wf-1")
        assert len(wt.history) == 3
        await env.complete(wt, activity("1"), timer("t", 10))
        at = await env.poll_act("wf-1", 5)
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, 7))
        await env.fire(10)
        wt2 = await env.poll_wft("wf-1", 9, identity="worker-2")  # another worker: the whole history
        assert [e.event_type for e in wt2.history[6:]] == [E.ActivityTaskStarted, E.ActivityTaskCompleted,
                                                           E.WorkflowTaskScheduled, E.TimerFired,
                                                           E.WorkflowTaskStarted]
        await env.complete(wt2, complete_wf(1))
        assert (await env.history.describe_workflow(ExecutionRef("wf-1"))).info.status == WorkflowStatus.COMPLETED
    finally:
        await close_env(env)


async def test_range_blocks_are_renewed_and_task_ids_keep_growing(tmp_path: Path) -> None:
    path = str(tmp_path / "r.db")
    env = await make_env(path, make_config(num_shards=1, range_block_bits=3))  # 8 ids per block
    try:
        for i in range(6):
            await env.start(f"wf-{i}")
        shard = env.history.shard(0)
        assert shard.range_id > 2
        ids = [t.task_id for t in (await asyncio.gather(*(env.wft_task(f"wf-{i}") for i in range(6))))]
        assert ids == sorted(ids) and len(set(ids)) == 6
        info = await env.store.acquire_shard(0, "someone-else")
        assert info.range_id == shard.range_id + 1
        with pytest.raises(ShardOwnershipLost):
            await env.start("wf-x")
    finally:
        await close_env(env)


async def test_stop_fails_queued_writes_instead_of_hanging() -> None:
    env = await make_env(None, make_config(num_shards=1))
    try:
        for i in range(20):
            await env.start(f"wf-{i}")
        calls = [asyncio.create_task(env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef(f"wf-{i}"), "s")))
                 for i in range(20)]
        await asyncio.sleep(0)
        await env.history.stop()
        results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
        assert all(r is None or isinstance(r, Unavailable) for r in results)
    finally:
        await close_env(env)


async def test_timers_fire_on_the_real_clock_without_help() -> None:
    cfg = make_config()
    cfg.store = store_config_from_env() or cfg.store
    stores = await open_stores(cfg, None)
    h = HistoryServiceImpl(stores.execution, stores.visibility, cfg, matching=FakeMatching())
    await h.start()
    try:
        await h.start_workflow(StartWorkflowRequest("wf-1", "t", "q", execution_timeout_ms=30))
        res = await h.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=5_000))
        assert res.status == WorkflowStatus.TIMED_OUT
    finally:
        await h.stop()
        await stores.close()


async def test_event_cache_budget_is_respected() -> None:
    env = await make_env(None, make_config(num_shards=1))
    try:
        shard = env.history.shard(0)
        await env.start("small")
        used = shard.event_budget.used
        assert used > 0  # the new run's events are in memory
        shard.event_budget.limit = used + 10  # room for a few bytes more, not for another run
        await env.start("big", input=["x" * 100])
        assert shard.event_budget.used == used
        wt = await env.poll_wft("big")  # history read from the store
        assert [e.event_id for e in wt.history] == [1, 2, 3] and wt.history[0].attrs["input"] == ["x" * 100]
        wt2 = await env.poll_wft("small")  # "small" outgrows the budget: its events are dropped, still correct
        assert [e.event_id for e in wt2.history] == [1, 2, 3]
        assert shard.event_budget.used <= shard.event_budget.limit
        shard.runs.clear()
        assert shard.event_budget.used == 0
    finally:
        await close_env(env)


@pytest.mark.parametrize("remembered", [50_000, 0])
async def test_a_timer_of_a_closed_run_is_dropped_without_reading_the_run(remembered: int) -> None:
    """Timeouts nobody deletes (a workflow task's, an activity's) and timers left pending come due
    after the run closed; the shard remembers the runs that closed, so such a timer costs no read
    of the run (history.closed_runs_remembered; 0: it is read and found closed)."""
    env = await make_env(None, make_config(num_shards=1, mutable_state_cache_size=0,
                                           closed_runs_remembered=remembered))
    try:
        await env.start("wf-1")
        await env.complete(await env.poll_wft("wf-1"), timer("t", 10))
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
        await env.complete(await env.poll_wft("wf-1", 7), complete_wf(1))
        reads: list[str] = []
        get_run = env.store.get_run

        async def counted(shard_id: int, namespace: str, workflow_id: str, run_id: str) -> Any:
            reads.append(workflow_id)
            return await get_run(shard_id, namespace, workflow_id, run_id)

        env.store.get_run = counted  # type: ignore[method-assign]
        assert await env.fire(10) == 1  # the pending timer "t" came due
        assert reads == ([] if remembered else ["wf-1"])
        assert (await env.history.describe_workflow(ExecutionRef("wf-1"))).info.status == WorkflowStatus.COMPLETED
        assert E.TimerFired not in await env.types("wf-1")
    finally:
        await close_env(env)
