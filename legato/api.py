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


class ParentClosePolicy(StrEnum):
    TERMINATE = "terminate"
    ABANDON = "abandon"
    REQUEST_CANCEL = "request_cancel"


# ---------------------------------------------------------------- workflow lifecycle

@dataclass(slots=True)
class ParentInfo:
    """The workflow that started a child, and the event that started it."""

    namespace: str
    workflow_id: str
    run_id: str
    initiated_event_id: int

    def to_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "workflow_id": self.workflow_id, "run_id": self.run_id,
                "initiated_event_id": self.initiated_event_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ParentInfo:
        return cls(d["namespace"], d["workflow_id"], d["run_id"], int(d["initiated_event_id"]))


@dataclass(slots=True)
class StartMessage:
    """A signal queued at start (`:with_message`): delivered before any outside signal."""

    topic: str
    payload: Any = None


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
    # issue 3: the rest of seed 002's start options
    retry_policy: dict[str, Any] | None = None  # RetryPolicy.to_dict(); workflow-level retries
    cron_schedule: str = ""
    start_delay_ms: int = 0
    execution_error_when_already_started: bool = False
    enable_eager_start: bool = False
    wait_for_cancellation: bool = False
    start_messages: list[StartMessage] = field(default_factory=list)
    parent: ParentInfo | None = None
    parent_close_policy: ParentClosePolicy = ParentClosePolicy.TERMINATE
    monitors: list[str] = field(default_factory=list)  # caller pids ("@...") that get EXIT when it closes


@dataclass(slots=True)
class StartWorkflowResponse:
    run_id: str
    started: bool  # False when an existing run was returned (use_existing, same request id)
    existing: bool = False  # use_existing returned a run another start made (not a retry of this one)


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
    request_id: str = ""  # a retried terminate with the same request id succeeds once the run is closed by it


@dataclass(slots=True)
class CancelWorkflowRequest:
    ref: ExecutionRef
    reason: str = ""
    identity: str = ""
    request_id: str = ""
    deadline_ms: int = 0  # > 0: terminate the workflow if it is still running this long after the request


# ---------------------------------------------------------------- processes (issue 3)

CALLER_PID_PREFIX = "@"  # pids of non-durable Lua callers; workflow ids may not start with it


@dataclass(slots=True)
class ProcessMessage:
    """What a caller's mailbox receives: a message (`kind="message"`, topic/payload/sender)
    or a process event (`kind="event"`, `event` = {"kind": "EXIT"|"LINK_DOWN", "from": pid,
    "result": {"value": ..., "error": Failure dict or None}})."""

    kind: str
    topic: str = ""
    payload: Any = None
    sender: str = ""
    event: dict[str, Any] | None = None


@dataclass(slots=True)
class SendMessageRequest:
    """`process.send(pid, topic, payload)` from outside a workflow: a workflow pid gets a signal,
    a caller pid a mailbox message. An unknown target is NotFound."""

    target: str
    topic: str
    payload: Any = None
    sender: str = ""
    namespace: str = DEFAULT_NAMESPACE
    request_id: str = ""


@dataclass(slots=True)
class PollMailboxRequest:
    pid: str
    timeout_ms: int = 30_000
    max_messages: int = 100


@dataclass(slots=True)
class MonitorWorkflowRequest:
    """A caller pid starts (or stops) monitoring or linking a workflow."""

    ref: ExecutionRef
    monitor_pid: str
    link: bool = False
    remove: bool = False


@dataclass(slots=True)
class ExecutionClosed:
    """How a run ended: what its parent and its monitors are told."""

    namespace: str
    workflow_id: str
    run_id: str
    status: WorkflowStatus
    result: Any = None
    failure: Failure | None = None


@dataclass(slots=True)
class MonitorRegistration:
    """Who monitors (or is linked to) a workflow: a workflow run, or a caller pid."""

    namespace: str
    pid: str  # the monitoring workflow's id, or a caller pid ("@...")
    run_id: str = ""  # the monitoring run ("" for a caller)
    initiated_event_id: int = 0  # its MonitorExternalWorkflowExecutionInitiated (0 for a caller)
    link: bool = False


