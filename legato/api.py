"""The service interfaces and the messages they exchange.

`WorkflowService` is the public API (frontend; also implemented by the gRPC client).
`HistoryService` and `MatchingService` are internal; the one-process assembly wires the
in-process implementations together, the distributed mode puts gRPC between them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from legato import DEFAULT_NAMESPACE
from legato.commands import Command
from legato.errors import Failure
from legato.events import HistoryEvent


class WorkflowStatus(StrEnum):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    TERMINATED = "TERMINATED"
    CONTINUED_AS_NEW = "CONTINUED_AS_NEW"
    TIMED_OUT = "TIMED_OUT"


class TaskKind(StrEnum):
    WORKFLOW = "workflow"
    ACTIVITY = "activity"


class IdReusePolicy(StrEnum):
    ALLOW_DUPLICATE = "allow_duplicate"
    ALLOW_DUPLICATE_FAILED_ONLY = "allow_duplicate_failed_only"
    REJECT_DUPLICATE = "reject_duplicate"


class IdConflictPolicy(StrEnum):
    FAIL = "fail"
    USE_EXISTING = "use_existing"
    TERMINATE_EXISTING = "terminate_existing"


# ---------------------------------------------------------------- workflow lifecycle

@dataclass(slots=True)
class ExecutionRef:
    workflow_id: str
    run_id: str = ""  # empty: the current (latest) run
    namespace: str = DEFAULT_NAMESPACE


@dataclass(slots=True)
class StartWorkflowRequest:
    workflow_id: str
    workflow_type: str
    task_queue: str
    input: list[Any] = field(default_factory=list)
    namespace: str = DEFAULT_NAMESPACE
    request_id: str = ""  # a retried start with the same request id returns the same run
    identity: str = ""
    execution_timeout_ms: int = 0
    run_timeout_ms: int = 0
    task_timeout_ms: int = 0
    id_reuse_policy: IdReusePolicy = IdReusePolicy.ALLOW_DUPLICATE
    id_conflict_policy: IdConflictPolicy = IdConflictPolicy.FAIL
    context: dict[str, Any] = field(default_factory=dict)
    memo: dict[str, Any] = field(default_factory=dict)
    search_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class StartWorkflowResponse:
    run_id: str
    started: bool  # False when an existing run was returned (use_existing, same request id)


@dataclass(slots=True)
class SignalWorkflowRequest:
    ref: ExecutionRef
    signal_name: str
    input: Any = None
    sender: str = ""  # what `msg:from()` returns
    identity: str = ""
    request_id: str = ""  # a retried signal with the same request id is recorded once


@dataclass(slots=True)
class TerminateWorkflowRequest:
    ref: ExecutionRef
    reason: str = ""
    identity: str = ""


@dataclass(slots=True)
class CancelWorkflowRequest:
    ref: ExecutionRef
    reason: str = ""
    identity: str = ""
    request_id: str = ""


# ---------------------------------------------------------------- reading workflows

@dataclass(slots=True)
class WorkflowExecutionInfo:
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowStatus
    start_time_ms: int
    close_time_ms: int = 0
    history_length: int = 0
    memo: dict[str, Any] = field(default_factory=dict)
    search_attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PendingActivityInfo:
    activity_id: str
    activity_type: str
    scheduled_event_id: int
    state: str  # SCHEDULED | STARTED | BACKOFF
    attempt: int
    last_failure: Failure | None = None
    scheduled_time_ms: int = 0
    last_started_time_ms: int = 0


@dataclass(slots=True)
class PendingWorkflowTaskInfo:
    scheduled_event_id: int
    state: str  # SCHEDULED | STARTED | BACKOFF
    attempt: int
    scheduled_time_ms: int = 0
    started_time_ms: int = 0


@dataclass(slots=True)
class DescribeWorkflowResponse:
    info: WorkflowExecutionInfo
    pending_activities: list[PendingActivityInfo] = field(default_factory=list)
    pending_workflow_task: PendingWorkflowTaskInfo | None = None
    last_workflow_task_failure: Failure | None = None  # with the Lua file and line
    pending_timers: int = 0
    result: Any = None  # set once COMPLETED
    failure: Failure | None = None  # set once FAILED / TERMINATED / TIMED_OUT / CANCELED


@dataclass(slots=True)
class GetHistoryRequest:
    ref: ExecutionRef
    first_event_id: int = 1
    page_size: int = 1000
    wait_new_event: bool = False  # long-poll until an event past first_event_id exists
    timeout_ms: int = 30_000


@dataclass(slots=True)
class GetHistoryResponse:
    run_id: str
    events: list[HistoryEvent]
    next_event_id: int  # ask again from here for more
    closed: bool


@dataclass(slots=True)
class GetResultRequest:
    ref: ExecutionRef
    timeout_ms: int = 30_000  # how long to wait for the close; 0 = don't wait
    return_on_task_failure: bool = False  # `legato run` stops at a failing workflow task


@dataclass(slots=True)
class GetResultResponse:
    run_id: str
    status: WorkflowStatus  # RUNNING if the wait timed out or a task failed
    result: Any = None
    failure: Failure | None = None
    task_failure: Failure | None = None  # set when return_on_task_failure stopped the wait


@dataclass(slots=True)
class ListWorkflowsRequest:
    namespace: str = DEFAULT_NAMESPACE
    query: str = ""
    page_size: int = 100
    next_page_token: bytes = b""


@dataclass(slots=True)
class ListWorkflowsResponse:
    executions: list[WorkflowExecutionInfo]
    next_page_token: bytes = b""


# ---------------------------------------------------------------- tasks

@dataclass(slots=True)
class TaskInfo:
    """A task on its way from a shard's outbox through matching to a worker."""

    kind: TaskKind
    namespace: str
    task_queue: str
    workflow_id: str
    run_id: str
    scheduled_event_id: int
    shard_id: int = 0
    task_id: int = 0
    attempt: int = 1
    created_ms: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "namespace": self.namespace, "task_queue": self.task_queue,
                "workflow_id": self.workflow_id, "run_id": self.run_id,
                "scheduled_event_id": self.scheduled_event_id, "shard_id": self.shard_id,
                "task_id": self.task_id, "attempt": self.attempt, "created_ms": self.created_ms}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TaskInfo:
        return cls(TaskKind(d["kind"]), d["namespace"], d["task_queue"], d["workflow_id"], d["run_id"],
                   int(d["scheduled_event_id"]), int(d.get("shard_id", 0)), int(d.get("task_id", 0)),
                   int(d.get("attempt", 1)), int(d.get("created_ms", 0)))


