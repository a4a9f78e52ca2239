"""Reading a run: DescribeWorkflow, the query target, GetWorkflowHistory and GetWorkflowResult
(both long polls, woken by the commits they wait for; no polling)."""

from __future__ import annotations

import asyncio

from history.api.access import RunAccess, wait_for_change
from history.api.checks import check_ref
from history.state import MutableState
from legato import api
from legato.api import (
    DescribeWorkflowResponse,
    ExecutionRef,
    GetHistoryRequest,
    GetHistoryResponse,
    GetResultRequest,
    GetResultResponse,
    ParentInfo,
    PendingActivityInfo,
    PendingWorkflowTaskInfo,
    WorkflowStatus,
)
from legato.errors import Failure, InvalidArgument

MAX_HISTORY_PAGE = 10_000  # events per GetWorkflowHistory page, at most
DEFAULT_HISTORY_PAGE = 1000  # ... when the caller names none


async def describe_workflow(runs: RunAccess, ref: ExecutionRef) -> DescribeWorkflowResponse:
    ref = check_ref(ref, "describe")
    shard = runs.shard(ref.namespace, ref.workflow_id)
    async with shard.lock(ref.namespace, ref.workflow_id):
        st = (await runs.load(shard, ref.namespace, ref.workflow_id, ref.run_id)).state
        return _describe(st)


async def get_query_target(runs: RunAccess, ref: ExecutionRef) -> api.QueryTarget:
    """Where a query about the run goes: its task queue and the worker that has it cached (the
    sticky worker, "" when none). Read-only."""
    ref = check_ref(ref, "query")
    shard = runs.shard(ref.namespace, ref.workflow_id)
    async with shard.lock(ref.namespace, ref.workflow_id):
        st = (await runs.load(shard, ref.namespace, ref.workflow_id, ref.run_id)).state
        return api.QueryTarget(st.run_id, st.workflow_type, st.task_queue, WorkflowStatus(st.status),
                               st.sticky_identity)


async def get_workflow_history(runs: RunAccess, req: GetHistoryRequest) -> GetHistoryResponse:
    ref = check_ref(req.ref, "get history")
    if not isinstance(req.first_event_id, int) or req.first_event_id < 1:
        raise InvalidArgument(f"get history: first_event_id must be >= 1, got {req.first_event_id!r}")
    page = req.page_size if isinstance(req.page_size, int) and req.page_size > 0 else DEFAULT_HISTORY_PAGE
    page = min(page, MAX_HISTORY_PAGE)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0, req.timeout_ms) / 1000.0
    run_id = ref.run_id
    while True:
        shard = runs.shard(ref.namespace, ref.workflow_id)
        fut: asyncio.Future[None] | None = None
        async with shard.lock(ref.namespace, ref.workflow_id):
            entry = await runs.load(shard, ref.namespace, ref.workflow_id, run_id)
            st = entry.state
            run_id = st.run_id
            end, closed = st.next_event_id, not st.running
            remaining = deadline - loop.time()
            if req.wait_new_event and req.first_event_id >= end and not closed and remaining > 0:
                fut = runs.changes.waiter(st.key)
        if fut is None:
            events = await runs.read_events(entry, req.first_event_id, end, page)
            return GetHistoryResponse(run_id, events, req.first_event_id + len(events), closed)
        try:
            await wait_for_change(fut, remaining)
        finally:
            runs.changes.discard(st.key, fut)


async def get_workflow_result(runs: RunAccess, req: GetResultRequest) -> GetResultResponse:
    ref = check_ref(req.ref, "get result")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max(0, req.timeout_ms) / 1000.0
    run_id = ref.run_id
    while True:
        shard = runs.shard(ref.namespace, ref.workflow_id)
        async with shard.lock(ref.namespace, ref.workflow_id):
            st = (await runs.load(shard, ref.namespace, ref.workflow_id, run_id)).state
            run_id = st.run_id
            if not st.running and st.next_run_id and not ref.run_id:
                run_id = st.next_run_id  # without a run id: follow continue-as-new, retries and cron
                continue
            if not st.running:
                return GetResultResponse(
                    st.run_id, WorkflowStatus(st.status), result=st.result,
                    failure=Failure.from_dict(st.failure) if st.failure else None)
            if req.return_on_task_failure and st.last_wft_failure is not None:
                return GetResultResponse(st.run_id, WorkflowStatus.RUNNING,
                                         task_failure=Failure.from_dict(st.last_wft_failure))
            remaining = deadline - loop.time()
            if remaining <= 0:
                return GetResultResponse(st.run_id, WorkflowStatus.RUNNING)
            fut = runs.closers.waiter(st.key)
        try:
            await wait_for_change(fut, remaining)
        finally:
            runs.closers.discard(st.key, fut)


def _describe(st: MutableState) -> DescribeWorkflowResponse:
    w = st.wft
    pending_wft = None
    if w is not None:
        pending_wft = PendingWorkflowTaskInfo(scheduled_event_id=w.scheduled_event_id, state=w.state,
                                              attempt=w.attempt, scheduled_time_ms=w.scheduled_time_ms,
                                              started_time_ms=w.started_time_ms)
    acts = [PendingActivityInfo(
        activity_id=a.activity_id, activity_type=a.activity_type, scheduled_event_id=a.scheduled_event_id,
        state=a.state, attempt=a.attempt, last_failure=Failure.from_dict(a.last_failure) if a.last_failure else None,
        scheduled_time_ms=a.attempt_scheduled_time_ms, last_started_time_ms=a.started_time_ms)
        for a in st.activities.values()]
    return DescribeWorkflowResponse(
        info=st.info(), pending_activities=acts, pending_workflow_task=pending_wft,
        last_workflow_task_failure=Failure.from_dict(st.last_wft_failure) if st.last_wft_failure else None,
        pending_timers=len(st.timers), result=st.result,
        failure=Failure.from_dict(st.failure) if st.failure else None,
        parent=ParentInfo.from_dict(st.parent) if st.parent else None)