@dataclass(slots=True)
class RegisterMonitorRequest:
    """Register (or with `remove`, drop) a monitor or link on the current run of `ref`.
    Idempotent: the same registration twice is one registration."""

    ref: ExecutionRef
    monitor: MonitorRegistration
    remove: bool = False


@dataclass(slots=True)
class RegisterMonitorResponse:
    run_id: str  # the run now monitored
    closed: ExecutionClosed | None = None  # set when that run had already closed (nothing registered)


@dataclass(slots=True)
class RecordChildClosedRequest:
    """A child (or, with `existing`, a run a child start found running) closed: the parent run
    records ChildWorkflowExecution* for its initiated event, once."""

    parent: ParentInfo
    child: ExecutionClosed
    existing: bool = False


@dataclass(slots=True)
class DeliverMonitoredClosedRequest:
    """A monitored or linked workflow closed: the monitoring run (`ref`, following its
    continue-as-new chain) records MonitoredWorkflowExecutionClosed, once."""

    ref: ExecutionRef
    closed: ExecutionClosed
    link: bool = False


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
    parent: ParentInfo | None = None  # set for a child: the run that started it


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


@dataclass(slots=True)
class CountWorkflowsRequest:
    namespace: str = DEFAULT_NAMESPACE
    query: str = ""  # the language of `legato.query`; may end with GROUP BY ExecutionStatus


@dataclass(slots=True)
class CountGroup:
    value: str  # with GROUP BY ExecutionStatus: a `WorkflowStatus` value
    count: int


@dataclass(slots=True)
class CountWorkflowsResponse:
    count: int
    groups: list[CountGroup] = field(default_factory=list)  # set with GROUP BY; only non-empty groups


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
    # Set: this is a query task (issue 14), not a workflow task: answer `query` about the run with
    # `respond_query_task_completed`; nothing was recorded in history and the history is empty.
    query: QueryTask | None = None


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
class RespondWorkflowTaskCompletedResponse:
    # The activities of the task's commands that asked for eager execution (and were on the
    # workflow's task queue): already recorded as started for this worker, which runs them now.
    activity_tasks: list[ActivityTask] = field(default_factory=list)


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
    # The worker has the run cached and a free workflow-task slot: if this completion schedules a
    # workflow task, history starts it for this worker at once and returns it (no poll, no matching).
    return_workflow_task: bool = False


@dataclass(slots=True)
class RespondActivityTaskCompletedResponse:
    workflow_task: WorkflowTask | None = None  # set when return_workflow_task started one for the caller


@dataclass(slots=True)
class RespondActivityTaskFailedRequest:
    task_token: bytes
    failure: Failure
    identity: str = ""


@dataclass(slots=True)
class RespondActivityTaskCanceledRequest:
    task_token: bytes
    details: Any = None
    identity: str = ""


@dataclass(slots=True)
class RecordActivityHeartbeatRequest:
    task_token: bytes
    details: Any = None
    identity: str = ""


@dataclass(slots=True)
class RecordActivityHeartbeatResponse:
    cancel_requested: bool = False


# ---------------------------------------------------------------- queries (issue 14)
#
# A query asks a worker about a run without changing it (Temporal's QueryWorkflow): the frontend
# asks history which worker has the run cached (its sticky worker), matching hands a query task to
# a workflow-task poll of that worker, which answers from its cache; when it does not have the run
# or does not answer in time, any worker polling the run's task queue replays the history and
# answers. Nothing is written to history, and the cached run is not changed.

STACK_TRACE_QUERY = "__stack_trace"  # the built-in query of a run's Lua coroutines (Temporal's name)
BUILTIN_QUERIES = frozenset({STACK_TRACE_QUERY})


class QuerySource(StrEnum):
    """Where an answer came from."""

    WORKER_CACHE = "worker-cache"  # the worker that has the run cached
    WORKER_REPLAY = "worker-replay"  # a worker that replayed the history
    FRONTEND_REPLAY = "frontend-replay"  # (the stack view's fallback) replayed by the frontend itself
    CLIENT_REPLAY = "client-replay"  # (`legato workflow stack --entries`) replayed by the CLI


@dataclass(slots=True)
class QueryWorkflowRequest:
    ref: ExecutionRef
    query_type: str = STACK_TRACE_QUERY
    args: Any = None
    timeout_ms: int = 0  # 0: frontend.query_timeout_ms


