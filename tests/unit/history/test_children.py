"""Child workflows (docs/processes.md, "Children"): start, outcome events in the parent, close
events, use_existing, parent close policies, idempotent transfer tasks."""

from __future__ import annotations

import pytest

from history.processes import Processes
from history.state import T_CLOSE_NOTIFY, T_PARENT_CLOSE_POLICY, T_START_CHILD, ChildInfo, MutableState, Mutation
from legato.api import (
    ExecutionClosed,
    ExecutionRef,
    GetResultRequest,
    ParentInfo,
    RecordChildClosedRequest,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import CommandType as C
from legato.errors import Failure
from legato.events import EventType as E
from tests.unit.history.conftest import Env, child, cmd, complete_wf, make_config, timer


async def _parent_with_child(env: Env, **options: object) -> str:
    """`parent` starts child `kid` and waits; returns the child's run id."""
    await env.start("parent", context={"tenant": "t1"})
    await env.run_wf("parent", child("1", "kid", input=[{"n": 1}], **options))
    await env.settle()
    return str((await env.last("parent", E.ChildWorkflowExecutionStarted)).attrs["run_id"])


async def test_child_is_started_with_its_parent_recorded(env: Env) -> None:
    kid_run = await _parent_with_child(env, memo={"m": 1}, execution_timeout_ms=60_000)
    hist = await env.history_of("parent")
    assert [e.event_type for e in hist[3:]] == [E.WorkflowTaskCompleted, E.StartChildWorkflowExecutionInitiated,
                                                E.ChildWorkflowExecutionStarted, E.WorkflowTaskScheduled]
    init = hist[4]
    assert init.attrs["seq"] == "1" and init.attrs["workflow_id"] == "kid"
    assert init.attrs["workflow_type"] == "app:child"
    assert init.attrs["namespace"] == "default" and init.attrs["task_queue"] == "q"
    assert init.attrs["options"]["parent_close_policy"] == "terminate"
    assert init.attrs["options"]["context"] == {"tenant": "t1"}  # the parent's context is inherited
    assert hist[5].attrs == {"initiated_event_id": 5, "workflow_id": "kid", "run_id": kid_run, "existing": False}
    kid = await env.state("kid")
    assert kid.run_id == kid_run and kid.parent == {"namespace": "default", "workflow_id": "parent",
                                                    "run_id": hist[0].attrs["first_run_id"], "initiated_event_id": 5}
    assert kid.parent_close_policy == "terminate" and kid.memo == {"m": 1} and kid.execution_timeout_ms == 60_000
    started = (await env.history_of("kid"))[0].attrs
    assert started["input"] == [{"n": 1}] and started["context"] == {"tenant": "t1"} and started["identity"] == "parent"
    assert (await env.state("parent")).children[5].state == "STARTED"
    described = await env.history.describe_workflow(ExecutionRef("kid"))
    assert described.parent is not None and described.parent.to_dict() == kid.parent
    assert (await env.history.describe_workflow(ExecutionRef("parent"))).parent is None


@pytest.mark.parametrize(("close", "event", "key", "value"), [
    (complete_wf({"ok": 1}), E.ChildWorkflowExecutionCompleted, "result", {"ok": 1}),
    (cmd(C.FailWorkflowExecution, failure={"message": "no stock", "kind": "NotFound", "retryable": False}),
     E.ChildWorkflowExecutionFailed, "failure", {"message": "no stock", "kind": "NotFound", "retryable": False}),
    (cmd(C.CancelWorkflowExecution, details="bye"), E.ChildWorkflowExecutionCanceled, "failure", None),
])
async def test_child_close_is_recorded_in_the_parent(env: Env, close: object, event: E, key: str,
                                                     value: object) -> None:
    kid_run = await _parent_with_child(env)
    await env.run_wf("parent")  # the parent waits
    await env.run_wf("kid", close)  # type: ignore[arg-type]
    await env.settle()
    ev = await env.last("parent", event)
    assert ev.attrs["initiated_event_id"] == 5 and ev.attrs["workflow_id"] == "kid" and ev.attrs["run_id"] == kid_run
    if value is not None:
        assert ev.attrs[key] == value
    else:
        assert ev.attrs[key]["kind"] == "Canceled"
    assert (await env.types("parent"))[-1] == E.WorkflowTaskScheduled  # the parent is woken
    assert (await env.state("parent")).children == {}
    # both transfer tasks run again: nothing more happens
    n = len(await env.history_of("parent"))
    assert await env.rerun(T_START_CHILD) == 1 and await env.rerun(T_CLOSE_NOTIFY) == 1
    assert len(await env.history_of("parent")) == n
    assert len((await env.history.describe_workflow(ExecutionRef("kid"))).info.run_id) > 0


async def test_terminated_and_timed_out_children(env: Env) -> None:
    await _parent_with_child(env, run_timeout_ms=5_000)
    await env.start("parent2")
    await env.run_wf("parent2", child("1", "kid2"))
    await env.settle()
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("kid2"), reason="ops"))
    await env.fire(5_000)
    await env.settle()
    t = await env.last("parent2", E.ChildWorkflowExecutionTerminated)
    assert t.attrs["failure"]["kind"] == "Terminated" and t.attrs["failure"]["message"] == "ops"
    to = await env.last("parent", E.ChildWorkflowExecutionTimedOut)
    assert to.attrs["failure"]["kind"] == "Timeout"


