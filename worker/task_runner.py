"""Running one workflow task against the workflow cache: the Lua side of a workflow task.

`TaskRunner.run(task)` takes the run's cached execution (or replays a new one from the task's
history), runs the task and returns the response to send, with what became of the cache. It is
used inside the Lua host process (`worker.lua_host`, the default) and, with
`worker.lua_isolation: inline`, directly on the worker's event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from legato.api import RespondWorkflowTaskCompletedRequest, RespondWorkflowTaskFailedRequest, WorkflowTask
from legato.config import Limits
from legato.errors import Failure, Kind
from worker.cache import WorkflowCache
from worker.entries import Registry
from worker.replay import WorkflowExecution
from worker.runtime import TaskFailure

log = logging.getLogger("legato.worker")

WorkflowResponse = RespondWorkflowTaskCompletedRequest | RespondWorkflowTaskFailedRequest

# A failure's message is for people: code that raises megabytes of text gets the start of it.
MAX_FAILURE_MESSAGE_CHARS = 8 * 1024


def shortened(failure: Failure) -> Failure:
    m = failure.message
    if len(m) <= MAX_FAILURE_MESSAGE_CHARS:
        return failure
    failure.message = f"{m[:MAX_FAILURE_MESSAGE_CHARS]}... ({len(m)} characters in all)"
    return failure


@dataclass(slots=True)
class TaskOutcome:
    response: WorkflowResponse | None  # None: needs_history
    cached: bool  # the run's execution stays in the cache for its next task
    evicted: list[str] = field(default_factory=list)  # runs the cache dropped to make room
    hit: bool = False  # the task continued a cached execution
    cache_bytes: int = 0  # the Lua memory of the runs cached by the runner after this task
    # The task carries only the events after the last task (sticky) but the run is not cached
    # here as it was then: run it again with the whole history.
    needs_history: bool = False


def is_partial(task: WorkflowTask) -> bool:
    """Whether the task carries only the events after the last task (a sticky task)."""
    return bool(task.history) and task.history[0].event_id > 1


def _sized(task: WorkflowTask) -> bool:
    """A sticky task's WorkflowTaskStarted says the size of the history before it (the server
    of a sticky task writes it; without it the size would need the whole history)."""
    return "history_size_bytes" in task.history[-1].attrs


class TaskRunner:
    def __init__(self, registry: Registry, limits: Limits, cache: WorkflowCache, identity: str) -> None:
        self.registry = registry
        self.limits = limits
        self.cache = cache
        self.identity = identity

    def run(self, task: WorkflowTask) -> TaskOutcome:
        outcome = self._run(task)
        outcome.cache_bytes = self.cache.bytes_used
        return outcome

    def _run(self, task: WorkflowTask) -> TaskOutcome:
        ex = self.cache.take(task.run_id)
        hit = ex is not None
        if ex is not None and not ex.can_continue(task.history, task.previous_started_event_id):
            ex.dispose()
            ex, hit = None, False
        if is_partial(task):
            if ex is None or not _sized(task):
                if ex is not None:
                    ex.dispose()
                return TaskOutcome(None, False, needs_history=True)
        if ex is not None:
            ex.rebase(task.history)
        else:
            entry = self.registry.workflow_for_type(task.workflow_type)
            if entry is None:
                return TaskOutcome(self.failed(task, "WORKFLOW_ERROR", Failure(
                    f"workflow type {task.workflow_type!r} is not registered on this worker "
                    f"(task queue {task.task_queue})", Kind.NOT_FOUND, False)), False)
            ex = WorkflowExecution(entry, self.registry, self.limits, namespace=task.namespace,
                                   workflow_id=task.workflow_id, run_id=task.run_id, task_queue=task.task_queue)
        try:
            commands = ex.process(task.history)
        except TaskFailure as err:
            ex.dispose()
            log.info("workflow task of %s/%s failed: %s", task.workflow_id, task.run_id, err)
            return TaskOutcome(self.failed(task, err.cause, err.failure), False, hit=hit)
        except Exception as err:
            ex.dispose()
            log.exception("internal error in workflow task of %s/%s", task.workflow_id, task.run_id)
            return TaskOutcome(self.failed(task, "WORKFLOW_ERROR", Failure(
                f"internal worker error: {type(err).__name__}: {err}", Kind.INTERNAL, False)), False, hit=hit)
        evicted = self.cache.put(task.run_id, ex)  # a closed run is disposed of instead
        return TaskOutcome(RespondWorkflowTaskCompletedRequest(task.task_token, commands, self.identity),
                           task.run_id in self.cache, evicted, hit)

    def failed(self, task: WorkflowTask, cause: str, failure: Failure) -> RespondWorkflowTaskFailedRequest:
        return RespondWorkflowTaskFailedRequest(task.task_token, cause, shortened(failure), self.identity)
