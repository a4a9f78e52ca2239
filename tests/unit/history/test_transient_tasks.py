"""Workflow-task retries do not grow the history (docs/protocol.md, "Failed and timed-out tasks"):
only the first failure of a run of consecutive failures is written; later attempts are transient
(their WorkflowTaskScheduled/Started exist in mutable state and at the end of the history the
worker gets) and are written only when such an attempt completes."""

from __future__ import annotations

from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    RespondWorkflowTaskFailedRequest,
    SignalWorkflowRequest,
    WorkflowTask,
)
from legato.errors import Failure
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.unit.history.conftest import Env, close_env, complete_wf, make_config, make_env, timer

RETRY_MS = 1_000  # history.workflow_task_retry_initial_ms (default)


async def _fail(env: Env, wt: WorkflowTask, message: str = "boom") -> None:
    await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(
        wt.task_token, "WORKFLOW_ERROR", Failure(message, source="wf.lua:7"), "w1"))


async def _history(env: Env, wf: str = "wf-1") -> list[HistoryEvent]:
    return (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef(wf)))).events


async def _next_attempt(env: Env, attempt: int) -> WorkflowTask:
    """Let the backoff before `attempt` pass and start that attempt."""
    await env.fire(RETRY_MS * 2 ** (attempt - 2))
    task = await env.matching.wait_for(lambda t: t.workflow_id == "wf-1" and t.attempt == attempt)
    return await env.history.record_workflow_task_started(task, f"req-{next(env.req_ids)}", "worker-1")


async def test_only_the_first_failure_is_written_and_the_worker_sees_the_usual_layout(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await _fail(env, wt, "first")
    written = [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled, E.WorkflowTaskStarted, E.WorkflowTaskFailed]
    assert [e.event_type for e in await _history(env)] == written
    for attempt in range(2, 8):
        wt = await _next_attempt(env, attempt)
        assert wt.attempt == attempt
        # the worker's history: the written events, then this attempt's Scheduled/Started
        assert [e.event_type for e in wt.history] == [*written, E.WorkflowTaskScheduled, E.WorkflowTaskStarted]
        assert [e.event_id for e in wt.history[-2:]] == [5, 6] and wt.started_event_id == 6
        assert wt.history[-2].attrs["attempt"] == attempt
        assert wt.history[-1].attrs["scheduled_event_id"] == 5
        await _fail(env, wt, f"failure {attempt}")
        assert [e.event_type for e in await _history(env)] == written  # nothing more written
        d = await env.history.describe_workflow(ExecutionRef("wf-1"))
        assert d.last_workflow_task_failure and d.last_workflow_task_failure.message == f"failure {attempt}"
        assert d.pending_workflow_task and d.pending_workflow_task.attempt == attempt + 1
        assert d.pending_workflow_task.state == "BACKOFF" and d.info.history_length == 4


async def test_a_completed_transient_attempt_is_written_as_the_worker_saw_it(env: Env) -> None:
    await env.start("wf-1")
    await _fail(env, await env.poll_wft("wf-1"))
    await _fail(env, await _next_attempt(env, 2))
    env.clock.advance(123)
    wt = await _next_attempt(env, 3)
    seen = wt.history[-2:]
    await env.complete(wt, timer("1", 5_000))
    hist = await _history(env)
    assert [e.event_type for e in hist[4:]] == [E.WorkflowTaskScheduled, E.WorkflowTaskStarted,
                                                E.WorkflowTaskCompleted, E.TimerStarted]
    # same ids, attributes and timestamps (time.now() in the workflow is the Started timestamp)
    assert [e.to_dict() for e in hist[4:6]] == [e.to_dict() for e in seen]
    assert hist[6].attrs["scheduled_event_id"] == 5 and hist[6].attrs["started_event_id"] == 6
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.last_workflow_task_failure is None and d.pending_workflow_task is None
    # a new failure later starts a new run of failures: written again, attempt 1
    await env.fire(5_000)
    wt = await env.poll_wft("wf-1")
    assert wt.attempt == 1
    await _fail(env, wt)
    assert (await _history(env))[-1].event_type == E.WorkflowTaskFailed


async def test_events_written_during_the_backoff_come_before_the_transient_events(env: Env) -> None:
    await env.start("wf-1")
    await _fail(env, await env.poll_wft("wf-1"))
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "during-backoff"))
    await env.fire(RETRY_MS)  # attempt 2 scheduled: dispatched as event 6
    task = await env.matching.wait_for(lambda t: t.workflow_id == "wf-1" and t.attempt == 2)
    assert task.scheduled_event_id == 6
    # a signal between scheduling and starting is written too: the transient events move after it
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "before-start"))
    wt = await env.history.record_workflow_task_started(task, "r-2", "w1")
    assert [(e.event_id, e.event_type) for e in wt.history[4:]] == [
        (5, E.WorkflowExecutionSignaled), (6, E.WorkflowExecutionSignaled), (7, E.WorkflowTaskScheduled),
        (8, E.WorkflowTaskStarted)]
    again = await env.history.record_workflow_task_started(task, "r-2", "w1")  # the same poll again
    assert again.task_token == wt.task_token and [e.to_dict() for e in again.history] == \
        [e.to_dict() for e in wt.history]
    # a signal while the attempt runs is buffered; the attempt fails: only the signal is written
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "while-running"))
    await _fail(env, wt)
    assert [e.event_type for e in (await _history(env))[4:]] == [E.WorkflowExecutionSignaled] * 3
    wt3 = await _next_attempt(env, 3)
    assert [(e.event_id, e.event_type) for e in wt3.history[6:]] == [
        (7, E.WorkflowExecutionSignaled), (8, E.WorkflowTaskScheduled), (9, E.WorkflowTaskStarted)]
    await env.complete(wt3, complete_wf())
    assert [e.event_type for e in (await _history(env))[7:]] == [
        E.WorkflowTaskScheduled, E.WorkflowTaskStarted, E.WorkflowTaskCompleted, E.WorkflowExecutionCompleted]