async def test_start_is_idempotent_by_parent_run_and_initiated_event(env: Env) -> None:
    kid_run = await _parent_with_child(env)
    st = await env.state("parent")
    req = StartWorkflowRequest("kid", "app:child", "q", request_id=f"child:{st.run_id}:5",
                               parent=ParentInfo("default", "parent", st.run_id, 5))
    resp = await env.history.start_workflow(req)  # what a second run of the start task sends
    assert (resp.run_id, resp.started, resp.existing) == (kid_run, False, False)
    assert await env.rerun(T_START_CHILD) == 1
    assert (await env.types("parent")).count(E.ChildWorkflowExecutionStarted) == 1


async def test_child_id_already_running_fails_with_already_exists(env: Env) -> None:
    await env.start("kid")
    await env.start("parent")
    await env.run_wf("parent", child("1", "kid", id_conflict_policy="fail"))
    await env.settle()
    ev = await env.last("parent", E.StartChildWorkflowExecutionFailed)
    assert ev.attrs["initiated_event_id"] == 5 and ev.attrs["workflow_id"] == "kid"
    assert ev.attrs["failure"]["kind"] == "AlreadyExists" and ev.attrs["failure"]["retryable"] is False
    assert "already running" in ev.attrs["failure"]["message"]
    assert (await env.state("parent")).children == {}
    await env.rerun(T_START_CHILD)
    assert (await env.types("parent")).count(E.StartChildWorkflowExecutionFailed) == 1


async def test_use_existing_returns_the_running_run_and_reports_its_close(env: Env) -> None:
    other = await env.start("kid", input=[{"initial": 0}])
    await env.start("parent")
    await env.run_wf("parent", child("1", "kid", input=[{"initial": 999}], id_conflict_policy="use_existing",
                                     start_messages=[{"topic": "increment", "payload": {"amount": 2}}]))
    await env.settle()
    ev = await env.last("parent", E.ChildWorkflowExecutionStarted)
    assert ev.attrs["run_id"] == other and ev.attrs["existing"] is True
    # the start message reached the existing run (its input is ignored), from the parent
    sig = await env.last("kid", E.WorkflowExecutionSignaled)
    assert sig.attrs["signal_name"] == "increment" and sig.attrs["input"] == {"amount": 2}
    assert sig.attrs["sender"] == "parent"
    assert (await env.history_of("kid"))[0].attrs["input"] == [{"initial": 0}]
    await env.rerun(T_START_CHILD)
    assert (await env.types("kid")).count(E.WorkflowExecutionSignaled) == 1  # delivered once
    # the parent is told of its close, as a child
    await env.run_wf("kid", complete_wf("counted"))
    await env.settle()
    done = await env.last("parent", E.ChildWorkflowExecutionCompleted)
    assert done.attrs["result"] == "counted" and done.attrs["run_id"] == other
    await env.rerun(T_CLOSE_NOTIFY)
    assert (await env.types("parent")).count(E.ChildWorkflowExecutionCompleted) == 1


