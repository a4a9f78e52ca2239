"""History's own checks of ranges and depth (what the frontend checks too, and what reaches
history from workflow code): durations beyond 100 years, retry policies out of range, cron
schedules that never fire, payloads nested too deep, and signals that would be buffered past the
history's byte limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from legato.api import ExecutionRef, GetHistoryRequest, SignalWorkflowRequest, StartWorkflowRequest
from legato.commands import CommandType
from legato.durations import MAX_DURATION_MS
from legato.errors import InvalidArgument, ResourceExhausted, ServiceError
from legato.events import EventType as E
from tests.unit.history.conftest import Env, activity, child, close_env, cmd, make_config, make_env, timer

TOO_LONG = MAX_DURATION_MS + 1


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await make_env(None, make_config(limits={"max_payload_depth": 8, "max_history_bytes": 20_000}))
    try:
        yield e
    finally:
        await close_env(e)


async def _task_fails(env: Env, command: Any, cause: str, match: str) -> None:
    wt = await env.poll_wft("wf-1")
    with pytest.raises(ServiceError, match=match):
        await env.complete(wt, command)
    last = (await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))).events[-1]
    assert last.event_type == E.WorkflowTaskFailed and last.attrs["cause"] == cause
    env.clock.advance(10 * 60_000)  # past the retry backoff: the next task is scheduled
    await env.history.fire_due_timers()


@pytest.mark.parametrize("command", [
    timer("t", TOO_LONG),
    activity("a", start_to_close_timeout_ms=2**63 - 1),
    activity("a", retry_policy={"initial_interval_ms": 1, "maximum_interval_ms": 2**63 - 1}),
    activity("a", retry_policy={"maximum_attempts": 2**40}),
    cmd(CommandType.ContinueAsNewWorkflowExecution, run_timeout_ms=TOO_LONG),
    cmd(CommandType.RequestCancelExternalWorkflowExecution, seq=1, workflow_id="other", deadline_ms=2**63 - 1),
    child("1", "kid", execution_timeout_ms=TOO_LONG),
    child("1", "kid", start_delay_ms=TOO_LONG),
    child("1", "kid", cron_schedule="0 0 30 2 *"),
], ids=["timer", "activity timeout", "activity retry interval", "activity attempts", "continue-as-new",
        "cancel deadline", "child timeout", "child delay", "child cron"])
async def test_out_of_range_commands_fail_the_task_as_bad_commands(env: Env, command: Any) -> None:
    await env.start("wf-1")
    await _task_fails(env, command, "BAD_COMMAND", r"100 years|the largest is|never fires")


async def test_a_payload_nested_too_deep_is_a_limit_exceeded(env: Env) -> None:
    await env.start("wf-1")
    deep = json.loads("[" * 9 + "]" * 9)
    await _task_fails(env, cmd(CommandType.CompleteWorkflowExecution, result=deep), "LIMIT_EXCEEDED",
                      r"result nests arrays and objects 9 levels deep; the limit \(limits.max_payload_depth\) is 8")
    with pytest.raises(InvalidArgument, match=r"limits.max_payload_depth"):
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s", deep))


async def test_start_options_out_of_range(env: Env) -> None:
    for kw, match in [({"execution_timeout_ms": TOO_LONG}, "execution_timeout_ms must be"),
                      ({"start_delay_ms": TOO_LONG}, "start_delay_ms must be"),
                      ({"cron_schedule": "0 0 31 4 *"}, "never fires"),
                      ({"retry_policy": {"initial_interval_ms": 2**63 - 1}}, "the longest interval")]:
        with pytest.raises(InvalidArgument, match=match):
            await env.history.start_workflow(StartWorkflowRequest("wf-x", "app:order", "q", **kw))


async def test_signals_buffered_while_a_task_runs_count_against_the_history_bytes(env: Env) -> None:
    await env.start("wf-1")
    await env.poll_wft("wf-1")  # a task is running: signals wait in memory until it completes
    sent = 0
    with pytest.raises(ResourceExhausted) as info:
        for _ in range(100):
            await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "s", "x" * 3_000))
            sent += 1
    assert 4 <= sent < 10  # 20,000 bytes of history, with what the start wrote
    assert "with the signals waiting for the running workflow task" in info.value.message
    assert "(limits.max_history_bytes)" in info.value.message
