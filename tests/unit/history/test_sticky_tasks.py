"""Sticky workflow tasks: the worker that completed a run's last workflow task has the run cached,
so its next task carries only the events after that task; any other worker, and the same one after
a task failed or timed out, gets the whole history. Each WorkflowTaskStarted says how big the
history before it was (workflow.info().history_size), so a worker never needs the old events to
know it."""

from __future__ import annotations

from legato.api import (
    ExecutionRef,
    RespondActivityTaskCompletedRequest,
    RespondWorkflowTaskFailedRequest,
    SignalWorkflowRequest,
)
from legato.errors import Failure
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.unit.history.conftest import Env, activity, timer


def _size(events: list[HistoryEvent]) -> int:
    return sum(len(e.encode().encode()) for e in events)


async def _second_task(env: Env, identity: str) -> tuple[list[HistoryEvent], list[HistoryEvent]]:
    """A timer fires after the first task: (the second task's history, the whole history)."""
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, timer("1", 5_000))
    await env.fire(5_000)  # 6 TimerFired, 7 WorkflowTaskScheduled
    wt2 = await env.poll_wft("wf-1", 7, identity=identity)
    assert wt2.previous_started_event_id == 3 and wt2.started_event_id == 8
    return wt2.history, await env.history_of("wf-1")


async def test_the_worker_that_completed_the_last_task_gets_only_the_new_events(env: Env) -> None:
    history, whole = await _second_task(env, "worker-1")
    assert [e.event_id for e in history] == [4, 5, 6, 7, 8]
    assert history[0].event_type is E.WorkflowTaskCompleted
    assert [e.encode() for e in history] == [e.encode() for e in whole[3:8]]
    assert history[-1].attrs["history_size_bytes"] == _size(whole[:7])


async def test_another_worker_gets_the_whole_history(env: Env) -> None:
    history, whole = await _second_task(env, "worker-2")
    assert [e.event_id for e in history] == list(range(1, 9))
    assert history[-1].attrs["history_size_bytes"] == _size(whole[:7])


async def test_a_failed_task_makes_the_next_one_carry_the_whole_history(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, timer("1", 5_000))
    await env.fire(5_000)
    wt2 = await env.poll_wft("wf-1", 7)
    assert wt2.history[0].event_id == 4
    await env.history.respond_workflow_task_failed(RespondWorkflowTaskFailedRequest(
        wt2.task_token, "WORKFLOW_ERROR", Failure("boom"), "worker-1"))
    await env.fire(env.config.history.workflow_task_retry_initial_ms)
    wt3 = await env.poll_wft("wf-1")
    assert wt3.attempt == 2
    assert wt3.history[0].event_id == 1  # the worker dropped the run when its task failed
    # the retry's events are transient (not written); its WorkflowTaskStarted still says the size
    assert wt3.history[-1].event_type is E.WorkflowTaskStarted
    assert wt3.history[-1].attrs["history_size_bytes"] == _size(await env.history_of("wf-1"))


async def test_a_timed_out_task_makes_the_next_one_carry_the_whole_history(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt)
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
    wt2 = await env.poll_wft("wf-1")
    assert wt2.history[0].event_id == 4
    await env.fire(env.config.history.workflow_task_timeout_ms)
    await env.fire(env.config.history.workflow_task_retry_initial_ms)
    wt3 = await env.poll_wft("wf-1")
    assert wt3.history[0].event_id == 1


async def test_the_task_an_activity_completion_hands_over_is_sticky_too(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1"))
    at = await env.poll_act("wf-1", 5)
    done = await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(
        at.task_token, 7, "worker-1", return_workflow_task=True))
    wt2 = done.workflow_task
    assert wt2 is not None and wt2.previous_started_event_id == 3
    assert [e.event_id for e in wt2.history] == [4, 5, 6, 7, 8, 9]
