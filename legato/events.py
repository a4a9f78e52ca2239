"""History events: Temporal's names, attributes as plain JSON-able dicts.

The attribute keys of each event type are listed in `ATTRIBUTES`; history writes them and the
worker's replayer reads them, so this table is the contract between the two. Durations are
integer milliseconds (`*_ms`), times are Unix milliseconds, payloads are JSON values, failures
are `Failure.to_dict()` dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from legato import codec


class EventType(StrEnum):
    WorkflowExecutionStarted = "WorkflowExecutionStarted"
    WorkflowExecutionCompleted = "WorkflowExecutionCompleted"
    WorkflowExecutionFailed = "WorkflowExecutionFailed"
    WorkflowExecutionTimedOut = "WorkflowExecutionTimedOut"
    WorkflowExecutionTerminated = "WorkflowExecutionTerminated"
    WorkflowExecutionCanceled = "WorkflowExecutionCanceled"
    WorkflowExecutionCancelRequested = "WorkflowExecutionCancelRequested"
    WorkflowExecutionSignaled = "WorkflowExecutionSignaled"
    WorkflowTaskScheduled = "WorkflowTaskScheduled"
    WorkflowTaskStarted = "WorkflowTaskStarted"
    WorkflowTaskCompleted = "WorkflowTaskCompleted"
    WorkflowTaskFailed = "WorkflowTaskFailed"
    WorkflowTaskTimedOut = "WorkflowTaskTimedOut"
    ActivityTaskScheduled = "ActivityTaskScheduled"
    ActivityTaskStarted = "ActivityTaskStarted"
    ActivityTaskCompleted = "ActivityTaskCompleted"
    ActivityTaskFailed = "ActivityTaskFailed"
    ActivityTaskTimedOut = "ActivityTaskTimedOut"
    TimerStarted = "TimerStarted"
    TimerFired = "TimerFired"
    TimerCanceled = "TimerCanceled"
    MarkerRecorded = "MarkerRecorded"
    # Issue 3: children, process control, continue-as-new, attributes, activity cancellation.
    WorkflowExecutionContinuedAsNew = "WorkflowExecutionContinuedAsNew"
    UpsertWorkflowSearchAttributes = "UpsertWorkflowSearchAttributes"
    WorkflowPropertiesModified = "WorkflowPropertiesModified"
    ActivityTaskCancelRequested = "ActivityTaskCancelRequested"
    ActivityTaskCanceled = "ActivityTaskCanceled"
    StartChildWorkflowExecutionInitiated = "StartChildWorkflowExecutionInitiated"
    StartChildWorkflowExecutionFailed = "StartChildWorkflowExecutionFailed"
    ChildWorkflowExecutionStarted = "ChildWorkflowExecutionStarted"
    ChildWorkflowExecutionCompleted = "ChildWorkflowExecutionCompleted"
    ChildWorkflowExecutionFailed = "ChildWorkflowExecutionFailed"
    ChildWorkflowExecutionCanceled = "ChildWorkflowExecutionCanceled"
    ChildWorkflowExecutionTerminated = "ChildWorkflowExecutionTerminated"
    ChildWorkflowExecutionTimedOut = "ChildWorkflowExecutionTimedOut"
    SignalExternalWorkflowExecutionInitiated = "SignalExternalWorkflowExecutionInitiated"
    SignalExternalWorkflowExecutionFailed = "SignalExternalWorkflowExecutionFailed"
    ExternalWorkflowExecutionSignaled = "ExternalWorkflowExecutionSignaled"
    RequestCancelExternalWorkflowExecutionInitiated = "RequestCancelExternalWorkflowExecutionInitiated"
    RequestCancelExternalWorkflowExecutionFailed = "RequestCancelExternalWorkflowExecutionFailed"
    ExternalWorkflowExecutionCancelRequested = "ExternalWorkflowExecutionCancelRequested"
    # Not in Temporal (it has no process control beyond children): named in the same pattern.
    TerminateExternalWorkflowExecutionInitiated = "TerminateExternalWorkflowExecutionInitiated"
    TerminateExternalWorkflowExecutionFailed = "TerminateExternalWorkflowExecutionFailed"
    ExternalWorkflowExecutionTerminated = "ExternalWorkflowExecutionTerminated"
    MonitorExternalWorkflowExecutionInitiated = "MonitorExternalWorkflowExecutionInitiated"
    MonitorExternalWorkflowExecutionFailed = "MonitorExternalWorkflowExecutionFailed"
    ExternalWorkflowExecutionMonitored = "ExternalWorkflowExecutionMonitored"
    MonitoredWorkflowExecutionClosed = "MonitoredWorkflowExecutionClosed"


E = EventType

ATTRIBUTES: dict[EventType, tuple[str, ...]] = {
    E.WorkflowExecutionStarted: (
        "workflow_type", "task_queue", "input",  # input: list of arguments
        "workflow_execution_timeout_ms", "workflow_run_timeout_ms", "workflow_task_timeout_ms",
        "identity", "attempt", "first_run_id", "random_seed",  # random_seed: hex, seeds uuid.v4()
        "context", "memo", "search_attributes",
    ),
    E.WorkflowExecutionCompleted: ("result", "workflow_task_completed_event_id"),
    E.WorkflowExecutionFailed: ("failure", "workflow_task_completed_event_id"),
    E.WorkflowExecutionTimedOut: ("timeout_type",),
    E.WorkflowExecutionTerminated: ("reason", "identity"),
    E.WorkflowExecutionCanceled: ("details", "workflow_task_completed_event_id"),
    E.WorkflowExecutionCancelRequested: ("reason", "identity"),
    E.WorkflowExecutionSignaled: ("signal_name", "input", "sender", "identity", "request_id"),
    E.WorkflowTaskScheduled: ("task_queue", "start_to_close_timeout_ms", "attempt"),
    E.WorkflowTaskStarted: ("scheduled_event_id", "identity", "request_id", "history_size_bytes"),
    E.WorkflowTaskCompleted: ("scheduled_event_id", "started_event_id", "identity"),
    # cause: "WORKFLOW_ERROR" | "NON_DETERMINISTIC" | "FORBIDDEN_CALL" | "BAD_COMMAND" | "LIMIT_EXCEEDED"
    E.WorkflowTaskFailed: ("scheduled_event_id", "started_event_id", "cause", "failure", "identity"),
    E.WorkflowTaskTimedOut: ("scheduled_event_id", "started_event_id", "timeout_type"),
    E.ActivityTaskScheduled: (
        "activity_id", "activity_type", "task_queue", "input",
        "schedule_to_close_timeout_ms", "schedule_to_start_timeout_ms", "start_to_close_timeout_ms",
        "heartbeat_timeout_ms", "retry_policy", "context", "workflow_task_completed_event_id",
    ),
    # Written when the activity closes, just before its close event (as Temporal does), so that
    # retries do not grow the history. `attempt` is the attempt that closed it.
    E.ActivityTaskStarted: ("scheduled_event_id", "attempt", "identity", "request_id", "last_failure"),
    E.ActivityTaskCompleted: ("scheduled_event_id", "started_event_id", "result", "identity"),
    E.ActivityTaskFailed: ("scheduled_event_id", "started_event_id", "failure", "identity"),
    # failure.kind == "Timeout"; timeout_type: START_TO_CLOSE | SCHEDULE_TO_START | SCHEDULE_TO_CLOSE | HEARTBEAT
    E.ActivityTaskTimedOut: ("scheduled_event_id", "started_event_id", "failure", "timeout_type"),
    E.TimerStarted: ("timer_id", "start_to_fire_timeout_ms", "workflow_task_completed_event_id"),
    E.TimerFired: ("timer_id", "started_event_id"),
    E.TimerCanceled: ("timer_id", "started_event_id", "workflow_task_completed_event_id"),
    E.MarkerRecorded: ("marker_name", "details", "workflow_task_completed_event_id"),
    # ---- issue 3 (docs/processes.md has the rules)
    E.WorkflowExecutionContinuedAsNew: ("new_execution_run_id", "workflow_type", "task_queue", "input",
                                        "workflow_task_completed_event_id"),
    E.UpsertWorkflowSearchAttributes: ("search_attributes", "workflow_task_completed_event_id"),
    E.WorkflowPropertiesModified: ("memo", "workflow_task_completed_event_id"),
    E.ActivityTaskCancelRequested: ("scheduled_event_id", "workflow_task_completed_event_id"),
    E.ActivityTaskCanceled: ("scheduled_event_id", "started_event_id", "details", "identity"),
    # options: the child's start options (see legato.commands ATTRIBUTES of StartChildWorkflowExecution)
    E.StartChildWorkflowExecutionInitiated: ("seq", "namespace", "workflow_id", "workflow_type", "task_queue",
                                             "input", "options", "workflow_task_completed_event_id"),
    E.StartChildWorkflowExecutionFailed: ("initiated_event_id", "workflow_id", "failure"),
    E.ChildWorkflowExecutionStarted: ("initiated_event_id", "workflow_id", "run_id", "existing"),
    E.ChildWorkflowExecutionCompleted: ("initiated_event_id", "workflow_id", "run_id", "result"),
    E.ChildWorkflowExecutionFailed: ("initiated_event_id", "workflow_id", "run_id", "failure"),
    E.ChildWorkflowExecutionCanceled: ("initiated_event_id", "workflow_id", "run_id", "failure"),
    E.ChildWorkflowExecutionTerminated: ("initiated_event_id", "workflow_id", "run_id", "failure"),
    E.ChildWorkflowExecutionTimedOut: ("initiated_event_id", "workflow_id", "run_id", "failure"),
    E.SignalExternalWorkflowExecutionInitiated: ("seq", "namespace", "workflow_id", "run_id", "signal_name",
                                                 "input", "sender", "workflow_task_completed_event_id"),
    E.SignalExternalWorkflowExecutionFailed: ("initiated_event_id", "workflow_id", "failure"),
    E.ExternalWorkflowExecutionSignaled: ("initiated_event_id", "workflow_id", "run_id"),
    E.RequestCancelExternalWorkflowExecutionInitiated: ("seq", "namespace", "workflow_id", "reason", "deadline_ms",
                                                        "workflow_task_completed_event_id"),
    E.RequestCancelExternalWorkflowExecutionFailed: ("initiated_event_id", "workflow_id", "failure"),
    E.ExternalWorkflowExecutionCancelRequested: ("initiated_event_id", "workflow_id", "run_id"),
    E.TerminateExternalWorkflowExecutionInitiated: ("seq", "namespace", "workflow_id", "reason",
                                                    "workflow_task_completed_event_id"),
    E.TerminateExternalWorkflowExecutionFailed: ("initiated_event_id", "workflow_id", "failure"),
    E.ExternalWorkflowExecutionTerminated: ("initiated_event_id", "workflow_id", "run_id"),
    # link: a link rather than a monitor; remove: unmonitor / unlink
    E.MonitorExternalWorkflowExecutionInitiated: ("seq", "namespace", "workflow_id", "link", "remove",
                                                  "workflow_task_completed_event_id"),
    E.MonitorExternalWorkflowExecutionFailed: ("initiated_event_id", "workflow_id", "failure"),
    E.ExternalWorkflowExecutionMonitored: ("initiated_event_id", "workflow_id", "run_id"),
    # A monitored or linked (not child) workflow closed. status: a WorkflowStatus value.
    E.MonitoredWorkflowExecutionClosed: ("workflow_id", "run_id", "status", "result", "failure", "link"),
}

CLOSE_EVENTS = frozenset({
    E.WorkflowExecutionCompleted, E.WorkflowExecutionFailed, E.WorkflowExecutionTimedOut,
    E.WorkflowExecutionTerminated, E.WorkflowExecutionCanceled, E.WorkflowExecutionContinuedAsNew,
})

# Events that a command of a completed workflow task produced; replay matches them to commands.
COMMAND_EVENTS = frozenset({
    E.ActivityTaskScheduled, E.TimerStarted, E.TimerCanceled, E.MarkerRecorded,
    E.WorkflowExecutionCompleted, E.WorkflowExecutionFailed, E.WorkflowExecutionCanceled,
    E.WorkflowExecutionContinuedAsNew, E.UpsertWorkflowSearchAttributes, E.WorkflowPropertiesModified,
    E.ActivityTaskCancelRequested, E.StartChildWorkflowExecutionInitiated,
    E.SignalExternalWorkflowExecutionInitiated, E.RequestCancelExternalWorkflowExecutionInitiated,
    E.TerminateExternalWorkflowExecutionInitiated, E.MonitorExternalWorkflowExecutionInitiated,
})


@dataclass(slots=True)
class HistoryEvent:
    event_id: int
    event_type: EventType
    timestamp_ms: int
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "event_type": self.event_type.value,
                "timestamp_ms": self.timestamp_ms, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> HistoryEvent:
        return cls(int(d["event_id"]), EventType(d["event_type"]), int(d["timestamp_ms"]), d.get("attrs") or {})

    def encode(self) -> str:
        return codec.dump_record(self.to_dict())

    @classmethod
    def decode(cls, text: str | bytes) -> HistoryEvent:
        return cls.from_dict(codec.loads(text))
