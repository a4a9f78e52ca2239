"""UpsertWorkflowSearchAttributes and ModifyWorkflowProperties (`workflow.attrs`): events, state,
describe, and visibility updated through its transfer task."""

from __future__ import annotations

import pytest

from history.state import T_VISIBILITY
from legato.api import ExecutionRef, ListWorkflowsRequest, SignalWorkflowRequest
from legato.commands import CommandType as C
from legato.events import EventType as E
from tests.unit.history.conftest import Env, cmd, complete_wf


async def test_attrs_update_describe_and_visibility(env: Env) -> None:
    await env.start("wf", search_attributes={"status": "new", "keep": 1}, memo={"notes": "x"})
    await env.run_wf("wf", cmd(C.UpsertWorkflowSearchAttributes,
                               search_attributes={"status": "processing", "customer_id": "c-9", "keep": None}),
                     cmd(C.ModifyWorkflowProperties, memo={"source": "web"}),
                     cmd(C.UpsertWorkflowSearchAttributes, search_attributes={"order_total": 12.5}))
    hist = await env.history_of("wf")
    assert [e.event_type for e in hist[4:]] == [E.UpsertWorkflowSearchAttributes, E.WorkflowPropertiesModified,
                                                E.UpsertWorkflowSearchAttributes]
    assert hist[4].attrs == {"search_attributes": {"status": "processing", "customer_id": "c-9", "keep": None},
                             "workflow_task_completed_event_id": 4}
    assert hist[5].attrs == {"memo": {"source": "web"}, "workflow_task_completed_event_id": 4}
    d = await env.history.describe_workflow(ExecutionRef("wf"))
    assert d.info.search_attributes == {"status": "processing", "customer_id": "c-9", "order_total": 12.5}
    assert d.info.memo == {"notes": "x", "source": "web"}
    await env.settle()
    vis = [t.data["info"]["sa"] for _, t in await env.transfer_tasks(T_VISIBILITY)]
    assert vis[-1] == d.info.search_attributes and len(vis) == 2  # the start, then once for the task
    listed = await env.visibility.list(ListWorkflowsRequest(query="customer_id = 'c-9'"))
    assert [e.workflow_id for e in listed.executions] == ["wf"]
    assert listed.executions[0].memo == {"notes": "x", "source": "web"}
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf"), "go"))
    await env.run_wf("wf", complete_wf())
    await env.settle()
    listed = await env.visibility.list(ListWorkflowsRequest(query="status = 'processing'"))
    assert [e.status.value for e in listed.executions] == ["COMPLETED"]


async def test_bad_attrs_are_bad_commands(env: Env) -> None:
    await env.start("wf")
    for bad, message in [
        (cmd(C.UpsertWorkflowSearchAttributes, search_attributes={"k": {"nested": True}}), "search attribute value"),
        (cmd(C.UpsertWorkflowSearchAttributes, search_attributes="x"), "search_attributes must be a mapping"),
        (cmd(C.ModifyWorkflowProperties, memo=[1]), "memo must be a mapping"),
    ]:
        wt = await env.poll_next("wf")
        with pytest.raises(Exception, match=message):
            await env.complete(wt, bad)
        await env.fire(600_000)