async def test_timed_out_transient_attempts_write_nothing(env: Env) -> None:
    await env.start("wf-1", task_timeout_ms=2_000)
    await env.poll_wft("wf-1")
    await env.fire(2_000)  # attempt 1 timed out: written
    assert (await _history(env))[-1].event_type == E.WorkflowTaskTimedOut
    await _next_attempt(env, 2)
    await env.fire(2_000)  # attempt 2 timed out: not written
    assert len(await _history(env)) == 4
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.last_workflow_task_failure and "attempt 2" in d.last_workflow_task_failure.message
    assert d.pending_workflow_task and d.pending_workflow_task.attempt == 3


async def test_a_stale_timeout_of_an_earlier_attempt_does_not_end_the_next_one(env: Env) -> None:
    await env.start("wf-1", task_timeout_ms=60_000)
    await _fail(env, await env.poll_wft("wf-1"))
    wt2 = await _next_attempt(env, 2)  # started at T+1s, its timeout timer is due at T+61s
    await _fail(env, wt2)
    wt3 = await _next_attempt(env, 3)  # the same event ids as attempt 2
    assert wt3.started_event_id == wt2.started_event_id
    env.clock.advance(60_000 - 2 * RETRY_MS + 1)  # attempt 2's timer is due, attempt 3's is not
    await env.history.fire_due_timers()
    await env.complete(wt3, complete_wf())
    assert (await _history(env))[-1].event_type == E.WorkflowExecutionCompleted


async def test_unhandled_command_on_a_transient_attempt_writes_it(env: Env) -> None:
    await env.start("wf-1")
    await _fail(env, await env.poll_wft("wf-1"))
    wt = await _next_attempt(env, 2)
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "late"))
    await env.complete(wt, complete_wf())
    hist = await _history(env)
    assert [e.event_type for e in hist[4:]] == [E.WorkflowTaskScheduled, E.WorkflowTaskStarted,
                                                E.WorkflowTaskFailed, E.WorkflowExecutionSignaled,
                                                E.WorkflowTaskScheduled]
    assert hist[6].attrs["cause"] == "UNHANDLED_COMMAND" and hist[6].attrs["started_event_id"] == 6
    assert hist[8].attrs["attempt"] == 1


async def test_a_stuck_workflow_stays_under_the_history_limit() -> None:
    env = await make_env(None, make_config(workflow_task_retry_initial_ms=0, limits={"max_history_events": 10}))
    try:
        await env.start("wf-1")
        for attempt in range(1, 60):
            task = await env.matching.wait_for(lambda t, a=attempt: t.workflow_id == "wf-1" and t.attempt == a)
            wt = await env.history.record_workflow_task_started(task, f"r{attempt}", "w1")
            await _fail(env, wt)
        d = await env.history.describe_workflow(ExecutionRef("wf-1"))
        assert d.info.status.value == "RUNNING" and d.info.history_length == 4
        assert d.pending_workflow_task and d.pending_workflow_task.attempt == 60
    finally:
        await close_env(env)


async def test_history_limit_on_a_transient_attempt_writes_it_before_terminating() -> None:
    env = await make_env(None, make_config(limits={"max_history_events": 8}))
    try:
        await env.start("wf-1")
        await _fail(env, await env.poll_wft("wf-1"))
        wt = await _next_attempt(env, 2)
        await env.complete(wt, timer("1"), timer("2"), timer("3"))
        hist = await _history(env)
        assert [e.event_type for e in hist[4:]] == [E.WorkflowTaskScheduled, E.WorkflowTaskStarted,
                                                    E.WorkflowTaskFailed, E.WorkflowExecutionTerminated]
        assert hist[6].attrs["cause"] == "LIMIT_EXCEEDED"
    finally:
        await close_env(env)


async def test_an_activity_completion_does_not_take_a_transient_task_for_its_worker(env: Env) -> None:
    from legato.api import RespondActivityTaskCompletedRequest
    from tests.unit.history.conftest import activity
    await env.start("wf-1")
    await env.complete(await env.poll_wft("wf-1"), activity("1"))
    at = await env.poll_act("wf-1", 5)
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
    await _fail(env, await env.poll_wft("wf-1", 7))
    await env.fire(RETRY_MS)  # attempt 2 (transient) is scheduled, dispatched as the history's next id
    resp = await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(
        at.task_token, "paid", "w1", return_workflow_task=True))
    assert resp.workflow_task is None  # it is already on its way through matching
    task = await env.matching.wait_for(lambda t: t.workflow_id == "wf-1" and t.attempt == 2)
    wt = await env.history.record_workflow_task_started(task, "r2", "w1")
    assert [e.event_type for e in wt.history[-4:]] == [E.ActivityTaskStarted, E.ActivityTaskCompleted,
                                                       E.WorkflowTaskScheduled, E.WorkflowTaskStarted]
    await env.complete(wt, complete_wf())
    assert (await _history(env))[-1].event_type == E.WorkflowExecutionCompleted
