"""The Lua call stack of a workflow run: its coroutines and where each waits (file:line),
innermost frame first. `legato workflow stack` and the web UI's stack view (GET
.../workflows/{id}/stack of the HTTP API) both use it.

The stack comes from a worker (issue 14): the built-in query `__stack_trace`
(`WorkflowService.query_workflow`, frontend/queries.py) is answered by the worker that has the run
cached ("source": "worker-cache") or by one that replays the history ("worker-replay"). Only when
no worker answers and the caller has the Lua code itself (the frontend's `ui.entries`, the CLI's
`--entries`) is the history replayed here instead ("frontend-replay", "client-replay"), up to its
last completed workflow task, as a worker that does not have the run cached would do. That
replay is the worker's code (`worker.queries.stack_replay`): whoever assembles the frontend or
the CLI passes it in, so this module, shared by every service, needs none of the worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from legato import api
from legato.events import COMMAND_EVENTS, HistoryEvent
from legato.events import EventType as E

# Replays a history's completed part against the workflow's Lua code: the run's coroutines
# (`worker.queries.replay_stack`'s report); StackError when the code does not fit the history.
StackReplay = Callable[[list[HistoryEvent]], dict[str, Any]]


class StackError(Exception):
    """The history cannot be replayed against the code (its message says why and where)."""


def completed_prefix(events: list[HistoryEvent]) -> list[HistoryEvent]:
    """The history up to the command events of its last completed workflow task (what the code
    has seen); a task in flight and the events after it are left for the code to see later."""
    end = 0
    for i in range(len(events) - 1):
        if events[i].event_type is E.WorkflowTaskStarted and events[i + 1].event_type is E.WorkflowTaskCompleted:
            j = i + 2
            while j < len(events) and events[j].event_type in COMMAND_EVENTS:
                j += 1
            end = j
    return events[:end]


def coroutine_view(t: dict[str, Any]) -> dict[str, Any]:
    """A coroutine as the kernel lists it (`WorkflowRun.stacks`), as the report shows it."""
    frames = t.get("frames") or []
    if isinstance(frames, dict):  # an empty Lua table
        frames = list(frames.values())
    return {"id": t.get("id"), "main": bool(t.get("main")), "status": t.get("status"),
            "frames": [{"source": f.get("source"), "line": f.get("line"), "function": f.get("name")} for f in frames]}


async def workflow_stack(service: api.WorkflowService, ref: api.ExecutionRef, replay: StackReplay | None = None, *,
                         replay_source: api.QuerySource = api.QuerySource.FRONTEND_REPLAY,
                         timeout_ms: int = 0) -> dict[str, Any]:
    """The stack report of a run, with its workflow_id, run_id, status and source: asked of a
    worker, or (when none answered in time and there is a `replay`) replayed here.
    DeadlineExceeded when no worker answered and there is no `replay`; StackError when the
    history cannot be replayed against the code."""
    from legato.errors import DeadlineExceeded

    try:
        resp = await service.query_workflow(api.QueryWorkflowRequest(ref, api.STACK_TRACE_QUERY,
                                                                     timeout_ms=timeout_ms))
    except DeadlineExceeded:
        if replay is None:
            raise
        return await _replayed_here(service, ref, replay, replay_source)
    report = dict(resp.result) if isinstance(resp.result, dict) else {"coroutines": []}
    report.update(workflow_id=ref.workflow_id, run_id=resp.run_id, status=resp.status.value, source=resp.source,
                  worker=resp.worker)
    _note_closed(report, resp.status)
    return report


async def _replayed_here(service: api.WorkflowService, ref: api.ExecutionRef, replay: StackReplay,
                         source: api.QuerySource) -> dict[str, Any]:
    from legato.lineage import read_history

    events = await read_history(service, ref)
    info = (await service.describe_workflow(ref)).info
    if not events:
        raise StackError(f"workflow {ref.workflow_id} has no history")
    # in a thread (which has a Lua state of its own, worker.runtime.thread_vm): a long replay
    # does not hold up the server's other requests
    report = await asyncio.to_thread(replay, events)
    report.update(workflow_id=ref.workflow_id, run_id=info.run_id, status=info.status.value, source=source.value,
                  worker="")
    _note_closed(report, info.status)
    return report


def _note_closed(report: dict[str, Any], status: api.WorkflowStatus) -> None:
    if status is not api.WorkflowStatus.RUNNING and not report.get("note"):
        report["note"] = (f"the run is closed ({status.value}): these are its coroutines as of its last completed "
                          "workflow task")
