"""A timer delivered again (a Kafka redelivery, a row fired twice across a crash) changes nothing,
and never fires early: history checks every timer against the run's state."""

from __future__ import annotations

from history.queues import TimerTask
from history.state import TM_WFT_BACKOFF
from legato import codec
from legato.api import ExecutionRef, RespondWorkflowTaskFailedRequest, SignalWorkflowRequest, TaskKind, WorkflowTask
from legato.errors import Failure
from legato.events import EventType as E
from tests.unit.history.conftest import Env, timer

RETRY_MS = 1_000  # history.workflow_task_retry_initial_ms (default)


async def _fail(env: Env, wt: WorkflowTask) -> None:
    await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(
        wt.task_token, "WORKFLOW_ERROR", Failure("boom", source="wf.lua:7"), "w1"))


async def _stored_timers(env: Env, kind: str) -> list[TimerTask]:
    sid = env.history.shard_for("default", "wf-1")
    rows = await env.store.read_timer_tasks(sid, (-1, 1 << 62), 1 << 62, 1000)
    return [TimerTask(r.fire_time_ms, r.task_id, codec.loads(r.data)) for r in rows
            if codec.loads(r.data)["k"] == kind]


async def _wft_tasks(env: Env, attempt: int) -> int:
    return len(env.matching.find(lambda t: t.kind == TaskKind.WORKFLOW and t.attempt == attempt))


async def test_a_stale_backoff_timer_of_an_earlier_failure_streak_does_not_cut_a_later_backoff(env: Env) -> None:
    await env.start("wf-1")
    await _fail(env, await env.poll_wft("wf-1"))  # attempt 2 after a backoff: timer A
    [stale] = await _stored_timers(env, TM_WFT_BACKOFF)
    await env.fire(RETRY_MS)
    await env.run_wf("wf-1", timer("t", 3_600_000))  # attempt 2 succeeds; the run waits
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go", []))
    await _fail(env, await env.poll_next("wf-1"))  # a new streak: attempt 2 again, after timer B
    before = await env.events("wf-1")
    tasks = await _wft_tasks(env, 2)

    await env.history.run_timer_task(stale)  # timer A again, RETRY_MS before B is due

    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.pending_workflow_task is not None and d.pending_workflow_task.state == "BACKOFF"
    assert await _wft_tasks(env, 2) == tasks and await env.events("wf-1") == before
    await env.fire(RETRY_MS - 1)
    assert await _wft_tasks(env, 2) == tasks
    await env.fire(1)  # B is due: the next attempt is scheduled, once
    assert await _wft_tasks(env, 2) == tasks + 1


async def test_every_fired_timer_delivered_again_changes_no_history(env: Env) -> None:
    await env.start("wf-1")
    await env.run_wf("wf-1", timer("a", 1000), timer("b", 5000))
    fired = [t for t in await _stored_timers(env, "user_timer") if t.fire_time_ms <= env.clock.now + 1000]
    await env.fire(1000)
    assert (await env.types("wf-1")).count(E.TimerFired) == 1
    before = await env.events("wf-1")
    for t in fired:
        await env.history.run_timer_task(t)
    assert await env.events("wf-1") == before
    assert await env.fire(3999) == 0  # b is not early either
    assert await env.events("wf-1") == before


async def test_the_store_backed_queue_records_fire_lags(env: Env) -> None:
    await env.start("wf-1")
    await env.run_wf("wf-1", timer("a", 1000))
    await env.fire(1250)
    assert 250 in env.history.timer_fire_lags()
