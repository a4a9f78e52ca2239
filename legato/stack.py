"""The Lua call stack of a running workflow, by replaying its history: the coroutines of the run
and where each waits (file:line), innermost frame first. `legato workflow stack` and the web UI's
stack view (GET .../workflows/{id}/stack of the HTTP API) both use it.

The history is replayed against the Lua code of a registry (`worker.entries`) up to its last
completed workflow task, as a worker that does not have the run cached would do
(`worker.replay`); then each live coroutine's frames in the workflow code are listed.
"""

from __future__ import annotations

import asyncio
from typing import Any

from legato import api
from legato.events import COMMAND_EVENTS, HistoryEvent
from legato.events import EventType as E


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


def stack_report(entries: str, events: list[HistoryEvent]) -> dict[str, Any]:
    """Replay the completed part of `events` against `entries`; the run's coroutines."""
    from worker.entries import EntryError, load_registry
    from worker.replay import new_execution
    from worker.runtime import TaskFailure

    try:
        registry = load_registry(entries)
    except EntryError as e:
        raise StackError(f"cannot load the Lua code of {entries}: {e}") from None
    seen = completed_prefix(events)
    start = events[0].attrs if events else {}
    wtype = str(start.get("workflow_type", ""))
    out: dict[str, Any] = {"workflow_type": wtype, "events": len(events), "replayed_events": len(seen)}
    if not seen:
        out["coroutines"] = []
        out["note"] = "no workflow task has completed yet: the code has not run"
        return out
    try:
        ex = new_execution(registry, wtype, task_queue=str(start.get("task_queue", "")))
        ex.process(seen)
    except TaskFailure as e:
        raise StackError(f"cannot replay the history against {entries} ({e.cause}): {e.failure.message}"
                       + (f" (at {e.failure.source})" if e.failure.source else "")) from None
    run = ex.run
    out["coroutines"] = [] if run is None or ex.closed else [_coroutine(t) for t in run.stacks()]
    if run is not None:
        run.dispose()
    return out


def _coroutine(t: dict[str, Any]) -> dict[str, Any]:
    frames = t.get("frames") or []
    if isinstance(frames, dict):  # an empty Lua table
        frames = list(frames.values())
    return {"id": t.get("id"), "main": bool(t.get("main")), "status": t.get("status"),
            "frames": [{"source": f.get("source"), "line": f.get("line"), "function": f.get("name")} for f in frames]}


async def workflow_stack(service: api.WorkflowService, ref: api.ExecutionRef, entries: str) -> dict[str, Any]:
    """The stack report of a run (`stack_report`) read through `service`, with its workflow_id,
    run_id and status; a closed run has no coroutines (and a note saying so). StackError when
    the run has no history or cannot be replayed against `entries`."""
    from legato.lineage import read_history

    events = await read_history(service, ref)
    info = (await service.describe_workflow(ref)).info
    if not events:
        raise StackError(f"workflow {ref.workflow_id} has no history")
    if info.status is api.WorkflowStatus.RUNNING:
        # in a thread (which has a Lua state of its own, worker.runtime.thread_vm): a long replay
        # does not hold up the server's other requests
        report = await asyncio.to_thread(stack_report, entries, events)
    else:
        report = {"workflow_type": info.workflow_type, "events": len(events), "replayed_events": 0,
                  "coroutines": [], "note": f"the run is closed ({info.status.value}): it has no coroutines"}
    report.update(workflow_id=ref.workflow_id, run_id=info.run_id, status=info.status.value)
    return report
