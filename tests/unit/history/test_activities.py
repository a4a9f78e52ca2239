"""Activities: retries with durable backoff, final failure, timeouts, heartbeats, stale attempts."""

from __future__ import annotations

import pytest

from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    RecordActivityHeartbeatRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
    RespondWorkflowTaskCompletedRequest,
)
from legato.errors import FailedPrecondition, Failure, InvalidArgument, NotFound
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.unit.history.conftest import Env, activity, close_env, make_config, make_env


async def _with_activity(env: Env, **kw: object) -> int:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, activity("1", "app:charge", **kw))
    return 5  # ActivityTaskScheduled event id


async def _history(env: Env) -> list[HistoryEvent]:
    return (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events


async def test_retry_with_backoff_then_final_failure(env: Env) -> None:
    policy = {"initial_interval_ms": 1000, "backoff_coefficient": 2.0, "maximum_attempts": 3}
    sched = await _with_activity(env, retry_policy=policy)
    for attempt, backoff in ((1, 1000), (2, 2000)):
        at = await env.poll_act("wf-1", sched, attempt)
        assert at.attempt == attempt
        await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(
            at.task_token, Failure(f"card declined #{attempt}", kind="Unavailable"), "aw"))
        # retries do not touch the history
        assert (await env.types("wf-1"))[-1] == E.ActivityTaskScheduled
        d = await env.history.describe_workflow(ExecutionRef("wf-1"))
        assert [(a.state, a.attempt) for a in d.pending_activities] == [("BACKOFF", attempt + 1)]
        assert d.pending_activities[0].last_failure and d.pending_activities[0].last_failure.message.endswith(
            f"#{attempt}")
        assert await env.fire(backoff - 1) == 0
        assert [t.attempt for t in env.matching.find(lambda t: t.scheduled_event_id == sched)] == \
            list(range(1, attempt + 1))
        await env.fire(1)
        await env.act_task("wf-1", sched, attempt + 1)
    at = await env.poll_act("wf-1", sched, 3)
    await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(
        at.task_token, Failure("card declined #3", kind="Unavailable"), "aw"))
    hist = await _history(env)
    assert [e.event_type for e in hist[5:]] == [E.ActivityTaskStarted, E.ActivityTaskFailed, E.WorkflowTaskScheduled]
    started, failed = hist[5], hist[6]
    assert started.attrs["attempt"] == 3 and started.attrs["last_failure"]["message"] == "card declined #2"
    assert failed.attrs["started_event_id"] == started.event_id
    assert failed.attrs["failure"]["message"] == "card declined #3" and failed.attrs["identity"] == "aw"
    assert (await env.history.describe_workflow(ExecutionRef("wf-1"))).pending_activities == []


async def test_non_retryable_failure_is_final(env: Env) -> None:
    sched = await _with_activity(env, retry_policy={"non_retryable_error_types": ["INVALID"]})
    at = await env.poll_act("wf-1", sched)
    await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(
        at.task_token, Failure("bad input", kind="Invalid")))
    assert (await env.types("wf-1"))[-3:] == [E.ActivityTaskStarted, E.ActivityTaskFailed, E.WorkflowTaskScheduled]
    await env.start("wf-2")
    wt = await env.poll_wft("wf-2")
    await env.complete(wt, activity("1"))
    at = await env.poll_act("wf-2", 5)
    await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(
        at.task_token, Failure("nope", retryable=False)))
    assert (await env.types("wf-2"))[-2] == E.ActivityTaskFailed


async def test_schedule_to_close_deadline_stops_retries(env: Env) -> None:
    sched = await _with_activity(env, schedule_to_close_timeout_ms=1500,
                                 retry_policy={"initial_interval_ms": 1000})
    at = await env.poll_act("wf-1", sched)
    env.clock.advance(600)
    # backoff (1000) would end after the schedule-to-close deadline (1500): no retry
    await env.history.respond_activity_task_failed(RespondActivityTaskFailedRequest(at.task_token, Failure("x")))
    assert (await env.types("wf-1"))[-2] == E.ActivityTaskFailed


async def test_start_to_close_timeout_retries_then_succeeds(env: Env) -> None:
    sched = await _with_activity(env, start_to_close_timeout_ms=10_000, retry_policy={"initial_interval_ms": 500})
    at1 = await env.poll_act("wf-1", sched)
    await env.fire(10_000)  # attempt 1 timed out -> backoff
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert [(a.state, a.attempt) for a in d.pending_activities] == [("BACKOFF", 2)]
    assert d.pending_activities[0].last_failure and d.pending_activities[0].last_failure.kind == "Timeout"
    with pytest.raises(NotFound, match="stale attempt"):  # the timed-out attempt reports late
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at1.task_token, 1))
    await env.fire(500)
    at2 = await env.poll_act("wf-1", sched, 2)
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at2.task_token, "ok"))
    hist = await _history(env)
    assert [e.event_type for e in hist[5:7]] == [E.ActivityTaskStarted, E.ActivityTaskCompleted]
    assert hist[5].attrs["attempt"] == 2 and hist[5].attrs["last_failure"]["kind"] == "Timeout"
    with pytest.raises(NotFound, match="no longer pending"):
        await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at2.task_token, "x"))