@dataclass(slots=True)
class PollRequest:
    task_queue: str
    namespace: str = DEFAULT_NAMESPACE
    identity: str = ""
    timeout_ms: int = 0  # 0: the server's long-poll timeout


@dataclass(slots=True)
class WorkflowTask:
    task_token: bytes
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int
    started_event_id: int
    previous_started_event_id: int  # the last completed task's started id (0 if none)
    history: list[HistoryEvent]  # the whole history up to and including WorkflowTaskStarted


@dataclass(slots=True)
class ActivityTask:
    task_token: bytes
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    activity_id: str
    activity_type: str
    task_queue: str
    input: list[Any]
    attempt: int
    scheduled_time_ms: int
    started_time_ms: int
    start_to_close_timeout_ms: int
    heartbeat_timeout_ms: int = 0
    heartbeat_details: Any = None
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class RespondWorkflowTaskCompletedRequest:
    task_token: bytes
    commands: list[Command]
    identity: str = ""


@dataclass(slots=True)
class RespondWorkflowTaskFailedRequest:
    task_token: bytes
    cause: str  # WORKFLOW_ERROR | NON_DETERMINISTIC | FORBIDDEN_CALL | LIMIT_EXCEEDED | BAD_COMMAND
    failure: Failure
    identity: str = ""