async def test_existing_child_is_not_closed_by_the_parent_policy(env: Env) -> None:
    await env.start("kid")
    await env.start("parent")
    await env.run_wf("parent", child("1", "kid", id_conflict_policy="use_existing"))
    await env.settle()
    await env.run_wf("parent", complete_wf())
    await env.settle()
    assert await env.transfer_tasks(T_PARENT_CLOSE_POLICY) == []
    assert (await env.history.describe_workflow(ExecutionRef("kid"))).info.status == WorkflowStatus.RUNNING


@pytest.mark.parametrize("policy", ["terminate", "request_cancel", "abandon"])
async def test_parent_close_policy(env: Env, policy: str) -> None:
    await _parent_with_child(env, parent_close_policy=policy)
    await env.run_wf("parent", complete_wf())
    await env.settle()
    d = await env.history.describe_workflow(ExecutionRef("kid"))
    if policy == "terminate":
        assert d.info.status == WorkflowStatus.TERMINATED
        assert d.failure and "parent workflow parent closed (COMPLETED)" in d.failure.message
        assert "parent_close_policy terminate" in d.failure.message
    elif policy == "request_cancel":
        assert d.info.status == WorkflowStatus.RUNNING
        assert (await env.types("kid")).count(E.WorkflowExecutionCancelRequested) == 1
    else:
        assert d.info.status == WorkflowStatus.RUNNING
        assert E.WorkflowExecutionCancelRequested not in await env.types("kid")
    n = len(await env.history_of("kid"))
    assert await env.rerun(T_PARENT_CLOSE_POLICY) == (0 if policy == "abandon" else 1)
    assert len(await env.history_of("kid")) == n  # applied once
    # the child's own close later finds the parent closed: nothing is recorded
    if policy != "terminate":
        await env.run_wf("kid", complete_wf())
        await env.settle()
        assert (await env.types("parent"))[-1] == E.WorkflowExecutionCompleted


async def test_parent_closing_in_the_task_that_starts_a_child(env: Env) -> None:
    await env.start("parent")
    await env.run_wf("parent", child("1", "doomed"), child("2", "free", parent_close_policy="abandon"), complete_wf())
    await env.settle()
    # terminate: not started at all (it would be ended at once); abandon: started and left running
    assert await env.transfer_tasks(T_START_CHILD) != []
    with pytest.raises(Exception, match="not found"):
        await env.history.describe_workflow(ExecutionRef("doomed"))
    d = await env.history.describe_workflow(ExecutionRef("free"))
    assert d.info.status == WorkflowStatus.RUNNING


async def test_child_start_failure_for_a_bad_option_is_a_bad_command(env: Env) -> None:
    await env.start("parent")
    wt = await env.poll_wft("parent")
    with pytest.raises(Exception, match="cron_schedule"):
        await env.complete(wt, child("1", "kid", cron_schedule="every day"))
    failed = await env.last("parent", E.WorkflowTaskFailed)
    assert failed.attrs["cause"] == "BAD_COMMAND" and "child workflow 'kid'" in failed.attrs["failure"]["message"]
    for bad, message in [
        (child("1", "@caller"), "cannot start with '@'"),
        (child("1", "kid", nope=1), "unknown option 'nope'"),
        (child("", "kid"), "seq must be"),
        (child("1", "kid", parent_close_policy="explode"), "unknown parent_close_policy 'explode'"),
        (child("1", "kid", retry_policy={"maximum_attempts": -1}), "invalid retry_policy"),
    ]:
        await env.fire(60_000)
        wt = await env.poll_next("parent")
        with pytest.raises(Exception, match=message):
            await env.complete(wt, bad)


