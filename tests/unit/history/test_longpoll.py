"""Long-polls: woken by commits (no polling loops), bounded by their timeout."""

from __future__ import annotations

import asyncio

from legato.api import ExecutionRef, GetHistoryRequest, GetResultRequest, SignalWorkflowRequest, WorkflowStatus
from legato.events import EventType as E
from tests.unit.history.conftest import Env, complete_wf


async def test_history_long_poll_returns_when_a_new_event_arrives(env: Env) -> None:
    run_id = await env.start("wf-1")
    first = await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1")))
    assert first.next_event_id == 3 and not first.closed and first.run_id == run_id
    poll = asyncio.create_task(env.history.get_workflow_history(GetHistoryRequest(
        ExecutionRef("wf-1"), first_event_id=first.next_event_id, wait_new_event=True, timeout_ms=10_000)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not poll.done()
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
    resp = await asyncio.wait_for(poll, 5)
    assert [e.event_type for e in resp.events] == [E.WorkflowExecutionSignaled]
    assert resp.next_event_id == 4


async def test_history_long_poll_times_out_empty(env: Env) -> None:
    await env.start("wf-1")
    resp = await env.history.get_workflow_history(GetHistoryRequest(
        ExecutionRef("wf-1"), first_event_id=3, wait_new_event=True, timeout_ms=20))
    assert resp.events == [] and resp.next_event_id == 3 and not resp.closed


async def test_history_paging(env: Env) -> None:
    await env.start("wf-1")
    for i in range(5):
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), f"s{i}"))
    ids: list[int] = []
    nxt = 1
    while True:
        page = await env.history.get_workflow_history(GetHistoryRequest(ExecutionRef("wf-1"), first_event_id=nxt,
                                                                        page_size=3))
        if not page.events:
            break
        ids += [e.event_id for e in page.events]
        nxt = page.next_event_id
    assert ids == list(range(1, 8))


async def test_history_of_closed_run_does_not_wait(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    await env.complete(wt, complete_wf())
    resp = await env.history.get_workflow_history(GetHistoryRequest(
        ExecutionRef("wf-1"), first_event_id=6, wait_new_event=True, timeout_ms=60_000))
    assert resp.closed and resp.events == []


async def test_result_long_poll_returns_on_close(env: Env) -> None:
    await env.start("wf-1")
    wt = await env.poll_wft("wf-1")
    waiter = asyncio.create_task(env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"),
                                                                                  timeout_ms=10_000)))
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiter.done()
    await env.complete(wt, complete_wf([1, 2]))
    res = await asyncio.wait_for(waiter, 5)
    assert res.status == WorkflowStatus.COMPLETED and res.result == [1, 2]


async def test_result_long_poll_times_out_running(env: Env) -> None:
    await env.start("wf-1")
    res = await env.history.get_workflow_result(GetResultRequest(ExecutionRef("wf-1"), timeout_ms=20))
    assert res.status == WorkflowStatus.RUNNING and res.result is None
