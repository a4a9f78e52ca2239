"""Start -> task dispatched -> completed with commands -> events in order."""

from __future__ import annotations

import pytest

from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    IdConflictPolicy,
    IdReusePolicy,
    ListWorkflowsRequest,
    StartWorkflowRequest,
    TaskKind,
    TerminateWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import CommandType
from legato.errors import AlreadyStarted, InvalidArgument, NotFound
from legato.events import EventType as E
from legato.tokens import TaskToken
from tests.unit.history.conftest import Env, activity, cmd, complete_wf, timer


async def test_start_dispatches_a_workflow_task_with_the_whole_history(env: Env) -> None:
    run_id = await env.start("wf-1", input=[{"order": 7}], memo={"m": 1})
    task = await env.wft_task("wf-1")
    assert task.kind == TaskKind.WORKFLOW and task.run_id == run_id and task.scheduled_event_id == 2
    assert task.task_queue == "q" and task.attempt == 1 and task.task_id > 0
    assert task.shard_id == env.history.shard_for("default", "wf-1")
    wt = await env.history.record_workflow_task_started(task, "r1", "worker-1")
    assert [e.event_type for e in wt.history] == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled,
                                                  E.WorkflowTaskStarted]
    assert [e.event_id for e in wt.history] == [1, 2, 3]
    started = wt.history[0].attrs
    assert started["input"] == [{"order": 7}] and started["workflow_type"] == "app:order"
    assert len(started["random_seed"]) == 32 and int(started["random_seed"], 16) >= 0
    assert started["first_run_id"] == run_id and started["attempt"] == 1
    size = sum(len(e.encode().encode()) for e in wt.history[:2])  # the history before it, in bytes
    assert wt.history[2].attrs == {"scheduled_event_id": 2, "identity": "worker-1", "request_id": "r1",
                                   "history_size_bytes": size}
    assert wt.started_event_id == 3 and wt.previous_started_event_id == 0 and wt.attempt == 1
    assert wt.workflow_type == "app:order" and wt.task_queue == "q"
    tok = TaskToken.decode(wt.task_token)
    assert (tok.kind, tok.scheduled_event_id, tok.started_event_id, tok.attempt) == ("workflow", 2, 3, 1)


async def test_commands_become_events_in_command_order(env: Env) -> None:
    run_id = await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1", "app:charge", input=[5]), timer("1", 60_000),
                       cmd(CommandType.RecordMarker, marker_name="crypto.random_bytes", details="abcd"))
    assert await env.events("wf-1") == [
        (1, E.WorkflowExecutionStarted), (2, E.WorkflowTaskScheduled), (3, E.WorkflowTaskStarted),
        (4, E.WorkflowTaskCompleted), (5, E.ActivityTaskScheduled), (6, E.TimerStarted), (7, E.MarkerRecorded)]
    hist = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
    sched = hist[4].attrs
    assert sched["activity_type"] == "app:charge" and sched["workflow_task_completed_event_id"] == 4
    assert sched["task_queue"] == "q" and sched["input"] == [5]
    assert sched["start_to_close_timeout_ms"] == env.config.history.activity_start_to_close_default_ms
    assert sched["retry_policy"]["initial_interval_ms"] == env.config.history.activity_retry_initial_ms
    assert hist[5].attrs == {"timer_id": "1", "start_to_fire_timeout_ms": 60_000,
                             "workflow_task_completed_event_id": 4}
    assert hist[6].attrs["details"] == "abcd"
    # the activity task went to matching
    at = await env.act_task("wf-1", 5)
    assert at.run_id == run_id and at.task_queue == "q"
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.info.status == WorkflowStatus.RUNNING and d.pending_timers == 1
    assert [(a.activity_id, a.state, a.attempt) for a in d.pending_activities] == [("1", "SCHEDULED", 1)]
    assert d.pending_workflow_task is None


