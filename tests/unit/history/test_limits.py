"""Every limit: a clear error when crossed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import CommandType
from legato.errors import InvalidArgument, ResourceExhausted
from legato.events import EventType as E
from tests.unit.history.conftest import Env, activity, close_env, cmd, make_config, make_env, timer


@pytest.fixture
async def limited() -> AsyncIterator[Env]:
    e = await make_env(None, make_config(limits={
        "max_payload_bytes": 200, "max_commands_per_task": 3, "max_pending_activities": 2, "max_pending_timers": 2,
        "max_buffered_signals": 2, "max_history_events": 30, "max_history_bytes": 1_000_000}))
    try:
        yield e
    finally:
        await close_env(e)


async def _fails_with(env: Env, commands: list[Any], match: str) -> None:
    wt = await env.poll_wft("wf-1")
    with pytest.raises(ResourceExhausted, match=match):
        await env.complete(wt, *commands)
    last = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events[-1]
    assert last.event_type == E.WorkflowTaskFailed and last.attrs["cause"] == "LIMIT_EXCEEDED"
    assert last.attrs["failure"]["kind"] == "LimitExceeded"
    d = await env.history.describe_workflow(ExecutionRef("wf-1"))
    assert d.last_workflow_task_failure and "limit" in d.last_workflow_task_failure.message
    env.clock.advance(10 * 60_000)  # past any retry backoff
    await env.history.fire_due_timers()


async def test_max_commands_per_task(limited: Env) -> None:
    await limited.start("wf-1")
    await _fails_with(limited, [timer("1"), timer("2"), timer("3"), timer("4")],
                      r"returned 4 commands; the limit is 3 \(limits.max_commands_per_task\)")


async def test_max_pending_activities_and_timers(limited: Env) -> None:
    await limited.start("wf-1")
    await _fails_with(limited, [activity("1"), activity("2"), activity("3")],
                      r"3 pending activities; the limit is 2 \(limits.max_pending_activities\)")
    await _fails_with(limited, [timer("1"), timer("2"), timer("3")],
                      r"3 pending timers; the limit is 2 \(limits.max_pending_timers\)")


async def test_max_payload_bytes_in_commands_and_requests(limited: Env) -> None:
    await limited.start("wf-1")
    await _fails_with(limited, [activity("1", input=["x" * 300])],
                      r"command 1 of 1 \(ScheduleActivityTask\) activity 'app:charge': input is \d+ bytes; the limit "
                      r"is 200 bytes")
    await _fails_with(limited, [cmd(CommandType.CompleteWorkflowExecution, result="y" * 300)],
                      r"result is .* bytes; the limit is 200")
    with pytest.raises(InvalidArgument, match=r"input of workflow 'big' is .* bytes; the limit is 200"):
        await limited.history.start_workflow(StartWorkflowRequest("big", "t", "q", input=["z" * 300]))
    with pytest.raises(InvalidArgument, match=r"signal 's': input is .* bytes; the limit is 200"):
        await limited.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s", "z" * 300))


async def test_max_buffered_signals(limited: Env) -> None:
    await limited.start("wf-1")
    await limited.poll_wft("wf-1")  # a task is running: signals are buffered
    for i in range(2):
        await limited.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), f"s{i}"))
    with pytest.raises(ResourceExhausted, match=r"2 signals are already waiting .* \(limits.max_buffered_signals\)"):
        await limited.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s3"))


async def test_history_length_limit_terminates_the_workflow() -> None:
    env = await make_env(None, make_config(limits={"max_history_events": 10}))
    try:
        await env.start("wf-1")
        wt = await env.poll_wft("wf-1")
        await env.complete(wt, cmd(CommandType.RecordMarker, marker_name="m", details=1))  # 5 events: fine
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "next"))
        wt = await env.poll_wft("wf-1", 7)
        await env.complete(wt, *[cmd(CommandType.RecordMarker, marker_name="m", details=i) for i in range(3)])
        res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=0))
        assert res.status == WorkflowStatus.TERMINATED
        assert res.failure and "history size limit exceeded" in res.failure.message
        assert "would have 12 events; the limit is 10 (limits.max_history_events)" in res.failure.message
        hist = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events
        assert [e.event_type for e in hist[8:]] == [E.WorkflowTaskFailed, E.WorkflowExecutionTerminated]
        assert hist[8].attrs["cause"] == "LIMIT_EXCEEDED"  # the offending commands were discarded
    finally:
        await close_env(env)


async def test_history_bytes_limit_terminates_the_workflow() -> None:
    env = await make_env(None, make_config(limits={"max_history_bytes": 3_000}))
    try:
        await env.start("wf-1")
        wt = await env.poll_wft("wf-1")
        big = [cmd(CommandType.RecordMarker, marker_name="m", details="d" * 1000) for _ in range(3)]
        await env.complete(wt, *big)
        d = await env.history.describe_workflow(ExecutionRef("wf-1"))
        assert d.info.status == WorkflowStatus.TERMINATED
        assert d.failure and "limits.max_history_bytes" in d.failure.message
        with pytest.raises(Exception, match="already closed"):
            await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s"))
    finally:
        await close_env(env)


async def test_signal_refused_when_history_is_full() -> None:
    env = await make_env(None, make_config(limits={"max_history_events": 4}))
    try:
        await env.start("wf-1")
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "a"))
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "b"))
        with pytest.raises(ResourceExhausted, match=r"history has 4 events; the limit is 4"):
            await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "c"))
    finally:
        await close_env(env)