@dataclass(slots=True)
class RespondActivityTaskCompletedRequest:
    task_token: bytes
    result: Any = None
    identity: str = ""


@dataclass(slots=True)
class RespondActivityTaskFailedRequest:
    task_token: bytes
    failure: Failure
    identity: str = ""


@dataclass(slots=True)
class RecordActivityHeartbeatRequest:
    task_token: bytes
    details: Any = None
    identity: str = ""


@dataclass(slots=True)
class RecordActivityHeartbeatResponse:
    cancel_requested: bool = False


# ---------------------------------------------------------------- interfaces

class WorkflowService(Protocol):
    """The public API: what clients, the CLI and workers call."""

    async def start_workflow(self, req: StartWorkflowRequest) -> StartWorkflowResponse: ...
    async def signal_workflow(self, req: SignalWorkflowRequest) -> None: ...
    async def terminate_workflow(self, req: TerminateWorkflowRequest) -> None: ...
    async def request_cancel_workflow(self, req: CancelWorkflowRequest) -> None: ...
    async def describe_workflow(self, ref: ExecutionRef) -> DescribeWorkflowResponse: ...
    async def get_workflow_history(self, req: GetHistoryRequest) -> GetHistoryResponse: ...
    async def get_workflow_result(self, req: GetResultRequest) -> GetResultResponse: ...
    async def list_workflows(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse: ...
    async def poll_workflow_task(self, req: PollRequest) -> WorkflowTask | None: ...
    async def respond_workflow_task_completed(self, req: RespondWorkflowTaskCompletedRequest) -> None: ...
    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None: ...
    async def poll_activity_task(self, req: PollRequest) -> ActivityTask | None: ...
    async def respond_activity_task_completed(self, req: RespondActivityTaskCompletedRequest) -> None: ...
    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None: ...
    async def record_activity_heartbeat(
        self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse: ...


class HistoryService(Protocol):
    """Owns shards and the state of every run in them. Requests are routed by workflow id."""

    async def start_workflow(self, req: StartWorkflowRequest) -> StartWorkflowResponse: ...
    async def signal_workflow(self, req: SignalWorkflowRequest) -> None: ...
    async def terminate_workflow(self, req: TerminateWorkflowRequest) -> None: ...
    async def request_cancel_workflow(self, req: CancelWorkflowRequest) -> None: ...
    async def describe_workflow(self, ref: ExecutionRef) -> DescribeWorkflowResponse: ...
    async def get_workflow_history(self, req: GetHistoryRequest) -> GetHistoryResponse: ...
    async def get_workflow_result(self, req: GetResultRequest) -> GetResultResponse: ...
    # Matching calls these before handing a task out; a stale or duplicate task raises
    # FailedPrecondition / NotFound and is dropped.
    async def record_workflow_task_started(
        self, task: TaskInfo, request_id: str, identity: str) -> WorkflowTask: ...
    async def record_activity_task_started(
        self, task: TaskInfo, request_id: str, identity: str) -> ActivityTask: ...
    async def respond_workflow_task_completed(self, req: RespondWorkflowTaskCompletedRequest) -> None: ...
    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None: ...
    async def respond_activity_task_completed(self, req: RespondActivityTaskCompletedRequest) -> None: ...
    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None: ...
    async def record_activity_heartbeat(
        self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse: ...


class MatchingService(Protocol):
    """Task queues between history's outboxes and long-polling workers."""

    async def add_task(self, task: TaskInfo) -> None:
        """Return once the task is durably handed over (dispatched and recorded started, found
        stale, or accepted by a durable queue); only then may the outbox row be acknowledged."""
        ...

    async def poll_workflow_task(self, req: PollRequest) -> WorkflowTask | None: ...
    async def poll_activity_task(self, req: PollRequest) -> ActivityTask | None: ...


class VisibilityStore(Protocol):
    """Listing and counting runs. Written by history, read by frontend."""

    async def upsert(self, info: WorkflowExecutionInfo) -> None: ...
    async def list(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse: ...