async def test_activity_completion_schedules_next_task_and_workflow_completes(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1"))
    at = await env.poll_act("wf-1", 5)
    assert at.input == [1] and at.attempt == 1 and at.activity_type == "app:charge"
    from legato.api import RespondActivityTaskCompletedRequest
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, {"ok": 1},
                                                                                          "act-worker"))
    wt2 = await env.poll_wft("wf-1", 8)
    assert wt2.previous_started_event_id == 3
    # the same worker: only the events after its last task (sticky)
    assert [e.event_id for e in wt2.history] == [4, 5, 6, 7, 8, 9]
    assert [e.event_type for e in wt2.history[2:]] == [E.ActivityTaskStarted, E.ActivityTaskCompleted,
                                                       E.WorkflowTaskScheduled, E.WorkflowTaskStarted]
    started, done = wt2.history[2], wt2.history[3]
    assert started.attrs["attempt"] == 1 and started.attrs["identity"] == "worker-1"
    assert done.attrs == {"scheduled_event_id": 5, "started_event_id": 6, "result": {"ok": 1},
                          "identity": "act-worker"}
    await env.complete(wt2, complete_wf({"total": 3}))
    assert (await env.types("wf-1"))[-2:] == [E.WorkflowTaskCompleted, E.WorkflowExecutionCompleted]
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=0))
    assert res.status == WorkflowStatus.COMPLETED and res.result == {"total": 3}
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.info.status == WorkflowStatus.COMPLETED and d.info.close_time_ms == env.clock.now
    assert d.result == {"total": 3} and d.info.history_length == 11


async def test_visibility_is_written_on_start_and_close(env: Env) -> None:
    run_id = await env.start("wf-1", search_attributes={"customer": "c1"})
    await env.history.wait_transfer_idle()
    listed = await env.visibility.list(ListWorkflowsRequest())
    assert [(i.workflow_id, i.run_id, i.status) for i in listed.executions] == [("wf-1", run_id,
                                                                                 WorkflowStatus.RUNNING)]
    assert listed.executions[0].search_attributes == {"customer": "c1"}
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("wf-1"), reason="stop"))
    await env.history.wait_transfer_idle()
    listed = await env.visibility.list(ListWorkflowsRequest(query="ExecutionStatus = 'Terminated'"))
    assert [i.workflow_id for i in listed.executions] == ["wf-1"]
    assert listed.executions[0].close_time_ms == env.clock.now


async def test_terminate_records_reason_and_closes(env: Env) -> None:
    await env.start("wf-1")
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("wf-1"), reason="bad order",
                                                                  identity="ops"))
    assert (await env.types("wf-1"))[-1] == E.WorkflowExecutionTerminated
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=0))
    assert res.status == WorkflowStatus.TERMINATED and res.failure is not None
    assert res.failure.message == "bad order"
    with pytest.raises(NotFound, match="already closed"):
        await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("wf-1")))
    # the dispatched workflow task is now stale
    task = await env.wft_task("wf-1")
    with pytest.raises(NotFound, match="closed"):
        await env.history.record_workflow_task_started(task, "r", "w")


async def test_start_request_id_dedupe_returns_same_run(env: Env) -> None:
    run_id = await env.start("wf-1", request_id="req-A")
    again = await env.history.start_workflow(StartWorkflowRequest("wf-1", "app:order", "q", request_id="req-A"))
    assert again.run_id == run_id and again.started is False
    assert await env.types("wf-1") == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled]


async def test_id_conflict_policies(env: Env) -> None:
    run1 = await env.start("wf-1")
    with pytest.raises(AlreadyStarted, match="already running") as ei:
        await env.start("wf-1")
    assert ei.value.run_id == run1
    same = await env.history.start_workflow(StartWorkflowRequest("wf-1", "app:order", "q",
                                                                 id_conflict_policy=IdConflictPolicy.USE_EXISTING))
    assert (same.run_id, same.started) == (run1, False)
    new = await env.history.start_workflow(StartWorkflowRequest(
        "wf-1", "app:order", "q", id_conflict_policy=IdConflictPolicy.TERMINATE_EXISTING))
    assert new.started and new.run_id != run1
    assert (await env.types("wf-1", run1))[-1] == E.WorkflowExecutionTerminated
    d_old = await env.history.describe_workflow(ExecutionRef("wf-1", run1))
    assert d_old.info.status == WorkflowStatus.TERMINATED
    assert d_old.failure is not None and "terminate_existing" in d_old.failure.message
    d_new = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d_new.info.run_id == new.run_id and d_new.info.status == WorkflowStatus.RUNNING


