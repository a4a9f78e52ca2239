"""Tasks handed over with responses instead of through matching: eager activities (started with
the workflow task that schedules them), the workflow task an activity's completion schedules, and
result long-polls that wake only when the run closes."""

from __future__ import annotations

import asyncio

import pytest

from history.state import STARTED, MutableState
from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    RespondActivityTaskCompletedRequest,
    RespondWorkflowTaskCompletedRequest,
    TaskKind,
    WorkflowStatus,
)
from legato.errors import InvalidArgument, NotFound
from legato.events import EventType as E
from tests.unit.history.conftest import Env, activity, complete_wf, timer


def _acts(env: Env, wf: str) -> list[int]:
    return [t.scheduled_event_id for t in env.matching.find(lambda t: t.kind == TaskKind.ACTIVITY
                                                            and t.workflow_id == wf)]


async def _state(env: Env, wf: str) -> MutableState:
    shard = env.history.shard(env.history.shard_for("default", wf))
    cur = await shard.get_current("default", wf)
    assert cur is not None
    entry = await shard.load("default", wf, cur.run_id)
    assert entry is not None
    return entry.state


async def test_eager_activity_is_started_with_the_workflow_task_and_handed_back(env: Env) -> None:
    await env.start("wf-1", input=["x"])
    wt = await env.poll_wft("wf-1")
    resp = await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        wt.task_token, [activity("1", input=["x"], request_eager_execution=True), activity("2")], "worker-1"))
    assert [t.activity_id for t in resp.activity_tasks] == ["1"]
    at = resp.activity_tasks[0]
    assert (at.activity_type, at.input, at.attempt, at.task_queue) == ("app:charge", ["x"], 1, "q")
    st = await _state(env, "wf-1")
    assert st.activities[5].state == STARTED and st.activities[6].state != STARTED
    await env.act_task("wf-1", 6)  # the other one goes through matching ...
    assert _acts(env, "wf-1") == [6]  # ... and only it
    # the flag is not recorded in the history
    events = (await env.history.get_workflow_history(_history_req("wf-1"))).events
    assert all("request_eager_execution" not in e.attrs for e in events)
    # the eager task is answered like a polled one
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, "ok"))
    assert (await env.types("wf-1"))[-3:] == [E.ActivityTaskStarted, E.ActivityTaskCompleted, E.WorkflowTaskScheduled]


def _history_req(wf: str) -> GetHistoryRequest:
    return GetHistoryRequest(ExecutionRef(wf))


async def test_eager_is_refused_on_another_queue_and_when_the_run_closes(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    resp = await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        wt.task_token, [activity("1", task_queue="other", request_eager_execution=True)], "worker-1"))
    assert resp.activity_tasks == []
    await env.act_task("wf-1", 5)
    await env.start("wf-2")
    wt = await env.poll_wft("wf-2")
    resp = await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        wt.task_token, [activity("1", request_eager_execution=True), complete_wf()], "worker-1"))
    assert resp.activity_tasks == []  # the run closed in this task: nothing to run
    assert (await _state(env, "wf-2")).status == WorkflowStatus.COMPLETED.value


async def test_eager_flag_must_be_a_boolean(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    with pytest.raises(InvalidArgument, match="request_eager_execution must be true or false"):
        await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
            wt.task_token, [activity("1", request_eager_execution="yes")], "worker-1"))


async def test_activity_completion_hands_back_the_workflow_task_it_schedules(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    resp = await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        wt.task_token, [activity("1", request_eager_execution=True)], "worker-1"))
    at = resp.activity_tasks[0]
    done = await env.history.respond_activity_task_completed(
        RespondActivityTaskCompletedRequest(at.task_token, "paid", "worker-1", return_workflow_task=True))
    nxt = done.workflow_task
    assert nxt is not None
    assert [e.event_type for e in nxt.history][-4:] == [E.ActivityTaskStarted, E.ActivityTaskCompleted,
                                                        E.WorkflowTaskScheduled, E.WorkflowTaskStarted]
    assert nxt.started_event_id == nxt.history[-1].event_id == 9 and nxt.previous_started_event_id == 3
    assert nxt.history[-1].attrs["identity"] == "worker-1"
    # started for us: matching never saw it
    assert [t.scheduled_event_id for t in env.matching.find(lambda t: t.kind == TaskKind.WORKFLOW)] == [2]
    await env.complete(nxt, complete_wf("ok"))
    r = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), 0))
    assert (r.status, r.result) == (WorkflowStatus.COMPLETED, "ok")


async def test_no_workflow_task_is_handed_back_while_one_is_running(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    resp = await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        wt.task_token, [activity("1", request_eager_execution=True), activity("2", request_eager_execution=True),
                        timer("t", 60_000)], "worker-1"))
    a1, a2 = resp.activity_tasks
    done = await env.history.respond_activity_task_completed(
        RespondActivityTaskCompletedRequest(a1.task_token, 1, "worker-1", return_workflow_task=True))
    assert done.workflow_task is not None  # the workflow task for the first completion is now running
    done2 = await env.history.respond_activity_task_completed(
        RespondActivityTaskCompletedRequest(a2.task_token, 2, "worker-1", return_workflow_task=True))
    assert done2.workflow_task is None  # buffered until that task completes
    # without asking, the scheduled workflow task goes through matching as usual
    await env.complete(done.workflow_task)
    await env.wft_task("wf-1", done.workflow_task.started_event_id + 4)
    # an answer that comes too late is refused, and hands nothing back
    with pytest.raises(NotFound):
        await env.history.respond_activity_task_completed(
            RespondActivityTaskCompletedRequest(a2.task_token, 2, "worker-1", return_workflow_task=True))


async def test_result_long_poll_wakes_on_close_not_on_every_step(env: Env) -> None:
    await env.start("wf-1")
    waiter = asyncio.ensure_future(env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), 10_000)))
    await asyncio.sleep(0)
    closers = env.history.runs.closers  # the notifier result polls wait on
    assert len(closers._waiters) == 1
    wt = await env.poll_wft("wf-1")  # a change of the run, not a close: the poll keeps waiting
    await asyncio.sleep(0)
    assert not waiter.done()
    await env.complete(wt, complete_wf("fine"))
    r = await asyncio.wait_for(waiter, 5)
    assert (r.status, r.result) == (WorkflowStatus.COMPLETED, "fine")


async def test_a_lost_eager_activity_is_retried_after_its_timeout(env: Env) -> None:
    """The worker that got an eager activity died before running it: start-to-close times it out
    and the retry goes through matching, as for a lost polled task."""
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    resp = await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(
        wt.task_token, [activity("1", request_eager_execution=True, start_to_close_timeout_ms=2000)], "worker-1"))
    lost = resp.activity_tasks[0]
    assert _acts(env, "wf-1") == []
    await env.fire(2001)  # start-to-close: attempt 1 timed out, retry after the backoff
    await env.fire(60_000)
    at = await env.poll_act("wf-1", 5, attempt=2)
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, "late"))
    with pytest.raises(NotFound):  # the lost attempt's answer, should it ever come, is refused
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(lost.task_token, "x"))
    types = await env.types("wf-1")
    assert types.count(E.ActivityTaskCompleted) == 1 and types[-1] is E.WorkflowTaskScheduled
