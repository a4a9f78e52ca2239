"""Runs that continue a workflow (docs/processes.md): continue-as-new, workflow-level retry, cron,
the execution timeout across runs, and get_workflow_result following the chain."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from history.runs import check_cron, cron_next_ms
from legato.api import (
    ExecutionRef,
    GetResultRequest,
    MonitorWorkflowRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowStatus,
)
from legato.commands import CommandType as C
from legato.errors import InvalidArgument
from legato.events import EventType as E
from legato.retry import RetryPolicy
from tests.unit.history.conftest import Env, cmd, complete_wf

FAIL = cmd(C.FailWorkflowExecution, failure={"message": "flaky", "kind": "Unavailable", "retryable": True})
FAIL_HARD = cmd(C.FailWorkflowExecution, failure={"message": "bad input", "kind": "Invalid", "retryable": False})


def _result(env: Env, run_id: str = "", timeout_ms: int = 0) -> asyncio.Future[object]:
    return asyncio.ensure_future(env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf", run_id),
                                                                                  timeout_ms=timeout_ms)))


async def test_continue_as_new_starts_a_fresh_run_in_the_same_write(env: Env) -> None:
    first = await env.start("wf", input=[1], memo={"m": 1}, search_attributes={"s": "x"}, context={"c": 1},
                            run_timeout_ms=60_000, request_id="start-1")
    await env.run_wf("wf", cmd(C.UpsertWorkflowSearchAttributes, search_attributes={"s": "y"}),
                     cmd(C.ContinueAsNewWorkflowExecution, input=[2], task_queue="q2"))
    old = await env.history_of("wf", first)
    can = old[-1]
    assert can.event_type == E.WorkflowExecutionContinuedAsNew
    new_run = can.attrs["new_execution_run_id"]
    assert can.attrs["input"] == [2] and can.attrs["task_queue"] == "q2" and can.attrs["workflow_type"] == "app:order"
    d_old = await env.history.describe_workflow(ExecutionRef("wf", first))
    assert d_old.info.status == WorkflowStatus.CONTINUED_AS_NEW
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.run_id == new_run and d.info.status == WorkflowStatus.RUNNING and d.info.task_queue == "q2"
    assert d.info.memo == {"m": 1} and d.info.search_attributes == {"s": "y"}
    hist = await env.history_of("wf")
    assert [e.event_type for e in hist] == [E.WorkflowExecutionStarted, E.WorkflowTaskScheduled]
    st = hist[0].attrs
    assert st["input"] == [2] and st["first_run_id"] == first and st["attempt"] == 1 and st["context"] == {"c": 1}
    assert st["workflow_run_timeout_ms"] == 60_000
    task = await env.wft_task("wf")
    assert task.run_id == new_run and task.task_queue == "q2"
    # a retry of the original start (same request id) returns the current run
    resp = await env.history.start_workflow(StartWorkflowRequest("wf", "app:order", "q", request_id="start-1"))
    assert resp.run_id == new_run and not resp.started


async def test_get_result_without_run_id_follows_the_chain(env: Env) -> None:
    first = await env.start("wf")
    waiter = _result(env, timeout_ms=5_000)
    await env.run_wf("wf", cmd(C.ContinueAsNewWorkflowExecution, input=[]))
    await asyncio.sleep(0)
    assert not waiter.done()
    await env.run_wf("wf", complete_wf("end"))
    res = await asyncio.wait_for(waiter, 5)
    assert res.status == WorkflowStatus.COMPLETED and res.result == "end" and res.run_id != first  # type: ignore[attr-defined]
    old = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf", first), timeout_ms=0))
    assert old.status == WorkflowStatus.CONTINUED_AS_NEW and old.run_id == first


async def test_monitors_carry_over_and_hear_only_the_last_run(env: Env) -> None:
    env.matching.mailboxes.add("@c")
    await env.start("wf")
    await env.history.monitor_workflow(MonitorWorkflowRequest(ExecutionRef("wf"), "@c"))
    await env.run_wf("wf", cmd(C.ContinueAsNewWorkflowExecution, input=[]))
    await env.settle()
    assert env.matching.delivered == []
    await env.run_wf("wf", complete_wf(1))
    await env.settle()
    assert len(env.matching.delivered) == 1


async def test_continue_as_new_with_a_buffered_signal_is_unhandled(env: Env) -> None:
    from legato.api import SignalWorkflowRequest
    await env.start("wf")
    wt = await env.poll_next("wf")
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "late"))
    await env.complete(wt, cmd(C.ContinueAsNewWorkflowExecution, input=[]))
    failed = await env.last("wf", E.WorkflowTaskFailed)
    assert failed.attrs["cause"] == "UNHANDLED_COMMAND"
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.status == WorkflowStatus.RUNNING


async def test_workflow_retry_policy_runs_again_after_the_backoff(env: Env) -> None:
    rp = RetryPolicy(initial_interval_ms=1_000, backoff_coefficient=2.0, maximum_attempts=3).to_dict()
    first = await env.start("wf", input=[{"order": 1}], retry_policy=rp)
    waiter = _result(env, timeout_ms=5_000)
    await env.run_wf("wf", FAIL)
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    second = d.info.run_id
    assert second != first and d.pending_workflow_task and d.pending_workflow_task.state == "BACKOFF"
    old = await env.history.describe_workflow(ExecutionRef("wf", first))
    assert old.info.status == WorkflowStatus.FAILED  # the failed run keeps its status
    hist = await env.history_of("wf")
    assert hist[0].attrs["attempt"] == 2 and hist[0].attrs["input"] == [{"order": 1}]
    assert hist[0].attrs["first_run_id"] == first and len(hist) == 1  # no workflow task until the backoff
    assert await env.fire(999) == 0
    await env.fire(1)
    await env.run_wf("wf", FAIL)
    await env.fire(2_000)  # the second backoff doubles
    third = (await env.history.describe_workflow(ExecutionRef("wf"))).info.run_id
    assert (await env.history_of("wf"))[0].attrs["attempt"] == 3
    await env.run_wf("wf", FAIL)  # attempts exhausted
    res = await asyncio.wait_for(waiter, 5)
    assert res.status == WorkflowStatus.FAILED and res.run_id == third  # type: ignore[attr-defined]
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.run_id == third


async def test_a_non_retryable_failure_is_not_retried(env: Env) -> None:
    first = await env.start("wf", retry_policy=RetryPolicy(maximum_attempts=5).to_dict())
    await env.run_wf("wf", FAIL_HARD)
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.run_id == first
    await env.start("wf2", retry_policy=RetryPolicy(non_retryable_error_types=["UNAVAILABLE"]).to_dict())
    await env.run_wf("wf2", FAIL)
    d = await env.history.describe_workflow(ExecutionRef("wf2"))
    assert d.info.status == WorkflowStatus.FAILED


async def test_run_timeout_is_retried_until_the_execution_timeout(env: Env) -> None:
    await env.start("wf", run_timeout_ms=10_000, execution_timeout_ms=25_000,
                    retry_policy=RetryPolicy(initial_interval_ms=1_000, backoff_coefficient=1.0).to_dict())
    await env.fire(10_000)  # run 1 timed out at 10s: run 2 starts at 11s
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.status == WorkflowStatus.RUNNING and (await env.history_of("wf"))[0].attrs["attempt"] == 2
    await env.fire(11_000)  # run 2 timed out at 21s: run 3 at 22s, which the execution timeout ends at 25s
    assert (await env.history_of("wf"))[0].attrs["attempt"] == 3
    await env.fire(3_999)
    assert (await env.history.describe_workflow(ExecutionRef("wf"))).info.status == WorkflowStatus.RUNNING
    await env.fire(1)
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.status == WorkflowStatus.TIMED_OUT and d.failure is not None
    assert "execution timeout of 25000 ms" in d.failure.message
    assert (await env.last("wf", E.WorkflowExecutionTimedOut)).attrs["timeout_type"] == "EXECUTION"


async def test_terminate_ends_a_retrying_workflow(env: Env) -> None:
    await env.start("wf", retry_policy=RetryPolicy(maximum_attempts=0).to_dict())
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("wf")))
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.status == WorkflowStatus.TERMINATED


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


async def test_cron_runs_start_at_the_fire_times(env: Env) -> None:
    env.clock.now = _ms("2024-01-01T05:30:00")
    first = await env.start("wf", cron_schedule="0 */6 * * *", input=["tick"])
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.pending_workflow_task and d.pending_workflow_task.state == "BACKOFF"
    assert d.pending_workflow_task.scheduled_time_ms == _ms("2024-01-01T06:00:00")  # the first run waits
    assert await env.fire(30 * 60_000 - 1) == 0
    await env.fire(1)
    await env.run_wf("wf", complete_wf("r1"))
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.run_id != first and d.pending_workflow_task is not None
    assert d.pending_workflow_task.scheduled_time_ms == _ms("2024-01-01T12:00:00")
    assert (await env.history_of("wf"))[0].attrs["input"] == ["tick"]
    assert (await env.history.describe_workflow(ExecutionRef("wf", first))).info.status == WorkflowStatus.COMPLETED
    # a failed cron run is followed by the next one too; a terminated one ends the schedule
    await env.fire(6 * 3_600_000)
    await env.run_wf("wf", FAIL_HARD)
    third = (await env.history.describe_workflow(ExecutionRef("wf"))).info.run_id
    await env.history.terminate_workflow(TerminateWorkflowRequest(ExecutionRef("wf")))
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.run_id == third and d.info.status == WorkflowStatus.TERMINATED


async def test_invalid_cron_is_refused_naming_the_option(env: Env) -> None:
    for bad in ["every day", "* * * *", "0 0 * * * *", "61 * * * *"]:
        with pytest.raises(InvalidArgument, match="invalid cron_schedule"):
            await env.start("wf", cron_schedule=bad)
    assert check_cron("*/5 * * * *") is None
    assert cron_next_ms("0 0 * * *", _ms("2024-01-01T00:00:00")) == _ms("2024-01-02T00:00:00")


async def test_retry_policy_validation(env: Env) -> None:
    for rp, message in [({"maximum_attempts": -1}, "maximum_attempts"), ({"backoff_coefficient": 0.5},
                                                                        "backoff_coefficient"),
                        ({"initial_interval": 5}, "unknown key 'initial_interval'"),
                        ({"initial_interval_ms": 0}, "initial_interval_ms must be > 0")]:
        with pytest.raises(InvalidArgument, match=message):
            await env.start("wf", retry_policy=rp)


async def test_continue_as_new_defaults_and_bad_attributes(env: Env) -> None:
    await env.start("wf", input=[1], task_timeout_ms=7_000)
    wt = await env.poll_next("wf")
    with pytest.raises(InvalidArgument, match="input must be a list of arguments"):
        await env.complete(wt, cmd(C.ContinueAsNewWorkflowExecution, input="x"))
    await env.fire(60_000)
    wt = await env.poll_next("wf")
    with pytest.raises(InvalidArgument, match="must be the last command"):
        await env.complete(wt, cmd(C.ContinueAsNewWorkflowExecution), complete_wf())
    await env.fire(60_000)
    await env.run_wf("wf", cmd(C.ContinueAsNewWorkflowExecution))  # no attributes: the run's own, no input
    started = (await env.history_of("wf"))[0].attrs
    assert started["input"] == [] and started["workflow_type"] == "app:order" and started["task_queue"] == "q"
    assert started["workflow_task_timeout_ms"] == 7_000
