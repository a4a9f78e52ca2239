"""More of issue 3 end to end through the real engine and worker (see test_processes.py; same app,
tests/apps/processes/extra.lua): parent_close_policy, unmonitor and unlink, monitoring a workflow
someone else started, activity heartbeat details across attempts, workflow-level retry and cron
start. Each test runs in-process, then over gRPC."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from legato.api import (
    ExecutionRef,
    GetHistoryRequest,
    StartWorkflowRequest,
    TerminateWorkflowRequest,
    WorkflowStatus,
)
from legato.config import Config
from legato.events import EventType as E
from legato.retry import RetryPolicy
from tests.integration.engine_harness import APPS, TASK_QUEUE, Harness, engine_config, of_type
from worker.entries import load_registry
from worker.replay import replay

APP = APPS / "processes"

pytestmark = pytest.mark.usefixtures("transport")  # in-process, then over gRPC


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    config: Config = engine_config()
    config.worker.heartbeat_throttle_ms = 20
    async with Harness(tmp_path, APP, config) as harness:
        yield harness


async def replays(h: Harness, wid: str) -> None:
    assert replay(load_registry(APP), await h.history(wid)) == []


async def test_parent_close_policy_terminates_abandons_or_cancels_the_children(h: Harness) -> None:
    wid = await h.start_workflow("pr:close_parent", "kid")
    pids: Any = await h.value(wid)
    assert pids == {"terminate": "kid-terminate", "abandon": "kid-abandon", "request_cancel": "kid-request_cancel"}
    terminated = await h.result(pids["terminate"])
    assert terminated.status is WorkflowStatus.TERMINATED
    assert terminated.failure is not None and "parent_close_policy" in terminated.failure.message
    # the child handles nothing: the cancel request cancels it
    assert (await h.result(pids["request_cancel"])).status is WorkflowStatus.CANCELED
    # the policies were applied (the two above closed), and the abandoned child runs on untouched
    abandoned = await h.describe(pids["abandon"])
    assert abandoned.info.status is WorkflowStatus.RUNNING
    events = await h.history(pids["abandon"])
    assert not of_type(events, E.WorkflowExecutionCancelRequested)
    assert of_type(await h.history(wid), E.ChildWorkflowExecutionStarted)
    await replays(h, wid)


@pytest.mark.parametrize("mode", ["monitor", "link"])
async def test_after_unmonitor_or_unlink_no_exit_arrives(h: Harness, mode: str) -> None:
    target = await h.start_workflow("pr:sleeper")
    wid = await h.start_workflow("pr:forgetter", target, mode)
    assert (await h.result(target)).status is WorkflowStatus.TERMINATED  # terminated by the forgetter
    await h.wait_type(wid, E.ExternalWorkflowExecutionTerminated)
    await h.wait_idle(wid)  # the target's close was handled, nothing reached the forgetter
    await h.signal(wid, "go")
    assert await h.value(wid) == {"got": "go"}  # neither EXIT nor LINK_DOWN (which would fail it)
    events = await h.history(wid)
    assert not of_type(events, E.MonitoredWorkflowExecutionClosed)
    assert len(of_type(events, E.ExternalWorkflowExecutionMonitored)) == 2  # registered, then removed
    await replays(h, wid)


async def test_monitor_of_a_running_workflow_started_by_someone_else(h: Harness) -> None:
    target = await h.start_workflow("pr:finisher")
    await h.wait_idle(target)
    wid = await h.start_workflow("pr:monitor_only", target)
    await h.wait_type(wid, E.ExternalWorkflowExecutionMonitored)
    await h.signal(target, "finish", {"v": 42})
    assert await h.value(target) == {"v": 42}
    assert await h.value(wid) == {"kind": "EXIT", "from": target, "value": {"v": 42}}
    await replays(h, wid)


async def test_a_link_hears_of_a_normal_end_as_exit(h: Harness) -> None:
    """Wippy: a linked process gets EXIT when the other side completes normally (LINK_DOWN, or
    the end of an untrapped linker, is for abnormal ends only)."""
    target = await h.start_workflow("pr:finisher")
    await h.wait_idle(target)
    wid = await h.start_workflow("pr:link_only", target)
    await h.wait_type(wid, E.ExternalWorkflowExecutionMonitored)
    await h.signal(target, "finish", {"v": 7})
    assert await h.value(target) == {"v": 7}
    assert await h.value(wid) == {"kind": "EXIT", "from": target, "value": {"v": 7}}
    await replays(h, wid)


async def test_heartbeat_details_reach_the_next_attempt(h: Harness) -> None:
    wid = await h.start_workflow("pr:call_hb_retry")
    out: Any = await h.value(wid)
    assert out == {"attempt": 2, "details": {"step": 3, "note": "half way"}}
    await replays(h, wid)


async def test_workflow_retry_policy_runs_a_second_attempt(h: Harness) -> None:
    wid = "retried-1"
    policy = RetryPolicy(initial_interval_ms=20, maximum_interval_ms=50, maximum_attempts=3)
    first = await h.api.start_workflow(StartWorkflowRequest(
        workflow_id=wid, workflow_type="pr:retried", task_queue=TASK_QUEUE, input=[7],
        retry_policy=policy.to_dict()))
    assert await h.value(wid) == {"attempt": 2, "x": 7}  # follows the chain; the input is kept
    # the run chain: the first run failed, the second (same first_run_id, attempt 2) completed
    assert (await h.api.describe_workflow(ExecutionRef(wid, first.run_id))).info.status is WorkflowStatus.FAILED
    page = await h.api.get_workflow_history(GetHistoryRequest(ExecutionRef(wid, first.run_id)))
    assert page.events[-1].event_type is E.WorkflowExecutionFailed
    assert page.events[0].attrs["attempt"] == 1
    current = await h.describe(wid)
    assert current.info.run_id != first.run_id
    assert current.info.status is WorkflowStatus.COMPLETED
    started = (await h.history(wid))[0]
    assert started.event_type is E.WorkflowExecutionStarted
    assert started.attrs["attempt"] == 2 and started.attrs["first_run_id"] == first.run_id
    assert of_type(await h.history(wid), E.WorkflowExecutionCompleted)
    await replays(h, wid)


async def test_cron_waits_for_the_next_minute_and_terminate_ends_it(h: Harness) -> None:
    wid = "cron-1"
    before = int(time.time() * 1000)
    started = await h.api.start_workflow(StartWorkflowRequest(
        workflow_id=wid, workflow_type="pr:sleeper", task_queue=TASK_QUEUE, cron_schedule="* * * * *"))
    d = await h.describe(wid)
    assert d.info.status is WorkflowStatus.RUNNING
    boundary = (before // 60_000 + 1) * 60_000
    wft = d.pending_workflow_task
    if wft is not None and wft.state == "BACKOFF":  # the first run waits for the next minute
        assert wft.scheduled_time_ms % 60_000 == 0
        assert before < wft.scheduled_time_ms <= boundary + 60_000
        events = await h.history(wid)
        assert [e.event_type for e in events] == [E.WorkflowExecutionStarted]  # no workflow task yet
    else:  # started within a few ms of a minute boundary: the first run already began
        assert int(time.time() * 1000) >= boundary
    await h.api.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wid), reason="enough"))
    r = await h.result(wid)
    assert r.status is WorkflowStatus.TERMINATED  # no next cron run after a terminate
    assert r.run_id == started.run_id
    d = await h.describe(wid)
    assert d.info.run_id == started.run_id and d.info.status is WorkflowStatus.TERMINATED
    assert d.pending_workflow_task is None
