"""What a poller is handed: the WorkflowTask of a workflow task just recorded as started (with
the part of the history the worker has not seen) and the ActivityTask of an activity."""

from __future__ import annotations

from typing import Any

from history.api.access import RunAccess
from history.shard import CacheEntry
from history.state import ActivityInfo, MutableState
from legato.api import ActivityTask, WorkflowTask
from legato.events import HistoryEvent
from legato.tokens import TaskToken


async def workflow_task(runs: RunAccess, entry: CacheEntry, scheduled: int, started: int, attempt: int,
                        previous: int, first: int = 1, tail: list[HistoryEvent] | None = None) -> WorkflowTask:
    """The task to hand out for a workflow task just recorded as started, with the history from
    event `first` (1, or just after the last task the worker that has the run cached completed).
    `tail`: the events of a transient task (docs/protocol.md), which end the history."""
    st = entry.state
    shard = runs.shard(st.namespace, st.workflow_id)
    end = tail[0].event_id if tail else started + 1
    if first > 1:
        history = await runs.history_slice(entry, first, end)
    else:
        history = await runs.full_history(shard, entry, end)
    if tail:
        history = history + tail
    token = TaskToken("workflow", st.namespace, st.workflow_id, st.run_id, scheduled, started, attempt).encode()
    return WorkflowTask(task_token=token, namespace=st.namespace, workflow_id=st.workflow_id, run_id=st.run_id,
                        workflow_type=st.workflow_type, task_queue=st.task_queue, attempt=attempt,
                        started_event_id=started, previous_started_event_id=previous, history=history)


def first_event_for(st: MutableState, identity: str) -> int:
    """The first event the workflow task for poller `identity` carries: the one after the last
    task it completed when it has the run cached (sticky, as Temporal does), else 1. A worker that
    lost the run meanwhile reads the rest itself (worker.py, `_with_full_history`)."""
    previous = st.last_completed_wft_started_id
    if identity and previous and st.sticky_identity == identity:
        return previous + 1
    return 1


def eager_task(st: MutableState, info: ActivityInfo, attrs: dict[str, Any]) -> ActivityTask:
    """The task of an activity started eagerly (`attrs`: its ActivityTaskScheduled attributes)."""
    sched = info.scheduled_event_id
    token = TaskToken("activity", st.namespace, st.workflow_id, st.run_id, sched, 0, info.attempt).encode()
    return ActivityTask(
        task_token=token, namespace=st.namespace, workflow_id=st.workflow_id, run_id=st.run_id,
        workflow_type=st.workflow_type, activity_id=info.activity_id, activity_type=info.activity_type,
        task_queue=info.task_queue, input=list(attrs.get("input") or []), attempt=info.attempt,
        scheduled_time_ms=info.attempt_scheduled_time_ms, started_time_ms=info.started_time_ms,
        start_to_close_timeout_ms=info.start_to_close_ms, heartbeat_timeout_ms=info.heartbeat_ms,
        heartbeat_details=info.heartbeat_details, context=dict(attrs.get("context") or {}))