async def test_schedule_to_start_timeout_is_final(env: Env) -> None:
    await _with_activity(env, schedule_to_start_timeout_ms=3_000)
    await env.fire(3_000)
    hist = await _history(env)
    assert [e.event_type for e in hist[5:]] == [E.ActivityTaskStarted, E.ActivityTaskTimedOut,
                                                E.WorkflowTaskScheduled]
    assert hist[6].attrs["timeout_type"] == "SCHEDULE_TO_START" and hist[6].attrs["failure"]["kind"] == "Timeout"


async def test_schedule_to_close_timeout_fires_while_started(env: Env) -> None:
    sched = await _with_activity(env, schedule_to_close_timeout_ms=20_000, start_to_close_timeout_ms=60_000)
    hist = await _history(env)
    assert hist[4].attrs["start_to_close_timeout_ms"] == 20_000  # capped by schedule-to-close
    await env.poll_act("wf-1", sched)
    await env.fire(20_000)
    hist = await _history(env)
    assert hist[6].event_type == E.ActivityTaskTimedOut and hist[6].attrs["timeout_type"] == "SCHEDULE_TO_CLOSE"


async def test_heartbeat_keeps_details_and_extends_the_deadline(env: Env) -> None:
    sched = await _with_activity(env, heartbeat_timeout_ms=5_000, start_to_close_timeout_ms=60_000,
                                 retry_policy={"initial_interval_ms": 100, "maximum_attempts": 2})
    at = await env.poll_act("wf-1", sched)
    env.clock.advance(4_000)
    resp = await env.history.record_activity_heartbeat(RecordActivityHeartbeatRequest(at.task_token, {"page": 3}))
    assert resp.cancel_requested is False
    await env.fire(1_000)  # the first heartbeat deadline passed, but a heartbeat came in: re-armed
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert [(a.state, a.attempt) for a in d.pending_activities] == [("STARTED", 1)]
    await env.fire(4_000)  # 5s since the last heartbeat: timed out, retried after 100 ms
    await env.fire(100)
    at2 = await env.poll_act("wf-1", sched, 2)
    assert at2.heartbeat_details == {"page": 3}  # kept for the next attempt
    with pytest.raises(NotFound, match="stale attempt"):
        await env.history.record_activity_heartbeat(RecordActivityHeartbeatRequest(at.task_token, 1))
    await env.fire(5_000)  # attempt 2 (last) times out: final
    hist = await _history(env)
    assert hist[6].event_type == E.ActivityTaskTimedOut and hist[6].attrs["timeout_type"] == "HEARTBEAT"


async def test_record_activity_started_rejects_duplicates_and_stale(env: Env) -> None:
    sched = await _with_activity(env)
    task = await env.act_task("wf-1", sched)
    a1 = await env.history.record_activity_task_started(task, "poll-1", "w1")
    a2 = await env.history.record_activity_task_started(task, "poll-1", "w1")  # same poll again: same task
    assert a1.task_token == a2.task_token and a1.started_time_ms == a2.started_time_ms
    with pytest.raises(FailedPrecondition, match="already started"):
        await env.history.record_activity_task_started(task, "poll-2", "w2")
    await env.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(a1.task_token, 1))
    with pytest.raises(NotFound, match="no longer pending"):
        await env.history.record_activity_task_started(task, "poll-3", "w3")
    with pytest.raises(InvalidArgument, match="expected a workflow task token"):
        await env.history.respond_workflow_task_completed(RespondWorkflowTaskCompletedRequest(a1.task_token, []))


async def test_result_too_large_fails_the_activity() -> None:
    small = await make_env(None, make_config(limits={"max_payload_bytes": 300}))
    try:
        await small.start("wf-1")
        wt = await small.poll_wft("wf-1")
        await small.complete(wt, activity("1"))
        at = await small.poll_act("wf-1", 5)
        await small.history.respond_activity_task_completed(RespondActivityTaskCompletedRequest(at.task_token,
                                                                                                "x" * 500))
        hist = (await small.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
        assert hist[6].event_type == E.ActivityTaskFailed
        assert hist[6].attrs["failure"]["kind"] == "LimitExceeded" and "limit is 300" in \
            hist[6].attrs["failure"]["message"]
    finally:
        await close_env(small)
