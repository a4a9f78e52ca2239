"""A run's place in its family: the children it started, read from its own history (shared by
`legato workflow trace` and the HTTP API's children route).

The children come from the parent's own history: StartChildWorkflowExecutionInitiated names each
child (id, type, namespace), ChildWorkflowExecutionStarted gives its run id, and the
ChildWorkflowExecution{Completed,Failed,...} / StartChildWorkflowExecutionFailed event its outcome.
The history is the reliable source: it is written in the same commit as the parent's decision, is
complete and ordered, and is there for as long as the parent's run is; visibility does not record
the parent of a run (no ParentWorkflowId field to query), and it is written later, by a queue.
The parent of a run is in its mutable state: `DescribeWorkflowResponse.parent`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from legato.api import ExecutionRef, GetHistoryRequest, WorkflowService, WorkflowStatus
from legato.events import EventType, HistoryEvent

E = EventType

STARTING = "STARTING"  # initiated, not started yet
START_FAILED = "START_FAILED"
HISTORY_PAGE = 1000  # events per read of `read_history`

CLOSE_STATUS = {
    E.WorkflowExecutionCompleted: WorkflowStatus.COMPLETED.value,
    E.WorkflowExecutionFailed: WorkflowStatus.FAILED.value,
    E.WorkflowExecutionTimedOut: WorkflowStatus.TIMED_OUT.value,
    E.WorkflowExecutionCanceled: WorkflowStatus.CANCELED.value,
    E.WorkflowExecutionTerminated: WorkflowStatus.TERMINATED.value,
    E.WorkflowExecutionContinuedAsNew: WorkflowStatus.CONTINUED_AS_NEW.value,
}
CHILD_CLOSE_STATUS = {
    E.ChildWorkflowExecutionCompleted: WorkflowStatus.COMPLETED.value,
    E.ChildWorkflowExecutionFailed: WorkflowStatus.FAILED.value,
    E.ChildWorkflowExecutionCanceled: WorkflowStatus.CANCELED.value,
    E.ChildWorkflowExecutionTerminated: WorkflowStatus.TERMINATED.value,
    E.ChildWorkflowExecutionTimedOut: WorkflowStatus.TIMED_OUT.value,
}


@dataclass(slots=True)
class Node:
    """A run in a tree of children: what its parent's history (or its own) says of it."""

    workflow_id: str
    run_id: str
    workflow_type: str
    namespace: str
    status: str  # a WorkflowStatus value, STARTING or START_FAILED
    failure: str = ""
    children: list[Node] | None = None  # None: not read (beyond --depth, or not started)

    def settled(self) -> bool:
        """Completed, and so is everything under it that was read."""
        return self.status == WorkflowStatus.COMPLETED.value and all(c.settled() for c in self.children or [])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"workflow_id": self.workflow_id, "run_id": self.run_id,
                               "workflow_type": self.workflow_type, "namespace": self.namespace,
                               "status": self.status}
        if self.failure:
            out["failure"] = self.failure
        out["children"] = None if self.children is None else [c.to_dict() for c in self.children]
        return out


def _failure_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("message") or "")
    return "" if value is None else str(value)


def children_of(events: list[HistoryEvent], namespace: str) -> list[Node]:
    """The children a run started, in the order it started them, with what its history knows."""
    by_init: dict[int, Node] = {}
    for e in events:
        a = e.attrs
        if e.event_type is E.StartChildWorkflowExecutionInitiated:
            by_init[e.event_id] = Node(str(a.get("workflow_id", "")), "", str(a.get("workflow_type", "")),
                                       str(a.get("namespace") or namespace), STARTING)
            continue
        node = by_init.get(int(a.get("initiated_event_id", 0) or 0))
        if node is None:
            continue
        if e.event_type is E.ChildWorkflowExecutionStarted:
            node.run_id = str(a.get("run_id", ""))
            node.status = WorkflowStatus.RUNNING.value
        elif e.event_type is E.StartChildWorkflowExecutionFailed:
            node.status = START_FAILED
            node.failure = _failure_text(a.get("failure"))
        elif e.event_type in CHILD_CLOSE_STATUS:
            node.run_id = str(a.get("run_id") or node.run_id)
            node.status = CHILD_CLOSE_STATUS[e.event_type]
            node.failure = _failure_text(a.get("failure"))
    return list(by_init.values())


def status_of(events: list[HistoryEvent]) -> tuple[str, str]:
    """A run's status (and failure message) from its own history."""
    for e in reversed(events[-3:]):
        if e.event_type in CLOSE_STATUS:
            return CLOSE_STATUS[e.event_type], _failure_text(e.attrs.get("failure") or e.attrs.get("reason"))
    return WorkflowStatus.RUNNING.value, ""


async def read_history(client: WorkflowService, ref: ExecutionRef) -> list[HistoryEvent]:
    """The whole history of a run (of the current run when `ref.run_id` is empty: pinned after the
    first page, so that the pages are of one run)."""
    events: list[HistoryEvent] = []
    first = 1
    while True:
        page = await client.get_workflow_history(GetHistoryRequest(ref, first_event_id=first, page_size=HISTORY_PAGE))
        events.extend(page.events)
        if not page.events or page.next_event_id <= first:
            return events
        first = page.next_event_id
        if ref.run_id == "":
            ref = ExecutionRef(ref.workflow_id, page.run_id, ref.namespace)


__all__ = [
    "CHILD_CLOSE_STATUS",
    "CLOSE_STATUS",
    "STARTING",
    "START_FAILED",
    "Node",
    "children_of",
    "read_history",
    "status_of",
]