async def test_id_reuse_policies(env: Env) -> None:
    async def finish(wf: str, result_cmd: object) -> None:
        wt = await env.poll_wft(wf)
        await env.complete(wt, result_cmd)  # type: ignore[arg-type]

    await env.start("ok")
    await finish("ok", complete_wf())
    with pytest.raises(AlreadyStarted, match="reject_duplicate"):
        await env.start("ok", id_reuse_policy=IdReusePolicy.REJECT_DUPLICATE)
    with pytest.raises(AlreadyStarted, match="allow_duplicate_failed_only"):
        await env.start("ok", id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY)
    assert await env.start("ok") != ""  # allow_duplicate (default)

    await env.start("bad")
    await finish("bad", cmd(CommandType.FailWorkflowExecution, failure={"message": "boom", "kind": "Invalid"}))
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("bad"), timeout_ms=0))
    assert res.status == WorkflowStatus.FAILED and res.failure and res.failure.message == "boom"
    assert await env.start("bad", id_reuse_policy=IdReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY) != ""


async def test_start_validation_errors_are_clear(env: Env) -> None:
    with pytest.raises(InvalidArgument, match="workflow_id must not be empty"):
        await env.start("")
    with pytest.raises(InvalidArgument, match="input must be a list"):
        await env.history.start_workflow(StartWorkflowRequest("w", "t", "q", input={"a": 1}))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="execution_timeout_ms"):
        await env.start("w", execution_timeout_ms=-5)
    with pytest.raises(InvalidArgument, match="unknown id_reuse_policy"):
        await env.start("w", id_reuse_policy="nope")
    with pytest.raises(InvalidArgument, match="cannot be encoded as JSON"):
        await env.start("w", input=[object()])


async def test_unknown_workflow_is_not_found(env: Env) -> None:
    with pytest.raises(NotFound, match="workflow 'nope' not found"):
        await env.history.describe_workflow(ExecutionRef("nope"))
    with pytest.raises(NotFound, match="run 'r-x' of workflow"):
        await env.history.describe_workflow(ExecutionRef("nope", "r-x"))


async def test_workflow_execution_timeout_fires(env: Env) -> None:
    await env.start("wf-1", execution_timeout_ms=60_000)
    assert await env.fire(59_999) == 0
    await env.fire(1)
    assert (await env.types("wf-1"))[-1] == E.WorkflowExecutionTimedOut
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=0))
    assert res.status == WorkflowStatus.TIMED_OUT and res.failure and res.failure.kind == "Timeout"


async def test_user_timer_fires_and_cancel(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, timer("1", 5_000), timer("2", 10_000))
    await env.fire(5_000)
    wt2 = await env.poll_wft("wf-1", 8)
    assert wt2.history[0].event_id == 4  # sticky: after the worker's last task
    assert [(e.event_type, e.attrs) for e in wt2.history[3:5]] == [
        (E.TimerFired, {"timer_id": "1", "started_event_id": 5}), (E.WorkflowTaskScheduled, wt2.history[4].attrs)]
    await env.complete(wt2, cmd(CommandType.CancelTimer, timer_id="2"))
    assert (await env.types("wf-1"))[-2:] == [E.WorkflowTaskCompleted, E.TimerCanceled]
    await env.fire(10_000)  # the canceled timer's task is stale and dropped
    assert (await env.types("wf-1"))[-1] == E.TimerCanceled
    assert (await env.history.describe_workflow(ExecutionRef("wf-1"))).pending_timers == 0
