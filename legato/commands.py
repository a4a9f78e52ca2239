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
    # Issue 3 (docs/processes.md).
    ContinueAsNewWorkflowExecution = "ContinueAsNewWorkflowExecution"
    UpsertWorkflowSearchAttributes = "UpsertWorkflowSearchAttributes"
    ModifyWorkflowProperties = "ModifyWorkflowProperties"
    RequestCancelActivityTask = "RequestCancelActivityTask"
    StartChildWorkflowExecution = "StartChildWorkflowExecution"
    SignalExternalWorkflowExecution = "SignalExternalWorkflowExecution"
    RequestCancelExternalWorkflowExecution = "RequestCancelExternalWorkflowExecution"
    TerminateExternalWorkflowExecution = "TerminateExternalWorkflowExecution"
    MonitorExternalWorkflowExecution = "MonitorExternalWorkflowExecution"


C = CommandType

ATTRIBUTES: dict[CommandType, tuple[str, ...]] = {
    C.ScheduleActivityTask: (
        "activity_id", "activity_type", "task_queue", "input",
        "schedule_to_close_timeout_ms", "schedule_to_start_timeout_ms", "start_to_close_timeout_ms",
        "heartbeat_timeout_ms", "retry_policy", "context",
        # true: the worker completing the task runs this activity itself, at once (eager execution);
        # history then records it started with that task and returns it in the response. Honoured
        # only on the workflow's own task queue; never recorded in the ActivityTaskScheduled event.
        "request_eager_execution",
    ),
    C.StartTimer: ("timer_id", "start_to_fire_timeout_ms"),
    C.CancelTimer: ("timer_id",),
    C.RecordMarker: ("marker_name", "details"),
    C.CompleteWorkflowExecution: ("result",),
    C.FailWorkflowExecution: ("failure",),
    C.CancelWorkflowExecution: ("details",),
    # input: list of arguments; the rest default to the current run's values when absent
    C.ContinueAsNewWorkflowExecution: ("workflow_type", "task_queue", "input", "run_timeout_ms", "task_timeout_ms"),
    C.UpsertWorkflowSearchAttributes: ("search_attributes",),
    C.ModifyWorkflowProperties: ("memo",),
    C.RequestCancelActivityTask: ("scheduled_event_id",),
    # options keys: execution_timeout_ms, run_timeout_ms, task_timeout_ms, id_reuse_policy,
    # id_conflict_policy, execution_error_when_already_started, retry_policy (RetryPolicy.to_dict),
    # cron_schedule, memo, search_attributes, start_delay_ms, context, start_messages
    # ([{"topic", "payload"}]), parent_close_policy, wait_for_cancellation, enable_eager_start
    C.StartChildWorkflowExecution: ("seq", "namespace", "workflow_id", "workflow_type", "task_queue", "input",
                                    "options"),
    C.SignalExternalWorkflowExecution: ("seq", "namespace", "workflow_id", "run_id", "signal_name", "input",
                                        "sender"),
    C.RequestCancelExternalWorkflowExecution: ("seq", "namespace", "workflow_id", "reason", "deadline_ms"),
    C.TerminateExternalWorkflowExecution: ("seq", "namespace", "workflow_id", "reason"),
    C.MonitorExternalWorkflowExecution: ("seq", "namespace", "workflow_id", "link", "remove"),
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
    C.ContinueAsNewWorkflowExecution: (EventType.WorkflowExecutionContinuedAsNew, None),
    C.UpsertWorkflowSearchAttributes: (EventType.UpsertWorkflowSearchAttributes, None),
    C.ModifyWorkflowProperties: (EventType.WorkflowPropertiesModified, None),
    C.RequestCancelActivityTask: (EventType.ActivityTaskCancelRequested, "scheduled_event_id"),
    C.StartChildWorkflowExecution: (EventType.StartChildWorkflowExecutionInitiated, "workflow_type"),
    C.SignalExternalWorkflowExecution: (EventType.SignalExternalWorkflowExecutionInitiated, "signal_name"),
    C.RequestCancelExternalWorkflowExecution: (EventType.RequestCancelExternalWorkflowExecutionInitiated,
                                               "workflow_id"),
    C.TerminateExternalWorkflowExecution: (EventType.TerminateExternalWorkflowExecutionInitiated, "workflow_id"),
    C.MonitorExternalWorkflowExecution: (EventType.MonitorExternalWorkflowExecutionInitiated, "workflow_id"),
}

CLOSE_COMMANDS = frozenset({C.CompleteWorkflowExecution, C.FailWorkflowExecution, C.CancelWorkflowExecution,
                            C.ContinueAsNewWorkflowExecution})


@dataclass(slots=True)
class Command:
    command_type: CommandType
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"command_type": self.command_type.value, "attrs": self.attrs}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Command:
        return cls(CommandType(d["command_type"]), d.get("attrs") or {})
