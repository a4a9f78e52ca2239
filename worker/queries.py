"""Answering a query about a run (issue 14) where its workflow code lives: in the Lua host process
(`worker.lua_host`) or, with `worker.lua_isolation: inline`, on the worker's event loop.

The one query is the built-in `__stack_trace` (`legato.api.STACK_TRACE_QUERY`): the run's live
coroutines and where each waits in the workflow code (file:line), innermost frame first.

Read-only, because replay must stay deterministic: a cached execution is only looked at
(`WorkflowCache.peek`: not taken out, not counted, not moved in the LRU order) and never
advanced; a run that is not cached is replayed in an execution of its own, up to its last
completed workflow task (what the code has seen), and disposed of afterwards: it never enters
the cache, so the run's next workflow task finds the cache as it was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from legato.api import STACK_TRACE_QUERY
from legato.config import Limits
from legato.errors import Failure, Kind
from legato.events import EventType as E
from legato.events import HistoryEvent
from legato.stack import StackError, StackReplay, completed_prefix, coroutine_view
from worker.cache import WorkflowCache
from worker.entries import EntryError, Registry, load_registry
from worker.replay import WorkflowExecution, new_execution
from worker.runtime import TaskFailure


@dataclass(slots=True)
class QueryJob:
    """A query about one run, as sent to where its code runs. `events`: its whole history, to
    replay when the run is not cached (None: answer from the cache or say not_cached)."""

    run_id: str
    workflow_type: str
    query_type: str
    namespace: str = ""
    workflow_id: str = ""
    task_queue: str = ""
    args: Any = None
    events: list[HistoryEvent] | None = None


@dataclass(slots=True)
class QueryOutcome:
    result: Any = None
    failure: Failure | None = None
    from_cache: bool = False
    not_cached: bool = False


# The run closed because its code returned (or failed, or continued as new): nothing is left to
# show. A run terminated or timed out is replayed: its coroutines as of its last completed task.
_CODE_ENDED = frozenset({E.WorkflowExecutionCompleted, E.WorkflowExecutionFailed, E.WorkflowExecutionCanceled,
                         E.WorkflowExecutionContinuedAsNew})


class ReplayError(Exception):
    """The history cannot be replayed against the code (the message says why and where)."""


def answer_query(cache: WorkflowCache, registry: Registry, limits: Limits, job: QueryJob) -> QueryOutcome:
    if job.query_type != STACK_TRACE_QUERY:
        return QueryOutcome(failure=Failure(f"unknown query type {job.query_type!r}", Kind.INVALID, False))
    ex = cache.peek(job.run_id)
    if ex is not None and ex.run is not None and not ex.broken:
        return QueryOutcome(cached_stack(ex, job.workflow_type), from_cache=True)
    if job.events is None:
        return QueryOutcome(not_cached=True)
    try:
        return QueryOutcome(replay_stack(registry, limits, job.events, job.namespace, job.workflow_id, job.run_id))
    except ReplayError as e:
        return QueryOutcome(failure=Failure(str(e), Kind.INTERNAL, False))


def cached_stack(ex: WorkflowExecution, workflow_type: str) -> dict[str, Any]:
    """The stack of a cached execution, as of the last workflow task it ran."""
    assert ex.run is not None
    seen = ex.last_started_event_id
    return {"workflow_type": workflow_type, "events": seen, "replayed_events": seen,
            "coroutines": [coroutine_view(t) for t in ex.run.stacks()]}


def replay_stack(registry: Registry, limits: Limits, events: list[HistoryEvent], namespace: str = "default",
                 workflow_id: str = "", run_id: str = "") -> dict[str, Any]:
    """Replay the completed part of `events` (`legato.stack.completed_prefix`) in an execution of
    its own; the run's coroutines. ReplayError when the code does not fit the history."""
    seen = completed_prefix(events)
    start = events[0].attrs if events else {}
    wtype = str(start.get("workflow_type", ""))
    out: dict[str, Any] = {"workflow_type": wtype, "events": len(events), "replayed_events": len(seen)}
    if events and events[-1].event_type in _CODE_ENDED:
        out["coroutines"] = []
        out["note"] = f"the workflow code has ended ({events[-1].event_type.value}): it has no coroutines"
        return out
    if not seen:
        out["coroutines"] = []
        out["note"] = "no workflow task has completed yet: the code has not run"
        return out
    ex: WorkflowExecution | None = None
    try:
        ex = new_execution(registry, wtype, limits, namespace=namespace or "default", workflow_id=workflow_id,
                           run_id=run_id, task_queue=str(start.get("task_queue", "")))
        ex.process(seen)
        run = ex.run
        out["coroutines"] = [] if run is None or ex.closed else [coroutine_view(t) for t in run.stacks()]
        if ex.closed:
            out["note"] = "the workflow code has ended: it has no coroutines"
    except TaskFailure as e:
        raise ReplayError(f"cannot replay the history against the worker's code ({e.cause}): {e.failure.message}"
                          + (f" (at {e.failure.source})" if e.failure.source else "")) from None
    finally:
        if ex is not None:
            ex.dispose()
    return out


def stack_replay(entries: str) -> StackReplay:
    """The replay `legato.stack.workflow_stack` falls back to when no worker answers: a history
    against the Lua code of the registry at `entries`, loaded afresh for each call (the code may
    have changed since the last). StackError names what does not fit."""

    def replay(events: list[HistoryEvent]) -> dict[str, Any]:
        try:
            registry = load_registry(entries)
        except EntryError as e:
            raise StackError(f"cannot load the Lua code of {entries}: {e}") from None
        try:
            return replay_stack(registry, Limits(), events)
        except ReplayError as e:
            raise StackError(f"{e} (the code of {entries})") from None

    return replay