async def test_a_child_continued_as_new_reports_its_last_run(env: Env) -> None:
    await _parent_with_child(env)
    await env.run_wf("kid", cmd(C.ContinueAsNewWorkflowExecution, input=[2]))
    await env.settle()
    assert E.ChildWorkflowExecutionCompleted not in await env.types("parent")
    last_run = (await env.history.describe_workflow(ExecutionRef("kid"))).info.run_id
    await env.run_wf("kid", complete_wf("final"))
    await env.settle()
    ev = await env.last("parent", E.ChildWorkflowExecutionCompleted)
    assert ev.attrs["run_id"] == last_run and ev.attrs["result"] == "final"


async def test_start_messages_of_a_child_come_before_outside_signals(env: Env) -> None:
    await env.start("parent")
    await env.run_wf("parent", child("1", "kid", start_messages=[{"topic": "a", "payload": 1},
                                                                 {"topic": "b", "payload": 2}]))
    await env.settle()
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("kid"), "outside"))
    hist = await env.history_of("kid")
    assert [(e.event_type, e.attrs.get("signal_name")) for e in hist] == [
        (E.WorkflowExecutionStarted, None), (E.WorkflowExecutionSignaled, "a"), (E.WorkflowExecutionSignaled, "b"),
        (E.WorkflowTaskScheduled, None), (E.WorkflowExecutionSignaled, "outside")]
    assert hist[1].attrs["sender"] == "parent"


# ---------------------------------------------------------------- the rules alone

def _parent_state(child_state: str) -> Mutation:
    st = MutableState("default", "parent", "run-p", "app:p", "q", 0, next_event_id=8)
    st.children[5] = ChildInfo(5, "default", "kid", "app:kid", "terminate", state=child_state, run_id="")
    return Mutation.of(st, 1000)


def test_a_close_that_overtakes_the_start_outcome_records_both_in_order() -> None:
    from history.engine import Engine
    eng = Engine(make_config())
    procs: Processes = eng.proc
    m = _parent_state("INITIATED")
    closed = ExecutionClosed("default", "kid", "run-k", WorkflowStatus.FAILED,
                             failure=Failure("bad", kind="Invalid", retryable=False))
    procs.record_child_closed(m, RecordChildClosedRequest(ParentInfo("default", "parent", "run-p", 5), closed))
    assert [(e.event_type, e.attrs.get("run_id")) for e in m.events] == [
        (E.ChildWorkflowExecutionStarted, "run-k"), (E.ChildWorkflowExecutionFailed, "run-k"),
        (E.WorkflowTaskScheduled, None)]
    assert m.events[1].attrs["failure"]["message"] == "bad"
    # the start's outcome arriving afterwards changes nothing
    assert procs.child_started(m, 5, "run-k", False) == "" and len(m.events) == 3
    # nor does the close again
    procs.record_child_closed(m, RecordChildClosedRequest(ParentInfo("default", "parent", "run-p", 5), closed))
    assert len(m.events) == 3


async def test_max_pending_children() -> None:
    from tests.unit.history.conftest import close_env, make_env
    env = await make_env(None, make_config(limits={"max_pending_children": 2}))
    try:
        await env.start("parent")
        wt = await env.poll_wft("parent")
        with pytest.raises(Exception, match=r"3 pending child workflows; the limit is 2 "
                                            r"\(limits.max_pending_children\)"):
            await env.complete(wt, child("1", "a"), child("2", "b"), child("3", "c"))
        failed = await env.last("parent", E.WorkflowTaskFailed)
        assert failed.attrs["cause"] == "LIMIT_EXCEEDED"
        await env.fire(60_000)
        await env.run_wf("parent", child("1", "a"), child("2", "b"), timer("t", 1000))
        await env.settle()
        assert len((await env.state("parent")).children) == 2
    finally:
        await close_env(env)


async def test_get_result_of_a_child_started_by_a_parent(env: Env) -> None:
    await _parent_with_child(env)
    await env.run_wf("kid", complete_wf(7))
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("kid"), timeout_ms=0))
    assert res.status == WorkflowStatus.COMPLETED and res.result == 7
