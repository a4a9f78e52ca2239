"""Commands: what a workflow task asks history to do. Each maps to one history event.

Like events, attributes are JSON-able dicts whose keys are listed in `ATTRIBUTES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from legato.events import EventType


class CommandType(StrEnum):
    ScheduleActivityTask = "ScheduleActivityTask"
    StartTimer = "StartTimer"
    CancelTimer = "CancelTimer"
    RecordMarker = "RecordMarker"
    CompleteWorkflowExecution = "CompleteWorkflowExecution"
    FailWorkflowExecution = "FailWorkflowExecution"
    CancelWorkflowExecution = "CancelWorkflowExecution"


C = CommandType

ATTRIBUTES: dict[CommandType, tuple[str, ...]] = {
    C.ScheduleActivityTask: (
        "activity_id", "activity_type", "task_queue", "input",
        "schedule_to_close_timeout_ms", "schedule_to_start_timeout_ms", "start_to_close_timeout_ms",
        "heartbeat_timeout_ms", "retry_policy", "context",
    ),
    C.StartTimer: ("timer_id", "start_to_fire_timeout_ms"),
    C.CancelTimer: ("timer_id",),
    C.RecordMarker: ("marker_name", "details"),
    C.CompleteWorkflowExecution: ("result",),
    C.FailWorkflowExecution: ("failure",),
    C.CancelWorkflowExecution: ("details",),
}

# The event each command becomes, and the attribute replay compares to tell them apart.
EVENT_OF: dict[CommandType, tuple[EventType, str | None]] = {
    C.ScheduleActivityTask: (EventType.ActivityTaskScheduled, "activity_type"),
    C.StartTimer: (EventType.TimerStarted, "timer_id"),
    C.CancelTimer: (EventType.TimerCanceled, "timer_id"),
    C.RecordMarker: (EventType.MarkerRecorded, "marker_name"),
    C.CompleteWorkflowExecution: (EventType.WorkflowExecutionCompleted, None),
    C.FailWorkflowExecution: (EventType.WorkflowExecutionFailed, None),
    C.CancelWorkflowExecution: (EventType.WorkflowExecutionCanceled, None),
}

CLOSE_COMMANDS = frozenset({C.CompleteWorkflowExecution, C.FailWorkflowExecution, C.CancelWorkflowExecution})


@dataclass(slots=True)
class Command:
    command_type: CommandType
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"command_type": self.command_type.value, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Command:
        return cls(CommandType(d["command_type"]), d.get("attrs") or {})