@dataclass(slots=True)
class QueryWorkflowResponse:
    run_id: str
    status: WorkflowStatus
    result: Any = None
    source: str = ""  # a QuerySource value
    worker: str = ""  # the identity of the worker that answered
    task_queue: str = ""  # the queue it answered on


@dataclass(slots=True)
class QueryTarget:
    """What the frontend needs to deliver a query (history's `get_query_target`)."""

    run_id: str
    workflow_type: str
    task_queue: str
    status: WorkflowStatus
    sticky_identity: str = ""  # the worker that completed the run's last workflow task ("" if none)


@dataclass(slots=True)
class QueryTask:
    """What a worker is asked (in `WorkflowTask.query`)."""

    query_id: str  # the worker answers with it as the task token (opaque; names the matching node)
    query_type: str
    args: Any = None
    cache_only: bool = False  # the sticky attempt: answer from the cache, or say not_cached


@dataclass(slots=True)
class QueryTaskRequest:
    """Frontend to matching: deliver `query` to a workflow-task poll of the run's task queue (of
    the worker `sticky_identity` only, if set) and wait up to `timeout_ms` for the answer."""

    namespace: str
    task_queue: str
    workflow_id: str
    run_id: str
    workflow_type: str
    query: QueryTask
    sticky_identity: str = ""
    timeout_ms: int = 1_000


