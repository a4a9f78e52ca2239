"""Start options history implements (docs/processes.md, "Start options"): start delay, start
messages, use_existing with messages, execution_error_when_already_started, eager start, and
clear errors for bad values; seed 002's id policies."""

from __future__ import annotations

from typing import Any

import pytest

from legato.api import (
    ExecutionRef,
    IdConflictPolicy,
    SignalWorkflowRequest,
    StartMessage,
    StartWorkflowRequest,
    WorkflowStatus,
)
from legato.errors import AlreadyStarted, InvalidArgument
from legato.events import EventType as E
from tests.unit.history.conftest import Env, complete_wf


async def _start(env: Env, wf: str = "wf", **kw: Any) -> Any:
    return await env.history.start_workflow(StartWorkflowRequest(wf, "app:counter", "q", **kw))


async def test_start_delay_schedules_the_first_task_later(env: Env) -> None:
    await _start(env, start_delay_ms=300_000, run_timeout_ms=60_000)
    assert await env.types("wf") == [E.WorkflowExecutionStarted]
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.pending_workflow_task and d.pending_workflow_task.state == "BACKOFF"
    # a signal during the delay is written but does not start the workflow early
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "early"))
    assert await env.types("wf") == [E.WorkflowExecutionStarted, E.WorkflowExecutionSignaled]
    assert env.matching.find(lambda t: t.workflow_id == "wf") == []
    assert await env.fire(299_999) == 0
    await env.fire(1)
    assert (await env.types("wf"))[-1] == E.WorkflowTaskScheduled
    wt = await env.poll_next("wf")
    assert wt.attempt == 1
    # the run timeout counts from the end of the delay
    await env.complete(wt)
    await env.fire(59_999)
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.status == WorkflowStatus.RUNNING
    await env.fire(1)
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.status == WorkflowStatus.TIMED_OUT


async def test_start_messages_come_first_with_the_starter_as_sender(env: Env) -> None:
    msgs = [StartMessage("increment", {"amount": 2}), StartMessage("increment", {"amount": 1}),
            StartMessage("increment", {"amount": 4})]
    await _start(env, start_messages=msgs, identity="@caller-7", request_id="r1")
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "outside"))
    hist = await env.history_of("wf")
    assert [(e.event_type, e.attrs.get("input")) for e in hist] == [
        (E.WorkflowExecutionStarted, []), (E.WorkflowExecutionSignaled, {"amount": 2}),
        (E.WorkflowExecutionSignaled, {"amount": 1}), (E.WorkflowExecutionSignaled, {"amount": 4}),
        (E.WorkflowTaskScheduled, None), (E.WorkflowExecutionSignaled, None)]
    assert {e.attrs["sender"] for e in hist[1:4]} == {"@caller-7"}
    await _start(env, "wf2", start_messages=[StartMessage("x")], identity="cli")  # not a pid: no sender
    assert (await env.history_of("wf2"))[1].attrs["sender"] == ""


async def test_start_messages_with_a_start_delay_are_written_at_once(env: Env) -> None:
    await _start(env, start_delay_ms=1_000, start_messages=[StartMessage("go")])
    assert await env.types("wf") == [E.WorkflowExecutionStarted, E.WorkflowExecutionSignaled]


async def test_use_existing_delivers_the_new_start_messages(env: Env) -> None:
    first = await _start(env, start_messages=[StartMessage("increment", {"amount": 3})],
                         id_conflict_policy=IdConflictPolicy.USE_EXISTING, input=[{"initial": 0}], request_id="s1")
    second = await _start(env, start_messages=[StartMessage("increment", {"amount": 2})],
                          id_conflict_policy=IdConflictPolicy.USE_EXISTING, input=[{"initial": 999}],
                          request_id="s2", identity="@c")
    assert second.run_id == first.run_id and not second.started and second.existing
    sigs = [e.attrs for e in await env.history_of("wf") if e.event_type == E.WorkflowExecutionSignaled]
    assert [s["input"] for s in sigs] == [{"amount": 3}, {"amount": 2}] and sigs[1]["sender"] == "@c"
    # the same start retried (same request id): its messages are not delivered twice
    again = await _start(env, start_messages=[StartMessage("increment", {"amount": 2})],
                         id_conflict_policy=IdConflictPolicy.USE_EXISTING, request_id="s2")
    assert again.run_id == first.run_id and again.existing
    assert (await env.types("wf")).count(E.WorkflowExecutionSignaled) == 2
    retry = await _start(env, id_conflict_policy=IdConflictPolicy.USE_EXISTING, request_id="s1")
    assert retry.started is False and retry.existing is False


async def test_execution_error_when_already_started(env: Env) -> None:
    await _start(env)
    with pytest.raises(AlreadyStarted, match="execution_error_when_already_started is set"):
        await _start(env, id_conflict_policy=IdConflictPolicy.USE_EXISTING, execution_error_when_already_started=True)
    with pytest.raises(AlreadyStarted, match="id_conflict_policy is fail"):
        await _start(env)
    # not running any more: a new run (reuse policy allowing)
    await env.run_wf("wf", complete_wf())
    resp = await _start(env, execution_error_when_already_started=True)
    assert resp.started


async def test_terminate_existing_still_terminates(env: Env) -> None:
    first = await _start(env)
    second = await _start(env, id_conflict_policy=IdConflictPolicy.TERMINATE_EXISTING,
                          execution_error_when_already_started=True)
    assert second.started and second.run_id != first.run_id
    d = await env.history.describe_workflow(ExecutionRef("wf", first.run_id))
    assert d.info.status == WorkflowStatus.TERMINATED


async def test_eager_start_and_wait_for_cancellation_are_accepted(env: Env) -> None:
    resp = await _start(env, enable_eager_start=True, wait_for_cancellation=True)
    assert resp.started and (await env.wft_task("wf")).run_id == resp.run_id


@pytest.mark.parametrize(("kw", "message"), [
    ({"start_delay_ms": -1}, "start_delay_ms must be a whole number"),
    ({"start_delay_ms": True}, "start_delay_ms"),
    ({"enable_eager_start": "yes"}, "enable_eager_start must be true or false"),
    ({"parent_close_policy": "explode"}, "unknown parent_close_policy"),
    ({"start_messages": [StartMessage("")]}, r"start_messages\[1\]: topic"),
    ({"start_messages": [{"topic": "x"}]}, "start_messages must be a list of StartMessage"),
    ({"start_messages": [StartMessage("t", float("nan"))]}, "cannot be encoded as JSON"),
    ({"monitors": ["@"]}, "monitors must be a list of caller pids"),
    ({"search_attributes": {"k": {"nested": 1}}}, "search attribute value must be"),
    ({"cron_schedule": 5}, "cron_schedule must be a string"),
])
async def test_bad_start_options_are_named(env: Env, kw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await _start(env, **kw)


async def test_start_messages_are_bounded() -> None:
    from tests.unit.history.conftest import close_env, make_config, make_env
    env = await make_env(None, make_config(limits={"max_buffered_signals": 2}))
    try:
        with pytest.raises(InvalidArgument, match=r"3 start_messages; the limit is 2 \(limits.max_buffered_signals\)"):
            await _start(env, start_messages=[StartMessage("a"), StartMessage("b"), StartMessage("c")])
        await _start(env, start_messages=[StartMessage("a"), StartMessage("b")])
    finally:
        await close_env(env)


async def test_caller_pid_prefix_is_not_a_workflow_id(env: Env) -> None:
    with pytest.raises(InvalidArgument, match="cannot start with '@'"):
        await _start(env, "@me")
