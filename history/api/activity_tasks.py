"""Activity tasks: RecordActivityTaskStarted, RespondActivityTaskCompleted (which may start the
workflow task it schedules for the same worker), RespondActivityTaskFailed,
RespondActivityTaskCanceled and RecordActivityHeartbeat."""

from __future__ import annotations

from typing import Any

from history.api.access import RunAccess
from history.api.checks import check_task_started, check_token
from history.api.handed_tasks import first_event_for, workflow_task
from history.shard import CacheEntry
from history.state import STARTED, Mutation
from legato.api import (
    ActivityTask,
    RecordActivityHeartbeatRequest,
    RecordActivityHeartbeatResponse,
    RespondActivityTaskCanceledRequest,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskCompletedResponse,
    RespondActivityTaskFailedRequest,
    TaskInfo,
    TaskKind,
)
from legato.errors import FailedPrecondition, Failure, InvalidArgument, NotFound, Unavailable
from legato.ids import new_request_id
from legato.tokens import TaskToken


async def record_activity_task_started(runs: RunAccess, task: TaskInfo, request_id: str,
                                       identity: str) -> ActivityTask:
    check_task_started(task, TaskKind.ACTIVITY, request_id)

    def fn(m: Mutation, entry: CacheEntry) -> dict[str, Any]:
        st = m.state
        where = (f"activity task (scheduled event {task.scheduled_event_id}, attempt {task.attempt}) of "
                 f"{st.workflow_id}/{st.run_id}")
        if not st.running:
            raise NotFound(f"{where}: the run is already closed ({st.status})", reason="WorkflowClosed")
        info = st.activities.get(task.scheduled_event_id)
        if info is None:
            raise NotFound(f"{where}: the activity is no longer pending (stale task)", reason="StaleTask")
        if info.attempt != task.attempt:
            raise NotFound(f"{where}: stale attempt (the activity is at attempt {info.attempt})",
                           reason="StaleTask")
        if info.state == STARTED:
            if info.request_id != request_id:
                raise FailedPrecondition(f"{where}: already started by another poller "
                                         f"({info.identity or 'unknown'})", reason="TaskAlreadyStarted")
        elif info.state != "SCHEDULED":
            raise NotFound(f"{where}: the activity is waiting to retry (stale task)", reason="StaleTask")
        else:
            runs.engine.activity_started(m, info, request_id, identity)
        return {"activity_id": info.activity_id, "activity_type": info.activity_type,
                "task_queue": info.task_queue, "attempt": info.attempt,
                "scheduled": info.attempt_scheduled_time_ms, "started": info.started_time_ms,
                "stc": info.start_to_close_ms, "hb": info.heartbeat_ms, "details": info.heartbeat_details,
                "next": st.next_event_id}

    snap, entry = await runs.update(task.namespace, task.workflow_id, task.run_id, fn)
    st = entry.state
    sched = task.scheduled_event_id
    evs = await runs.read_events(entry, sched, snap["next"], 1)
    if not evs or evs[0].event_id != sched:
        raise Unavailable(f"activity task of {st.workflow_id}/{st.run_id}: its ActivityTaskScheduled event "
                          f"{sched} is missing", reason="StoreError")
    attrs = evs[0].attrs
    token = TaskToken("activity", st.namespace, st.workflow_id, st.run_id, sched, 0, snap["attempt"]).encode()
    return ActivityTask(
        task_token=token, namespace=st.namespace, workflow_id=st.workflow_id, run_id=st.run_id,
        workflow_type=st.workflow_type, activity_id=snap["activity_id"], activity_type=snap["activity_type"],
        task_queue=snap["task_queue"], input=list(attrs.get("input") or []), attempt=snap["attempt"],
        scheduled_time_ms=snap["scheduled"], started_time_ms=snap["started"],
        start_to_close_timeout_ms=snap["stc"], heartbeat_timeout_ms=snap["hb"],
        heartbeat_details=snap["details"], context=dict(attrs.get("context") or {}))


async def respond_activity_task_completed(
        runs: RunAccess, req: RespondActivityTaskCompletedRequest) -> RespondActivityTaskCompletedResponse:
    tok = check_token(req.task_token, "activity")
    request_id = new_request_id() if req.return_workflow_task is True else ""

    def fn(m: Mutation, entry: CacheEntry) -> tuple[int, int, int, int, int]:
        info = runs.engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
        runs.engine.activity_completed(m, info, req.result, req.identity)
        if request_id:
            # The caller has the run cached: the workflow task this completion scheduled (if it
            # did) is started for it now, in this same write, instead of going through matching.
            w = runs.engine.start_new_wft(m, request_id, req.identity)
            if w is not None:
                st = m.state
                return (w.scheduled_event_id, w.started_event_id, w.attempt, st.last_completed_wft_started_id,
                        first_event_for(st, req.identity))
        return 0, 0, 0, 0, 1

    (sched, started, attempt, previous, first), entry = await runs.update(tok.namespace, tok.workflow_id,
                                                                           tok.run_id, fn)
    if not started:
        return RespondActivityTaskCompletedResponse()
    return RespondActivityTaskCompletedResponse(
        workflow_task=await workflow_task(runs, entry, sched, started, attempt, previous, first))


async def respond_activity_task_failed(runs: RunAccess, req: RespondActivityTaskFailedRequest) -> None:
    tok = check_token(req.task_token, "activity")
    if not isinstance(req.failure, Failure):
        raise InvalidArgument("respond activity task failed: failure must be a Failure")

    def fn(m: Mutation, entry: CacheEntry) -> None:
        info = runs.engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
        runs.engine.activity_failed(m, info, req.failure, req.identity)

    await runs.update(tok.namespace, tok.workflow_id, tok.run_id, fn)


async def respond_activity_task_canceled(runs: RunAccess, req: RespondActivityTaskCanceledRequest) -> None:
    tok = check_token(req.task_token, "activity")

    def fn(m: Mutation, entry: CacheEntry) -> None:
        info = runs.engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
        runs.engine.activity_canceled(m, info, req.details, req.identity)

    await runs.update(tok.namespace, tok.workflow_id, tok.run_id, fn)


async def record_activity_heartbeat(runs: RunAccess,
                                    req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse:
    tok = check_token(req.task_token, "activity")

    def fn(m: Mutation, entry: CacheEntry) -> bool:
        info = runs.engine.check_activity_token(m.state, tok.scheduled_event_id, tok.attempt)
        runs.engine.heartbeat(m, info, req.details)
        return info.cancel_requested

    cancel, _ = await runs.update(tok.namespace, tok.workflow_id, tok.run_id, fn)
    return RecordActivityHeartbeatResponse(cancel_requested=cancel)
