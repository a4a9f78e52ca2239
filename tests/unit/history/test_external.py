"""Signals, cancel requests and terminations sent by a workflow to another workflow or a caller
pid (docs/processes.md); cancel with a deadline; the limit on outstanding requests."""

from __future__ import annotations

from typing import Any

import pytest

from history.state import T_CANCEL_EXTERNAL, T_SIGNAL_EXTERNAL, T_TERMINATE_EXTERNAL
from legato.api import (
    CancelWorkflowRequest,
    ExecutionRef,
    ProcessMessage,
    TerminateWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import Command
from legato.commands import CommandType as C
from legato.errors import NotFound
from legato.events import EventType as E
from tests.unit.history.conftest import Env, close_env, cmd, complete_wf, make_config, make_env


def send(seq: str, target: str, name: str = "ping", payload: Any = None, **kw: Any) -> Command:
    return cmd(C.SignalExternalWorkflowExecution, seq=seq, workflow_id=target, signal_name=name, input=payload, **kw)


async def _two(env: Env) -> None:
    await env.start("a")
    await env.start("b")
    await env.run_wf("b")  # b waits


async def test_signal_another_workflow(env: Env) -> None:
    await _two(env)
    await env.run_wf("a", send("1", "b", "cross_host_ping", {"data": "hello"}))
    await env.settle()
    init = (await env.history_of("a"))[4]
    assert init.event_type == E.SignalExternalWorkflowExecutionInitiated
    assert init.attrs == {"seq": "1", "namespace": "default", "workflow_id": "b", "run_id": "",
                          "signal_name": "cross_host_ping", "input": {"data": "hello"}, "sender": "",
                          "workflow_task_completed_event_id": 4}
    ok = await env.last("a", E.ExternalWorkflowExecutionSignaled)
    assert ok.attrs == {"initiated_event_id": 5, "workflow_id": "b", "run_id": ""}
    sig = await env.last("b", E.WorkflowExecutionSignaled)
    assert sig.attrs["signal_name"] == "cross_host_ping" and sig.attrs["input"] == {"data": "hello"}
    assert sig.attrs["sender"] == "a" and sig.attrs["identity"] == "a"  # msg:from() is the sender's pid
    # the transfer task again: one signal, one outcome
    assert await env.rerun(T_SIGNAL_EXTERNAL) == 1
    assert (await env.types("b")).count(E.WorkflowExecutionSignaled) == 1
    assert (await env.types("a")).count(E.ExternalWorkflowExecutionSignaled) == 1
    assert (await env.state("a")).requests == {}


async def test_signal_is_recorded_once_even_if_the_outcome_was_lost(env: Env) -> None:
    await _two(env)
    await env.run_wf("a", send("1", "b"))
    await env.settle()
    # as if the first run of the task signalled b but crashed before recording the outcome
    st = await env.state("a")
    from legato.api import SignalWorkflowRequest
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("b"), "ping", None, sender="a",
                                                            request_id=f"signal:{st.run_id}:5"))
    assert (await env.types("b")).count(E.WorkflowExecutionSignaled) == 1


async def test_signal_unknown_target_is_not_found(env: Env) -> None:
    await env.start("a")
    await env.run_wf("a", send("1", "nobody"))
    await env.settle()
    ev = await env.last("a", E.SignalExternalWorkflowExecutionFailed)
    assert ev.attrs["initiated_event_id"] == 5 and ev.attrs["workflow_id"] == "nobody"
    assert ev.attrs["failure"]["kind"] == "NotFound" and ev.attrs["failure"]["retryable"] is False
    assert "not found" in ev.attrs["failure"]["message"]


async def test_signal_a_closed_workflow_fails(env: Env) -> None:
    await env.start("b")
    await env.run_wf("b", complete_wf())
    await env.start("a")
    await env.run_wf("a", send("1", "b"))
    await env.settle()
    ev = await env.last("a", E.SignalExternalWorkflowExecutionFailed)
    assert ev.attrs["failure"]["kind"] == "NotFound" and "already closed" in ev.attrs["failure"]["message"]


