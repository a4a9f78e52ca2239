"""The workflow-task protocol: buffering, UNHANDLED_COMMAND, failures and timeouts with backoff,
duplicate/stale record-started and responses, signals and cancel requests."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from legato.api import (
    CancelWorkflowRequest,
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    RespondActivityTaskCompletedRequest,
    RespondWorkflowTaskFailedRequest,
    SignalWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import CommandType
from legato.errors import FailedPrecondition, Failure, InvalidArgument, NotFound
from legato.events import EventType as E
from tests.unit.history.conftest import Env, activity, cmd, complete_wf, timer


def _signal(name: str = "approve", request_id: str = "", wf: str = "wf-1", **kw: object) -> SignalWorkflowRequest:
    return SignalWorkflowRequest(ExecutionRef(wf), name, kw.pop("input", {"ok": True}), request_id=request_id,
                                 **kw)  # type: ignore[arg-type]


async def test_signal_schedules_a_workflow_task(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt)  # the workflow waits
    await env.history.signal_workflow(_signal(sender="wf-parent", identity="cli"))
    # a second signal while a task is scheduled (not started) is written and schedules nothing more
    await env.history.signal_workflow(_signal("again"))
    assert (await env.events("wf-1"))[4:] == [(5, E.WorkflowExecutionSignaled), (6, E.WorkflowTaskScheduled),
                                              (7, E.WorkflowExecutionSignaled)]
    wt2 = await env.poll_wft("wf-1", 6, identity="worker-2")  # another worker: the whole history
    sig = wt2.history[4]
    assert sig.attrs == {"signal_name": "approve", "input": {"ok": True}, "sender": "wf-parent", "identity": "cli",
                         "request_id": ""}
    assert wt2.started_event_id == 8 and wt2.history[-1].event_type == E.WorkflowTaskStarted


async def test_signals_are_buffered_while_a_task_runs_and_flushed_after(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")  # started: events 1..3
    await env.history.signal_workflow(_signal("s1"))
    await env.history.signal_workflow(_signal("s2"))
    assert await env.types("wf-1") == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled, E.WorkflowTaskStarted]
    await env.complete(wt, timer("1", 1000))
    assert await env.events("wf-1") == [
        (1, E.WorkflowExecutionStarted), (2, E.WorkflowTaskScheduled), (3, E.WorkflowTaskStarted),
        (4, E.WorkflowTaskCompleted), (5, E.TimerStarted),  # command events contiguous after Completed
        (6, E.WorkflowExecutionSignaled), (7, E.WorkflowExecutionSignaled), (8, E.WorkflowTaskScheduled)]
    wt2 = await env.poll_wft("wf-1", 8, identity="worker-2")
    assert [e.attrs["signal_name"] for e in wt2.history[5:7]] == ["s1", "s2"]


async def test_activity_result_and_timer_buffered_during_task(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1"), timer("1", 1000))
    at = await env.poll_act("wf-1", 5)
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, 42))
    wt2 = await env.poll_wft("wf-1", 9)  # events: 7 started, 8 completed, 9 scheduled, 10 started
    await env.fire(1000)  # fires while wt2 runs: buffered
    assert (await env.types("wf-1"))[-1] == E.WorkflowTaskStarted
    await env.complete(wt2)
    hist = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
    assert [e.event_type for e in hist[10:]] == [E.WorkflowTaskCompleted, E.TimerFired, E.WorkflowTaskScheduled]


async def test_cancel_timer_that_fired_during_the_task_cancels_the_buffered_fire(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, timer("1", 1000))
    await env.history.signal_workflow(_signal())
    wt2 = await env.poll_wft("wf-1", 7)
    await env.fire(1000)  # buffered TimerFired
    await env.complete(wt2, cmd(CommandType.CancelTimer, timer_id="1"))
    assert (await env.types("wf-1"))[-2:] == [E.WorkflowTaskCompleted, E.TimerCanceled]


async def test_close_with_buffered_signal_is_unhandled_command(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.history.signal_workflow(_signal("late"))
    await env.complete(wt, complete_wf("too early"))
    hist = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
    assert [e.event_type for e in hist] == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled,
                                            E.WorkflowTaskStarted, E.WorkflowTaskFailed,
                                            E.WorkflowExecutionSignaled, E.WorkflowTaskScheduled]
    assert hist[3].attrs["cause"] == "UNHANDLED_COMMAND"
    assert hist[5].attrs["attempt"] == 1  # scheduled at once, no backoff
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.info.status == WorkflowStatus.RUNNING and d.last_workflow_task_failure is None
    wt2 = await env.poll_wft("wf-1", 6)
    await env.complete(wt2, complete_wf("done"))
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=0))
    assert res.status == WorkflowStatus.COMPLETED and res.result == "done"


async def test_close_with_buffered_activity_result_is_allowed(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1"))
    at = await env.poll_act("wf-1", 5)
    await env.history.signal_workflow(_signal())
    wt2 = await env.poll_wft("wf-1", 7)
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token, 1))
    await env.complete(wt2, complete_wf())
    assert (await env.types("wf-1"))[-1] == E.WorkflowExecutionCompleted


async def test_cancel_request_is_delivered_and_deduped(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("wf-1"), reason="user"))
    await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("wf-1"), reason="again"))
    await env.complete(wt)
    assert (await env.types("wf-1"))[-2:] == [E.WorkflowExecutionCancelRequested, E.WorkflowTaskScheduled]
    wt2 = await env.poll_wft("wf-1", 6)
    await env.complete(wt2, cmd(CommandType.CancelWorkflowExecution, details="bye"))
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=0))
    assert res.status == WorkflowStatus.CANCELED and res.failure and res.failure.kind == "Canceled"
    with pytest.raises(NotFound, match="already closed"):
        await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("wf-1")))


async def test_signal_request_id_dedupe(env: Env) -> None:
    await env.start("wf-1")
    await env.history.signal_workflow(_signal(request_id="sig-1"))
    await env.history.signal_workflow(_signal(request_id="sig-1"))
    await env.history.signal_workflow(_signal(request_id="sig-2"))
    types = await env.types("wf-1")
    assert types.count(E.WorkflowExecutionSignaled) == 2


async def test_signal_errors(env: Env) -> None:
    with pytest.raises(NotFound, match="workflow 'nope' not found"):
        await env.history.signal_workflow(_signal(wf="nope"))
    await env.start("wf-1")
    with pytest.raises(InvalidArgument, match="signal_name"):
        await env.history.signal_workflow(_signal(""))
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, complete_wf())
    with pytest.raises(NotFound, match=r"cannot signal workflow wf-1 .*already closed \(COMPLETED\)"):
        await env.history.signal_workflow(_signal())


async def test_record_started_duplicate_and_stale(env: Env) -> None:
    await env.start("wf-1")
    task = await env.wft_task("wf-1")
    wt1 = await env.history.record_workflow_task_started(task, "poll-1", "w1")
    wt1b = await env.history.record_workflow_task_started(task, "poll-1", "w1")  # idempotent
    assert wt1b.task_token == wt1.task_token and len(wt1b.history) == 3
    assert await env.types("wf-1") == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled, E.WorkflowTaskStarted]
    with pytest.raises(FailedPrecondition, match="already started by another poller"):
        await env.history.record_workflow_task_started(task, "poll-2", "w2")
    await env.complete(wt1)
    with pytest.raises(NotFound, match="stale"):
        await env.history.record_workflow_task_started(task, "poll-3", "w3")
    with pytest.raises(NotFound, match="stale"):  # a second response to the same task
        await env.complete(wt1, complete_wf())
    with pytest.raises(InvalidArgument, match="malformed task token"):
        await env.complete(dataclasses.replace(wt1, task_token=b"!!garbage"))


async def test_failed_task_is_retried_after_backoff_and_described(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.history.signal_workflow(_signal())
    await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(
        wt.task_token, "WORKFLOW_ERROR", Failure("attempt to index a nil value", source="workflow.lua:12"), "w1"))
    assert (await env.types("wf-1"))[-2:] == [E.WorkflowTaskFailed, E.WorkflowExecutionSignaled]
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.last_workflow_task_failure and d.last_workflow_task_failure.source == "workflow.lua:12"
    assert d.pending_workflow_task and d.pending_workflow_task.state == "BACKOFF"
    assert d.pending_workflow_task.attempt == 2
    # a signal during the backoff is written but does not bypass the backoff
    await env.history.signal_workflow(_signal("s2"))
    assert (await env.types("wf-1"))[-1] == E.WorkflowExecutionSignaled
    assert await env.fire(env.config.history.workflow_task_retry_initial_ms - 1) == 0
    await env.fire(1)
    wt2 = await env.poll_wft("wf-1")
    assert wt2.attempt == 2 and wt2.history[-2].attrs["attempt"] == 2
    # the second failure doubles the backoff
    await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(
        wt2.task_token, "NON_DETERMINISTIC", Failure("mismatch at event 5")))
    assert await env.fire(2 * env.config.history.workflow_task_retry_initial_ms - 1) == 0
    await env.fire(1)
    wt3 = await env.poll_wft("wf-1")
    assert wt3.attempt == 3
    await env.complete(wt3)
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.last_workflow_task_failure is None and d.pending_workflow_task is None


async def test_failed_task_rejects_unknown_cause(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    with pytest.raises(InvalidArgument, match="unknown cause 'OOPS'"):
        await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(wt.task_token, "OOPS",
                                                                                        Failure("x")))


async def test_workflow_task_timeout(env: Env) -> None:
    await env.start("wf-1", task_timeout_ms=5_000)
    wt = await env.poll_wft("wf-1")
    await env.fire(5_000)
    hist = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
    assert hist[-1].event_type == E.WorkflowTaskTimedOut and hist[-1].attrs["timeout_type"] == "START_TO_CLOSE"
    with pytest.raises(NotFound, match="stale"):
        await env.complete(wt, complete_wf())
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.last_workflow_task_failure and d.last_workflow_task_failure.kind == "Timeout"
    await env.fire(env.config.history.workflow_task_retry_initial_ms)
    wt2 = await env.poll_wft("wf-1")
    assert wt2.attempt == 2


async def test_result_returns_on_task_failure(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    waiter = asyncio.create_task(env.history.get_workflow_result(
        GetResultRequest(ExecutionRef("wf-1"), timeout_ms=5_000, return_on_task_failure=True)))
    await asyncio.sleep(0)
    assert not waiter.done()
    await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(
        wt.task_token, "WORKFLOW_ERROR", Failure("boom", source="wf.lua:3")))
    res = await asyncio.wait_for(waiter, 5)
    assert res.status == WorkflowStatus.RUNNING and res.task_failure and res.task_failure.message == "boom"


async def test_bad_command_fails_the_task_with_a_clear_message(env: Env) -> None:
    await env.start("wf-1")
    cases = [
        ([cmd(CommandType.StartTimer, timer_id="1")], "start_to_fire_timeout_ms must be a whole number"),
        ([cmd(CommandType.StartTimer, timer_id="1", start_to_fire_timeout_ms=5, extra=1)], "unknown attribute 'extra'"),
        ([complete_wf(), timer()], "must be the last command"),
        ([activity("1"), activity("1")], "activity_id '1' is already used"),
        ([cmd(CommandType.CancelTimer, timer_id="9")], "no pending timer has timer_id '9'"),
        ([activity("1", retry_policy={"backoff_coefficient": 0.5})], "backoff_coefficient must be >= 1"),
        ([cmd(CommandType.FailWorkflowExecution, failure="nope")], "failure must be a failure mapping"),
        ([activity("1", activity_type="")], "activity_type must be a non-empty string"),
        ([activity("1", retry_policy={"non_retryable_error_types": "INVALID"})], "must be a list of error kinds"),
        ([activity("1", retry_policy={"initial_interval": "1s"})], "unknown retry_policy key 'initial_interval'"),
        ([cmd(CommandType.RecordMarker, marker_name="m", details=float("nan"))], "cannot be encoded as JSON"),
        ([cmd("NoSuchCommand")], "unknown command type 'NoSuchCommand'"),  # type: ignore[arg-type]
    ]
    for i, (commands, message) in enumerate(cases):
        wt = await env.poll_wft("wf-1")
        with pytest.raises(InvalidArgument, match=message):
            await env.complete(wt, *commands)
        # only the first failure of the run is written; describe shows every one
        d = await env.history.describe_workflow(ExecutionRef("wf-1"))
        assert d.last_workflow_task_failure is not None
        text = d.last_workflow_task_failure.message
        assert message.split("'")[0] in text and ("command 1 of" in text or "command 2 of" in text)
        assert d.pending_workflow_task and d.pending_workflow_task.attempt == i + 2
        await env.fire(min(2 ** i * 1000, env.config.history.workflow_task_retry_max_ms))
    assert i == len(cases) - 1
    hist = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
    assert [e.event_type for e in hist] == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled,
                                            E.WorkflowTaskStarted, E.WorkflowTaskFailed]
    assert hist[-1].attrs["cause"] == "BAD_COMMAND" and "start_to_fire_timeout_ms" in \
        hist[-1].attrs["failure"]["message"]
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.info.status == WorkflowStatus.RUNNING and d.pending_timers == 0 and d.pending_activities == []
