"""Workflow tasks: RecordWorkflowTaskStarted (matching hands a task to a poller),
RespondWorkflowTaskCompleted and RespondWorkflowTaskFailed."""

from __future__ import annotations

from history.api.access import RunAccess
from history.api.checks import check_task_started, check_token
from history.api.handed_tasks import eager_task, first_event_for, workflow_task
from history.engine import WORKER_CAUSES, HistoryLimitExceeded
from history.shard import CacheEntry
from history.state import STARTED, Mutation
from legato.api import (
    ActivityTask,
    RespondWorkflowTaskCompletedRequest,
    RespondWorkflowTaskCompletedResponse,
    RespondWorkflowTaskFailedRequest,
    TaskInfo,
    TaskKind,
    WorkflowTask,
)
from legato.errors import FailedPrecondition, Failure, InvalidArgument, NotFound, ServiceError
from legato.events import HistoryEvent


async def record_workflow_task_started(runs: RunAccess, task: TaskInfo, request_id: str,
                                       identity: str) -> WorkflowTask:
    check_task_started(task, TaskKind.WORKFLOW, request_id)

    def fn(m: Mutation, entry: CacheEntry) -> tuple[int, int, int, int, list[HistoryEvent]]:
        st = m.state
        where = f"workflow task (scheduled event {task.scheduled_event_id}) of {st.workflow_id}/{st.run_id}"
        if not st.running:
            raise NotFound(f"{where}: the run is already closed ({st.status})", reason="WorkflowClosed")
        w = st.wft
        if w is None or w.scheduled_event_id != task.scheduled_event_id or w.attempt != task.attempt:
            raise NotFound(f"{where}: the task is no longer pending (stale task)", reason="StaleTask")
        if w.state == STARTED:
            if w.request_id == request_id:  # the same poll again: the same task
                return (w.started_event_id, w.attempt, st.last_completed_wft_started_id,
                        first_event_for(st, identity), runs.engine.transient_events(st))
            raise FailedPrecondition(f"{where}: already started by another poller ({w.identity or 'unknown'})",
                                     reason="TaskAlreadyStarted")
        started = runs.engine.wft_started(m, request_id, identity)
        return (started, w.attempt, st.last_completed_wft_started_id, first_event_for(st, identity),
                runs.engine.transient_events(st))

    (started, attempt, previous, first, tail), entry = await runs.update(task.namespace, task.workflow_id,
                                                                         task.run_id, fn)
    return await workflow_task(runs, entry, task.scheduled_event_id, started, attempt, previous, first, tail)


async def respond_workflow_task_completed(
        runs: RunAccess, req: RespondWorkflowTaskCompletedRequest) -> RespondWorkflowTaskCompletedResponse:
    tok = check_token(req.task_token, "workflow")
    engine = runs.engine

    def fn(m: Mutation, entry: CacheEntry) -> tuple[ServiceError | None, list[ActivityTask]]:
        engine.check_wft_token(m.state, tok.scheduled_event_id, tok.started_event_id, tok.attempt)
        err = engine.complete_wft(m, req.commands, req.identity)
        return err, [eager_task(m.state, info, attrs) for info, attrs in m.eager]

    try:
        (err, eager), _ = await runs.update(tok.namespace, tok.workflow_id, tok.run_id, fn)
    except HistoryLimitExceeded as e:
        message = e.message

        def terminate(m: Mutation, entry: CacheEntry) -> None:
            engine.check_wft_token(m.state, tok.scheduled_event_id, tok.started_event_id, tok.attempt)
            engine.terminate_for_history_limit(m, message, req.identity)

        await runs.update(tok.namespace, tok.workflow_id, tok.run_id, terminate)
        return RespondWorkflowTaskCompletedResponse()
    if err is not None:
        raise err
    return RespondWorkflowTaskCompletedResponse(activity_tasks=eager)


async def respond_workflow_task_failed(runs: RunAccess, req: RespondWorkflowTaskFailedRequest) -> None:
    tok = check_token(req.task_token, "workflow")
    if req.cause not in WORKER_CAUSES:
        raise InvalidArgument(f"respond workflow task failed: unknown cause {req.cause!r} (use one of "
                              f"{', '.join(sorted(WORKER_CAUSES))})")
    if not isinstance(req.failure, Failure):
        raise InvalidArgument("respond workflow task failed: failure must be a Failure")

    def fn(m: Mutation, entry: CacheEntry) -> None:
        runs.engine.check_wft_token(m.state, tok.scheduled_event_id, tok.started_event_id, tok.attempt)
        runs.engine.fail_wft(m, req.cause, req.failure, req.identity)

    await runs.update(tok.namespace, tok.workflow_id, tok.run_id, fn)