async def test_send_to_a_caller_pid_goes_to_its_mailbox(env: Env) -> None:
    env.matching.mailboxes.add("@caller-1")
    await env.start("a")
    await env.run_wf("a", send("1", "@caller-1", "status_response", {"progress": 75}),
                     send("2", "@gone", "status_response", 1))
    await env.settle()
    assert env.matching.delivered == [("@caller-1", ProcessMessage("message", topic="status_response",
                                                                   payload={"progress": 75}, sender="a"))]
    assert (await env.last("a", E.ExternalWorkflowExecutionSignaled)).attrs["initiated_event_id"] == 5
    failed = await env.last("a", E.SignalExternalWorkflowExecutionFailed)
    assert failed.attrs["initiated_event_id"] == 6 and failed.attrs["failure"]["kind"] == "NotFound"
    assert "no such process" in failed.attrs["failure"]["message"]
    # an explicit sender is kept
    await env.run_wf("a", send("3", "@caller-1", "x", sender="someone"))
    await env.settle()
    assert env.matching.delivered[-1][1].sender == "someone"


async def test_cancel_another_workflow(env: Env) -> None:
    await _two(env)
    await env.run_wf("a", cmd(C.RequestCancelExternalWorkflowExecution, seq="1", workflow_id="b", reason="stop"))
    await env.settle()
    req = await env.last("b", E.WorkflowExecutionCancelRequested)
    assert req.attrs == {"reason": "stop", "identity": "a"}
    ok = await env.last("a", E.ExternalWorkflowExecutionCancelRequested)
    assert ok.attrs == {"initiated_event_id": 5, "workflow_id": "b", "run_id": ""}
    # b handles the cancel and closes; the request again is harmless
    await env.run_wf("b", cmd(C.CancelWorkflowExecution, details=None))
    assert await env.rerun(T_CANCEL_EXTERNAL) == 1
    assert (await env.types("a")).count(E.ExternalWorkflowExecutionCancelRequested) == 1
    st = await env.state("a")
    await env.history.request_cancel_workflow(CancelWorkflowRequest(  # retried after the close: fine
        ExecutionRef("b"), request_id=f"cancel:{st.run_id}:5"))
    with pytest.raises(NotFound, match="already closed"):
        await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("b"), request_id="other"))


async def test_cancel_with_a_deadline_terminates_a_workflow_that_does_not_stop(env: Env) -> None:
    await _two(env)
    await env.run_wf("a", cmd(C.RequestCancelExternalWorkflowExecution, seq="1", workflow_id="b",
                              deadline_ms=5_000))
    await env.settle()
    assert (await env.types("b"))[-2:] == [E.WorkflowExecutionCancelRequested, E.WorkflowTaskScheduled]
    assert await env.fire(4_999) == 0
    await env.fire(1)
    d = await env.history.describe_workflow(ExecutionRef("b"))
    assert d.info.status == WorkflowStatus.TERMINATED and d.failure is not None
    assert d.failure.kind == "Terminated" and "deadline of 5000 ms" in d.failure.message


async def test_cancel_deadline_does_nothing_once_the_workflow_closed(env: Env) -> None:
    await env.start("b")
    await env.run_wf("b")
    await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("b"), deadline_ms=1_000))
    await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("b"), deadline_ms=500))  # earlier
    await env.run_wf("b", cmd(C.CancelWorkflowExecution, details="cleaned up"))
    await env.fire(1_000)
    d = await env.history.describe_workflow(ExecutionRef("b"))
    assert d.info.status == WorkflowStatus.CANCELED
    assert (await env.types("b")).count(E.WorkflowExecutionCancelRequested) == 1


async def test_an_earlier_deadline_wins(env: Env) -> None:
    await env.start("b")
    await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("b"), deadline_ms=10_000))
    await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("b"), deadline_ms=2_000))
    await env.fire(2_000)
    d = await env.history.describe_workflow(ExecutionRef("b"))
    assert d.info.status == WorkflowStatus.TERMINATED and d.failure and "2000 ms" in d.failure.message
    with pytest.raises(Exception, match="deadline_ms"):
        await env.history.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef("b"), deadline_ms=-1))


