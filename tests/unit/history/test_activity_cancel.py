"""RequestCancelActivityTask (docs/processes.md): canceled at once when not running; otherwise
heartbeats say cancel_requested and the activity reports ActivityTaskCanceled (or closes as it
would anyway)."""

from __future__ import annotations

import pytest

from legato.api import (
    ExecutionRef,
    RecordActivityHeartbeatRequest,
    RespondActivityTaskCanceledRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
    SignalWorkflowRequest,
)
from legato.commands import Command
from legato.commands import CommandType as C
from legato.errors import FailedPrecondition, Failure, NotFound
from legato.events import EventType as E
from tests.unit.history.conftest import Env, activity, cmd, timer


def cancel(sched: int) -> Command:
    return cmd(C.RequestCancelActivityTask, scheduled_event_id=sched)


async def test_cancel_before_it_starts_is_immediate(env: Env) -> None:
    await env.start("wf")
    await env.run_wf("wf", activity("1"))
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "go"))
    await env.run_wf("wf", cancel(5), timer("t", 1_000))
    hist = await env.history_of("wf")
    assert [e.event_type for e in hist[-5:]] == [E.WorkflowTaskCompleted, E.ActivityTaskCancelRequested,
                                                 E.TimerStarted, E.ActivityTaskCanceled, E.WorkflowTaskScheduled]
    assert hist[-4].attrs["scheduled_event_id"] == 5
    assert hist[-2].attrs["scheduled_event_id"] == 5 and hist[-2].attrs["started_event_id"] == 0
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.pending_activities == []
    task = await env.act_task("wf", 5)  # its task is stale now
    with pytest.raises(NotFound):
        await env.history.record_activity_task_started(task, "r", "w")


async def test_cancel_a_running_activity(env: Env) -> None:
    await env.start("wf")
    await env.run_wf("wf", activity("1", heartbeat_timeout_ms=30_000))
    at = await env.poll_act("wf", 5)
    resp = await env.history.record_activity_heartbeat(RecordActivityHeartbeatRequest(at.task_token, {"p": 1}))
    assert resp.cancel_requested is False
    with pytest.raises(FailedPrecondition, match="its cancellation was not requested"):
        await env.history.respond_activity_task_canceled(RespondActivityTaskCanceledRequest(at.task_token))
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "stop"))
    await env.run_wf("wf", cancel(5))
    assert (await env.types("wf"))[-1] == E.ActivityTaskCancelRequested  # it runs: nothing else yet
    resp = await env.history.record_activity_heartbeat(RecordActivityHeartbeatRequest(at.task_token, {"p": 2}))
    assert resp.cancel_requested is True
    await env.history.respond_activity_task_canceled(RespondActivityTaskCanceledRequest(
        at.task_token, details={"stopped_at": 2}, identity="w1"))
    hist = await env.history_of("wf")
    assert [e.event_type for e in hist[-3:]] == [E.ActivityTaskStarted, E.ActivityTaskCanceled,
                                                 E.WorkflowTaskScheduled]
    assert hist[-2].attrs == {"scheduled_event_id": 5, "started_event_id": hist[-3].event_id,
                              "details": {"stopped_at": 2}, "identity": "w1"}
    with pytest.raises(NotFound):  # once
        await env.history.respond_activity_task_canceled(RespondActivityTaskCanceledRequest(at.task_token))


async def test_a_cancel_requested_activity_may_still_complete_and_is_not_retried(env: Env) -> None:
    await env.start("wf")
    await env.run_wf("wf", activity("1"), activity("2"))
    a1 = await env.poll_act("wf", 5)
    a2 = await env.poll_act("wf", 6)
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "stop"))
    await env.run_wf("wf", cancel(5), cancel(6))
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(a1.task_token, "done"))
    await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(
        a2.task_token, Failure("interrupted", kind="Canceled", retryable=True)))
    types = await env.types("wf")
    assert E.ActivityTaskCompleted in types and E.ActivityTaskFailed in types  # the failure is final
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).pending_activities == []


async def test_cancel_of_an_activity_that_closed_during_the_task(env: Env) -> None:
    await env.start("wf")
    await env.run_wf("wf", activity("1"))
    at = await env.poll_act("wf", 5)
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "stop"))
    wt = await env.poll_next("wf")
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, 42))
    await env.complete(wt, cancel(5))
    hist = await env.history_of("wf")
    assert [e.event_type for e in hist[-5:]] == [E.WorkflowTaskCompleted, E.ActivityTaskCancelRequested,
                                                 E.ActivityTaskStarted, E.ActivityTaskCompleted,
                                                 E.WorkflowTaskScheduled]


async def test_cancel_of_an_unknown_activity_is_a_bad_command(env: Env) -> None:
    await env.start("wf")
    wt = await env.poll_next("wf")
    with pytest.raises(Exception, match="no pending activity was scheduled by event 9"):
        await env.complete(wt, cancel(9))