@dataclass(slots=True)
class RespondQueryTaskCompletedRequest:
    """A worker's answer to a query task (also what matching returns for `query_workflow`)."""

    task_token: bytes  # the QueryTask's query_id
    result: Any = None
    failure: Failure | None = None
    source: str = ""  # worker-cache | worker-replay
    not_cached: bool = False  # a cache_only query for a run this worker does not have cached
    identity: str = ""


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
    async def count_workflows(self, req: CountWorkflowsRequest) -> CountWorkflowsResponse: ...
    async def poll_workflow_task(self, req: PollRequest) -> WorkflowTask | None: ...
    async def respond_workflow_task_completed(
        self, req: RespondWorkflowTaskCompletedRequest) -> RespondWorkflowTaskCompletedResponse: ...
    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None: ...
    async def poll_activity_task(self, req: PollRequest) -> ActivityTask | None: ...
    async def respond_activity_task_completed(
        self, req: RespondActivityTaskCompletedRequest) -> RespondActivityTaskCompletedResponse: ...
    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None: ...
    async def record_activity_heartbeat(
        self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse: ...
    async def respond_activity_task_canceled(self, req: RespondActivityTaskCanceledRequest) -> None: ...

    # ---- queries (issue 14)
    async def query_workflow(self, req: QueryWorkflowRequest) -> QueryWorkflowResponse: ...
    async def respond_query_task_completed(self, req: RespondQueryTaskCompletedRequest) -> None: ...

    # ---- processes (issue 3): non-durable Lua callers (pids starting with "@")
    async def send_message(self, req: SendMessageRequest) -> None:
        """A workflow pid gets a signal (sender = req.sender); a caller pid a mailbox message.
        An unknown target is NotFound."""
        ...

    async def open_mailbox(self, pid: str) -> None: ...
    async def close_mailbox(self, pid: str) -> None: ...
    async def poll_mailbox(self, req: PollMailboxRequest) -> list[ProcessMessage]: ...
    async def monitor_workflow(self, req: MonitorWorkflowRequest) -> None: ...


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
    async def respond_workflow_task_completed(
        self, req: RespondWorkflowTaskCompletedRequest) -> RespondWorkflowTaskCompletedResponse: ...
    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None: ...
    async def respond_activity_task_completed(
        self, req: RespondActivityTaskCompletedRequest) -> RespondActivityTaskCompletedResponse: ...
    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None: ...
    async def record_activity_heartbeat(
        self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse: ...
    async def respond_activity_task_canceled(self, req: RespondActivityTaskCanceledRequest) -> None:
        """The activity stopped after its cancellation was requested (a heartbeat said so)."""
        ...

    # ---- processes (issue 3). Callers (non-durable Lua code) monitor and link workflows:
    async def monitor_workflow(self, req: MonitorWorkflowRequest) -> None:
        """Register (or drop) a caller pid as a monitor / link of the workflow's current run. If
        that run already closed, the caller's mailbox gets the EXIT (or LINK_DOWN) at once."""
        ...

    # Between runs: history's transfer tasks call these through this interface, so that in the
    # distributed mode they reach the target's shard owner. Each is idempotent (keyed by the
    # initiator's run id and initiated event id).
    async def register_monitor(self, req: RegisterMonitorRequest) -> RegisterMonitorResponse: ...
    async def record_child_closed(self, req: RecordChildClosedRequest) -> None: ...
    async def deliver_monitored_closed(self, req: DeliverMonitoredClosedRequest) -> None: ...

    async def get_query_target(self, ref: ExecutionRef) -> QueryTarget:
        """Where a query about the run goes: its task queue and sticky worker (read-only)."""
        ...


class TaskSink(Protocol):
    """Where a shard's transfer processor hands workflow and activity tasks: matching itself
    (in-process bus), or a Kafka publisher (docs/queues.md)."""

    async def add_task(self, task: TaskInfo) -> None:
        """Return once the task is durably handed over; only then may the outbox row be acknowledged."""
        ...


class MatchingService(Protocol):
    """Task queues between history's outboxes and long-polling workers."""

    async def add_task(self, task: TaskInfo) -> None:
        """Return once the task is durably handed over (dispatched and recorded started, found
        stale, or accepted by a durable queue); only then may the outbox row be acknowledged."""
        ...

    async def poll_workflow_task(self, req: PollRequest) -> WorkflowTask | None: ...
    async def poll_activity_task(self, req: PollRequest) -> ActivityTask | None: ...

    async def query_workflow(self, req: QueryTaskRequest) -> RespondQueryTaskCompletedRequest:
        """Hand `req.query` to a workflow-task poll (nothing is recorded in history) and return
        the worker's answer; DeadlineExceeded when none came within `req.timeout_ms`."""
        ...

    async def respond_query_task_completed(self, req: RespondQueryTaskCompletedRequest) -> None:
        """A worker's answer; NotFound when the query no longer waits (it timed out)."""
        ...

    async def deliver_message(self, pid: str, msg: ProcessMessage) -> bool:
        """Put `msg` in the mailbox of caller pid `pid`; False if it has none (the caller is gone).
        A full mailbox raises ResourceExhausted."""
        ...

    async def open_mailbox(self, pid: str) -> None:
        """Open the mailbox of caller pid `pid` (a no-op when it is open)."""
        ...

    async def close_mailbox(self, pid: str) -> None:
        """Drop the mailbox of `pid` and what waits in it; later deliveries return False."""
        ...

    async def poll_mailbox(self, req: PollMailboxRequest) -> list[ProcessMessage]:
        """Long-poll: up to `max_messages` messages, waiting up to `timeout_ms` for the first
        (an empty list when none came). NotFound when the mailbox is not open."""
        ...


@dataclass(slots=True)
class OfferResult:
    taken: bool  # handed to a poll (or found stale): the offering node is done with the task
    pollers: int = 0  # polls still waiting on the task's queue at the node offered to


class MatchingPeer(Protocol):
    """What one matching node asks another (docs/cluster.md, "Matching")."""

    async def offer_task(self, task: TaskInfo, request_id: str) -> OfferResult:
        """Hand `task` to a poll waiting on its queue here, at once or not at all (then taken is
        False and the offering node keeps it). `request_id` is what history records it started with."""
        ...


class VisibilityStore(Protocol):
    """Listing and counting runs. Written by history, read by frontend. Queries are in the
    language of `legato.query`, whose docstring says what a store must support."""

    async def upsert(self, info: WorkflowExecutionInfo) -> None: ...

    async def delete(self, namespace: str, run_id: str, start_time_ms: int) -> None:
        """Retention: remove the run's record and its search attributes. Idempotent. History
        deletes a run only once its upserts are done (Cassandra's tombstone would also outlast
        a late one)."""
        ...

    async def list(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse: ...
    async def count(self, namespace: str, query: str) -> int:
        """Runs of the namespace that match the query (ORDER BY and GROUP BY are ignored)."""
        ...

    async def count_by_status(self, namespace: str, query: str) -> dict[WorkflowStatus, int]:
        """Runs of the namespace that match the query, per status; statuses without any left out."""
        ...