async def test_terminate_another_workflow(env: Env) -> None:
    await _two(env)
    await env.run_wf("a", cmd(C.TerminateExternalWorkflowExecution, seq="1", workflow_id="b"),
                     cmd(C.TerminateExternalWorkflowExecution, seq="2", workflow_id="ghost"),
                     cmd(C.TerminateExternalWorkflowExecution, seq="3", workflow_id="@caller"))
    await env.settle()
    d = await env.history.describe_workflow(ExecutionRef("b"))
    assert d.info.status == WorkflowStatus.TERMINATED and d.failure and d.failure.message == "terminated by workflow a"
    assert (await env.last("b", E.WorkflowExecutionTerminated)).attrs["identity"] == "a"
    ok = await env.last("a", E.ExternalWorkflowExecutionTerminated)
    assert ok.attrs == {"initiated_event_id": 5, "workflow_id": "b", "run_id": ""}
    failed = [e for e in await env.history_of("a") if e.event_type == E.TerminateExternalWorkflowExecutionFailed]
    # the two requests are carried out concurrently: their outcomes may be recorded in either order
    by_event = {e.attrs["initiated_event_id"]: e.attrs["failure"] for e in failed}
    # a caller or process pid gets a terminate message in its mailbox; @caller has none
    assert {k: f["kind"] for k, f in by_event.items()} == {6: "NotFound", 7: "NotFound"}
    assert "cannot terminate @caller: no such process" in by_event[7]["message"]
    # again: b is closed now, but the request is the same one: no failure is recorded
    assert await env.rerun(T_TERMINATE_EXTERNAL) == 3
    assert (await env.types("a")).count(E.TerminateExternalWorkflowExecutionFailed) == 2
    st = await env.state("a")
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("b"),
                                                                  request_id=f"terminate:{st.run_id}:5"))


async def test_a_request_made_in_the_closing_task_still_happens(env: Env) -> None:
    await _two(env)
    await env.run_wf("a", send("1", "b", "bye"), complete_wf())
    await env.settle()
    assert (await env.last("b", E.WorkflowExecutionSignaled)).attrs["signal_name"] == "bye"
    assert (await env.types("a"))[-1] == E.WorkflowExecutionCompleted  # nothing recorded after the close


async def test_bad_request_commands(env: Env) -> None:
    await env.start("a")
    for bad, message in [
        (send("1", "", "x"), "workflow_id"),
        (send("1", "b", ""), "signal_name must be a non-empty string"),
        (send(None, "b"), "seq must be"),  # type: ignore[arg-type]
        (cmd(C.RequestCancelExternalWorkflowExecution, seq="1", workflow_id="b", deadline_ms="5s"), "deadline_ms"),
        (cmd(C.MonitorExternalWorkflowExecution, seq="1", workflow_id="b", link="yes"), "link must be true or false"),
        (send("1", "b", "x", run_id=5), "run_id must be a string"),
    ]:
        wt = await env.poll_next("a")
        with pytest.raises(Exception, match=message):
            await env.complete(wt, bad)
        await env.fire(600_000)


async def test_max_pending_external_requests() -> None:
    env = await make_env(None, make_config(limits={"max_pending_external_requests": 2}))
    try:
        await env.start("a")
        wt = await env.poll_wft("a")
        with pytest.raises(Exception, match=r"3 requests to other workflows awaiting their outcome; the limit is 2 "
                                            r"\(limits.max_pending_external_requests\)"):
            await env.complete(wt, send("1", "x"), send("2", "y"),
                               cmd(C.MonitorExternalWorkflowExecution, seq="3", workflow_id="z"))
        failed = await env.last("a", E.WorkflowTaskFailed)
        assert failed.attrs["cause"] == "LIMIT_EXCEEDED"
        await env.fire(60_000)
        await env.run_wf("a", send("1", "x"), send("2", "y"))  # within the limit
        await env.settle()
        assert (await env.types("a")).count(E.SignalExternalWorkflowExecutionFailed) == 2
    finally:
        await close_env(env)
