from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Failure(_message.Message):
    __slots__ = ("message", "kind", "retryable", "details_json", "source", "cause")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    message: str
    kind: str
    retryable: bool
    details_json: str
    source: str
    cause: Failure
    def __init__(self, message: _Optional[str] = ..., kind: _Optional[str] = ..., retryable: _Optional[bool] = ..., details_json: _Optional[str] = ..., source: _Optional[str] = ..., cause: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class HistoryEvent(_message.Message):
    __slots__ = ("event_id", "event_type", "timestamp_ms", "attrs_json")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    ATTRS_JSON_FIELD_NUMBER: _ClassVar[int]
    event_id: int
    event_type: str
    timestamp_ms: int
    attrs_json: str
    def __init__(self, event_id: _Optional[int] = ..., event_type: _Optional[str] = ..., timestamp_ms: _Optional[int] = ..., attrs_json: _Optional[str] = ...) -> None: ...

class Command(_message.Message):
    __slots__ = ("command_type", "attrs_json")
    COMMAND_TYPE_FIELD_NUMBER: _ClassVar[int]
    ATTRS_JSON_FIELD_NUMBER: _ClassVar[int]
    command_type: str
    attrs_json: str
    def __init__(self, command_type: _Optional[str] = ..., attrs_json: _Optional[str] = ...) -> None: ...

class ExecutionRef(_message.Message):
    __slots__ = ("workflow_id", "run_id", "namespace")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    run_id: str
    namespace: str
    def __init__(self, workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., namespace: _Optional[str] = ...) -> None: ...

class StartWorkflowRequest(_message.Message):
    __slots__ = ("workflow_id", "workflow_type", "task_queue", "input_json", "namespace", "request_id", "identity", "execution_timeout_ms", "run_timeout_ms", "task_timeout_ms", "id_reuse_policy", "id_conflict_policy", "context_json", "memo_json", "search_attributes_json", "retry_policy_json", "cron_schedule", "start_delay_ms", "execution_error_when_already_started", "enable_eager_start", "wait_for_cancellation", "start_messages", "parent", "parent_close_policy", "monitors")
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    RUN_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    TASK_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ID_REUSE_POLICY_FIELD_NUMBER: _ClassVar[int]
    ID_CONFLICT_POLICY_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    MEMO_JSON_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ATTRIBUTES_JSON_FIELD_NUMBER: _ClassVar[int]
    RETRY_POLICY_JSON_FIELD_NUMBER: _ClassVar[int]
    CRON_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    START_DELAY_MS_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_ERROR_WHEN_ALREADY_STARTED_FIELD_NUMBER: _ClassVar[int]
    ENABLE_EAGER_START_FIELD_NUMBER: _ClassVar[int]
    WAIT_FOR_CANCELLATION_FIELD_NUMBER: _ClassVar[int]
    START_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PARENT_CLOSE_POLICY_FIELD_NUMBER: _ClassVar[int]
    MONITORS_FIELD_NUMBER: _ClassVar[int]
    workflow_id: str
    workflow_type: str
    task_queue: str
    input_json: str
    namespace: str
    request_id: str
    identity: str
    execution_timeout_ms: int
    run_timeout_ms: int
    task_timeout_ms: int
    id_reuse_policy: str
    id_conflict_policy: str
    context_json: str
    memo_json: str
    search_attributes_json: str
    retry_policy_json: str
    cron_schedule: str
    start_delay_ms: int
    execution_error_when_already_started: bool
    enable_eager_start: bool
    wait_for_cancellation: bool
    start_messages: _containers.RepeatedCompositeFieldContainer[StartMessage]
    parent: ParentInfo
    parent_close_policy: str
    monitors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, workflow_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., task_queue: _Optional[str] = ..., input_json: _Optional[str] = ..., namespace: _Optional[str] = ..., request_id: _Optional[str] = ..., identity: _Optional[str] = ..., execution_timeout_ms: _Optional[int] = ..., run_timeout_ms: _Optional[int] = ..., task_timeout_ms: _Optional[int] = ..., id_reuse_policy: _Optional[str] = ..., id_conflict_policy: _Optional[str] = ..., context_json: _Optional[str] = ..., memo_json: _Optional[str] = ..., search_attributes_json: _Optional[str] = ..., retry_policy_json: _Optional[str] = ..., cron_schedule: _Optional[str] = ..., start_delay_ms: _Optional[int] = ..., execution_error_when_already_started: _Optional[bool] = ..., enable_eager_start: _Optional[bool] = ..., wait_for_cancellation: _Optional[bool] = ..., start_messages: _Optional[_Iterable[_Union[StartMessage, _Mapping]]] = ..., parent: _Optional[_Union[ParentInfo, _Mapping]] = ..., parent_close_policy: _Optional[str] = ..., monitors: _Optional[_Iterable[str]] = ...) -> None: ...

class StartMessage(_message.Message):
    __slots__ = ("topic", "payload_json")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    topic: str
    payload_json: str
    def __init__(self, topic: _Optional[str] = ..., payload_json: _Optional[str] = ...) -> None: ...

class ParentInfo(_message.Message):
    __slots__ = ("namespace", "workflow_id", "run_id", "initiated_event_id")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INITIATED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workflow_id: str
    run_id: str
    initiated_event_id: int
    def __init__(self, namespace: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., initiated_event_id: _Optional[int] = ...) -> None: ...

class StartWorkflowResponse(_message.Message):
    __slots__ = ("run_id", "started", "existing")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    started: bool
    existing: bool
    def __init__(self, run_id: _Optional[str] = ..., started: _Optional[bool] = ..., existing: _Optional[bool] = ...) -> None: ...

class SignalWorkflowRequest(_message.Message):
    __slots__ = ("ref", "signal_name", "input_json", "sender", "identity", "request_id")
    REF_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    signal_name: str
    input_json: str
    sender: str
    identity: str
    request_id: str
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., signal_name: _Optional[str] = ..., input_json: _Optional[str] = ..., sender: _Optional[str] = ..., identity: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SignalWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TerminateWorkflowRequest(_message.Message):
    __slots__ = ("ref", "reason", "identity", "request_id")
    REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    reason: str
    identity: str
    request_id: str
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., reason: _Optional[str] = ..., identity: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class TerminateWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RequestCancelWorkflowRequest(_message.Message):
    __slots__ = ("ref", "reason", "identity", "request_id", "deadline_ms")
    REF_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    reason: str
    identity: str
    request_id: str
    deadline_ms: int
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., reason: _Optional[str] = ..., identity: _Optional[str] = ..., request_id: _Optional[str] = ..., deadline_ms: _Optional[int] = ...) -> None: ...

class RequestCancelWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class WorkflowExecutionInfo(_message.Message):
    __slots__ = ("namespace", "workflow_id", "run_id", "workflow_type", "task_queue", "status", "start_time_ms", "close_time_ms", "history_length", "memo_json", "search_attributes_json")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CLOSE_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MEMO_JSON_FIELD_NUMBER: _ClassVar[int]
    SEARCH_ATTRIBUTES_JSON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    start_time_ms: int
    close_time_ms: int
    history_length: int
    memo_json: str
    search_attributes_json: str
    def __init__(self, namespace: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., task_queue: _Optional[str] = ..., status: _Optional[str] = ..., start_time_ms: _Optional[int] = ..., close_time_ms: _Optional[int] = ..., history_length: _Optional[int] = ..., memo_json: _Optional[str] = ..., search_attributes_json: _Optional[str] = ...) -> None: ...

class PendingActivityInfo(_message.Message):
    __slots__ = ("activity_id", "activity_type", "scheduled_event_id", "state", "attempt", "last_failure", "scheduled_time_ms", "last_started_time_ms")
    ACTIVITY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_STARTED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    activity_id: str
    activity_type: str
    scheduled_event_id: int
    state: str
    attempt: int
    last_failure: Failure
    scheduled_time_ms: int
    last_started_time_ms: int
    def __init__(self, activity_id: _Optional[str] = ..., activity_type: _Optional[str] = ..., scheduled_event_id: _Optional[int] = ..., state: _Optional[str] = ..., attempt: _Optional[int] = ..., last_failure: _Optional[_Union[Failure, _Mapping]] = ..., scheduled_time_ms: _Optional[int] = ..., last_started_time_ms: _Optional[int] = ...) -> None: ...

class PendingWorkflowTaskInfo(_message.Message):
    __slots__ = ("scheduled_event_id", "state", "attempt", "scheduled_time_ms", "started_time_ms")
    SCHEDULED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    scheduled_event_id: int
    state: str
    attempt: int
    scheduled_time_ms: int
    started_time_ms: int
    def __init__(self, scheduled_event_id: _Optional[int] = ..., state: _Optional[str] = ..., attempt: _Optional[int] = ..., scheduled_time_ms: _Optional[int] = ..., started_time_ms: _Optional[int] = ...) -> None: ...

class DescribeWorkflowRequest(_message.Message):
    __slots__ = ("ref",)
    REF_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ...) -> None: ...

class DescribeWorkflowResponse(_message.Message):
    __slots__ = ("info", "pending_activities", "pending_workflow_task", "last_workflow_task_failure", "pending_timers", "result_json", "failure", "parent")
    INFO_FIELD_NUMBER: _ClassVar[int]
    PENDING_ACTIVITIES_FIELD_NUMBER: _ClassVar[int]
    PENDING_WORKFLOW_TASK_FIELD_NUMBER: _ClassVar[int]
    LAST_WORKFLOW_TASK_FAILURE_FIELD_NUMBER: _ClassVar[int]
    PENDING_TIMERS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    info: WorkflowExecutionInfo
    pending_activities: _containers.RepeatedCompositeFieldContainer[PendingActivityInfo]
    pending_workflow_task: PendingWorkflowTaskInfo
    last_workflow_task_failure: Failure
    pending_timers: int
    result_json: str
    failure: Failure
    parent: ParentInfo
    def __init__(self, info: _Optional[_Union[WorkflowExecutionInfo, _Mapping]] = ..., pending_activities: _Optional[_Iterable[_Union[PendingActivityInfo, _Mapping]]] = ..., pending_workflow_task: _Optional[_Union[PendingWorkflowTaskInfo, _Mapping]] = ..., last_workflow_task_failure: _Optional[_Union[Failure, _Mapping]] = ..., pending_timers: _Optional[int] = ..., result_json: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., parent: _Optional[_Union[ParentInfo, _Mapping]] = ...) -> None: ...

class GetWorkflowHistoryRequest(_message.Message):
    __slots__ = ("ref", "first_event_id", "page_size", "wait_new_event", "timeout_ms")
    REF_FIELD_NUMBER: _ClassVar[int]
    FIRST_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    WAIT_NEW_EVENT_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    first_event_id: int
    page_size: int
    wait_new_event: bool
    timeout_ms: int
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., first_event_id: _Optional[int] = ..., page_size: _Optional[int] = ..., wait_new_event: _Optional[bool] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class GetWorkflowHistoryResponse(_message.Message):
    __slots__ = ("run_id", "events", "next_event_id", "closed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    events: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    next_event_id: int
    closed: bool
    def __init__(self, run_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ..., next_event_id: _Optional[int] = ..., closed: _Optional[bool] = ...) -> None: ...

class GetWorkflowResultRequest(_message.Message):
    __slots__ = ("ref", "timeout_ms", "return_on_task_failure")
    REF_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    RETURN_ON_TASK_FAILURE_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    timeout_ms: int
    return_on_task_failure: bool
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., timeout_ms: _Optional[int] = ..., return_on_task_failure: _Optional[bool] = ...) -> None: ...

class GetWorkflowResultResponse(_message.Message):
    __slots__ = ("run_id", "status", "result_json", "failure", "task_failure")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    TASK_FAILURE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    result_json: str
    failure: Failure
    task_failure: Failure
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., result_json: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., task_failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("namespace", "query", "page_size", "next_page_token")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    query: str
    page_size: int
    next_page_token: bytes
    def __init__(self, namespace: _Optional[str] = ..., query: _Optional[str] = ..., page_size: _Optional[int] = ..., next_page_token: _Optional[bytes] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[WorkflowExecutionInfo]
    next_page_token: bytes
    def __init__(self, executions: _Optional[_Iterable[_Union[WorkflowExecutionInfo, _Mapping]]] = ..., next_page_token: _Optional[bytes] = ...) -> None: ...

class CountWorkflowsRequest(_message.Message):
    __slots__ = ("namespace", "query")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    query: str
    def __init__(self, namespace: _Optional[str] = ..., query: _Optional[str] = ...) -> None: ...

class CountGroup(_message.Message):
    __slots__ = ("value", "count")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    value: str
    count: int
    def __init__(self, value: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CountWorkflowsResponse(_message.Message):
    __slots__ = ("count", "groups")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    count: int
    groups: _containers.RepeatedCompositeFieldContainer[CountGroup]
    def __init__(self, count: _Optional[int] = ..., groups: _Optional[_Iterable[_Union[CountGroup, _Mapping]]] = ...) -> None: ...

class PollWorkflowTaskRequest(_message.Message):
    __slots__ = ("task_queue", "namespace", "identity", "timeout_ms")
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    task_queue: str
    namespace: str
    identity: str
    timeout_ms: int
    def __init__(self, task_queue: _Optional[str] = ..., namespace: _Optional[str] = ..., identity: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class WorkflowTask(_message.Message):
    __slots__ = ("task_token", "namespace", "workflow_id", "run_id", "workflow_type", "task_queue", "attempt", "started_event_id", "previous_started_event_id", "history", "query")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STARTED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str
    attempt: int
    started_event_id: int
    previous_started_event_id: int
    history: _containers.RepeatedCompositeFieldContainer[HistoryEvent]
    query: QueryTask
    def __init__(self, task_token: _Optional[bytes] = ..., namespace: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., task_queue: _Optional[str] = ..., attempt: _Optional[int] = ..., started_event_id: _Optional[int] = ..., previous_started_event_id: _Optional[int] = ..., history: _Optional[_Iterable[_Union[HistoryEvent, _Mapping]]] = ..., query: _Optional[_Union[QueryTask, _Mapping]] = ...) -> None: ...

class PollWorkflowTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: WorkflowTask
    def __init__(self, task: _Optional[_Union[WorkflowTask, _Mapping]] = ...) -> None: ...

class RespondWorkflowTaskCompletedRequest(_message.Message):
    __slots__ = ("task_token", "commands", "identity")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    COMMANDS_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    commands: _containers.RepeatedCompositeFieldContainer[Command]
    identity: str
    def __init__(self, task_token: _Optional[bytes] = ..., commands: _Optional[_Iterable[_Union[Command, _Mapping]]] = ..., identity: _Optional[str] = ...) -> None: ...

class RespondWorkflowTaskCompletedResponse(_message.Message):
    __slots__ = ("activity_tasks",)
    ACTIVITY_TASKS_FIELD_NUMBER: _ClassVar[int]
    activity_tasks: _containers.RepeatedCompositeFieldContainer[ActivityTask]
    def __init__(self, activity_tasks: _Optional[_Iterable[_Union[ActivityTask, _Mapping]]] = ...) -> None: ...

class RespondWorkflowTaskFailedRequest(_message.Message):
    __slots__ = ("task_token", "cause", "failure", "identity")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    cause: str
    failure: Failure
    identity: str
    def __init__(self, task_token: _Optional[bytes] = ..., cause: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., identity: _Optional[str] = ...) -> None: ...

class RespondWorkflowTaskFailedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PollActivityTaskRequest(_message.Message):
    __slots__ = ("task_queue", "namespace", "identity", "timeout_ms")
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    task_queue: str
    namespace: str
    identity: str
    timeout_ms: int
    def __init__(self, task_queue: _Optional[str] = ..., namespace: _Optional[str] = ..., identity: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class ActivityTask(_message.Message):
    __slots__ = ("task_token", "namespace", "workflow_id", "run_id", "workflow_type", "activity_id", "activity_type", "task_queue", "input_json", "attempt", "scheduled_time_ms", "started_time_ms", "start_to_close_timeout_ms", "heartbeat_timeout_ms", "heartbeat_details_json", "context_json")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_ID_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    STARTED_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    START_TO_CLOSE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_JSON_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    namespace: str
    workflow_id: str
    run_id: str
    workflow_type: str
    activity_id: str
    activity_type: str
    task_queue: str
    input_json: str
    attempt: int
    scheduled_time_ms: int
    started_time_ms: int
    start_to_close_timeout_ms: int
    heartbeat_timeout_ms: int
    heartbeat_details_json: str
    context_json: str
    def __init__(self, task_token: _Optional[bytes] = ..., namespace: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., activity_id: _Optional[str] = ..., activity_type: _Optional[str] = ..., task_queue: _Optional[str] = ..., input_json: _Optional[str] = ..., attempt: _Optional[int] = ..., scheduled_time_ms: _Optional[int] = ..., started_time_ms: _Optional[int] = ..., start_to_close_timeout_ms: _Optional[int] = ..., heartbeat_timeout_ms: _Optional[int] = ..., heartbeat_details_json: _Optional[str] = ..., context_json: _Optional[str] = ...) -> None: ...

class PollActivityTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: ActivityTask
    def __init__(self, task: _Optional[_Union[ActivityTask, _Mapping]] = ...) -> None: ...

class RespondActivityTaskCompletedRequest(_message.Message):
    __slots__ = ("task_token", "result_json", "identity", "return_workflow_task")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RETURN_WORKFLOW_TASK_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    result_json: str
    identity: str
    return_workflow_task: bool
    def __init__(self, task_token: _Optional[bytes] = ..., result_json: _Optional[str] = ..., identity: _Optional[str] = ..., return_workflow_task: _Optional[bool] = ...) -> None: ...

class RespondActivityTaskCompletedResponse(_message.Message):
    __slots__ = ("workflow_task",)
    WORKFLOW_TASK_FIELD_NUMBER: _ClassVar[int]
    workflow_task: WorkflowTask
    def __init__(self, workflow_task: _Optional[_Union[WorkflowTask, _Mapping]] = ...) -> None: ...

class RespondActivityTaskFailedRequest(_message.Message):
    __slots__ = ("task_token", "failure", "identity")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    failure: Failure
    identity: str
    def __init__(self, task_token: _Optional[bytes] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., identity: _Optional[str] = ...) -> None: ...

class RespondActivityTaskFailedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RecordActivityHeartbeatRequest(_message.Message):
    __slots__ = ("task_token", "details_json", "identity")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    details_json: str
    identity: str
    def __init__(self, task_token: _Optional[bytes] = ..., details_json: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class RecordActivityHeartbeatResponse(_message.Message):
    __slots__ = ("cancel_requested",)
    CANCEL_REQUESTED_FIELD_NUMBER: _ClassVar[int]
    cancel_requested: bool
    def __init__(self, cancel_requested: _Optional[bool] = ...) -> None: ...

class RespondActivityTaskCanceledRequest(_message.Message):
    __slots__ = ("task_token", "details_json", "identity")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    details_json: str
    identity: str
    def __init__(self, task_token: _Optional[bytes] = ..., details_json: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class RespondActivityTaskCanceledResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ProcessMessage(_message.Message):
    __slots__ = ("kind", "topic", "payload_json", "sender", "event_json")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    EVENT_JSON_FIELD_NUMBER: _ClassVar[int]
    kind: str
    topic: str
    payload_json: str
    sender: str
    event_json: str
    def __init__(self, kind: _Optional[str] = ..., topic: _Optional[str] = ..., payload_json: _Optional[str] = ..., sender: _Optional[str] = ..., event_json: _Optional[str] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ("target", "topic", "payload_json", "sender", "namespace", "request_id")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    target: str
    topic: str
    payload_json: str
    sender: str
    namespace: str
    request_id: str
    def __init__(self, target: _Optional[str] = ..., topic: _Optional[str] = ..., payload_json: _Optional[str] = ..., sender: _Optional[str] = ..., namespace: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OpenMailboxRequest(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: str
    def __init__(self, pid: _Optional[str] = ...) -> None: ...

class OpenMailboxResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CloseMailboxRequest(_message.Message):
    __slots__ = ("pid",)
    PID_FIELD_NUMBER: _ClassVar[int]
    pid: str
    def __init__(self, pid: _Optional[str] = ...) -> None: ...

class CloseMailboxResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PollMailboxRequest(_message.Message):
    __slots__ = ("pid", "timeout_ms", "max_messages")
    PID_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    pid: str
    timeout_ms: int
    max_messages: int
    def __init__(self, pid: _Optional[str] = ..., timeout_ms: _Optional[int] = ..., max_messages: _Optional[int] = ...) -> None: ...

class PollMailboxResponse(_message.Message):
    __slots__ = ("messages",)
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[ProcessMessage]
    def __init__(self, messages: _Optional[_Iterable[_Union[ProcessMessage, _Mapping]]] = ...) -> None: ...

class MonitorWorkflowRequest(_message.Message):
    __slots__ = ("ref", "monitor_pid", "link", "remove")
    REF_FIELD_NUMBER: _ClassVar[int]
    MONITOR_PID_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    monitor_pid: str
    link: bool
    remove: bool
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., monitor_pid: _Optional[str] = ..., link: _Optional[bool] = ..., remove: _Optional[bool] = ...) -> None: ...

class MonitorWorkflowResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueryWorkflowRequest(_message.Message):
    __slots__ = ("ref", "query_type", "args_json", "timeout_ms")
    REF_FIELD_NUMBER: _ClassVar[int]
    QUERY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    query_type: str
    args_json: str
    timeout_ms: int
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., query_type: _Optional[str] = ..., args_json: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class QueryWorkflowResponse(_message.Message):
    __slots__ = ("run_id", "status", "result_json", "source", "worker", "task_queue")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    status: str
    result_json: str
    source: str
    worker: str
    task_queue: str
    def __init__(self, run_id: _Optional[str] = ..., status: _Optional[str] = ..., result_json: _Optional[str] = ..., source: _Optional[str] = ..., worker: _Optional[str] = ..., task_queue: _Optional[str] = ...) -> None: ...

class QueryTask(_message.Message):
    __slots__ = ("query_id", "query_type", "args_json", "cache_only")
    QUERY_ID_FIELD_NUMBER: _ClassVar[int]
    QUERY_TYPE_FIELD_NUMBER: _ClassVar[int]
    ARGS_JSON_FIELD_NUMBER: _ClassVar[int]
    CACHE_ONLY_FIELD_NUMBER: _ClassVar[int]
    query_id: str
    query_type: str
    args_json: str
    cache_only: bool
    def __init__(self, query_id: _Optional[str] = ..., query_type: _Optional[str] = ..., args_json: _Optional[str] = ..., cache_only: _Optional[bool] = ...) -> None: ...

class RespondQueryTaskCompletedRequest(_message.Message):
    __slots__ = ("task_token", "result_json", "failure", "source", "not_cached", "identity")
    TASK_TOKEN_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    NOT_CACHED_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task_token: bytes
    result_json: str
    failure: Failure
    source: str
    not_cached: bool
    identity: str
    def __init__(self, task_token: _Optional[bytes] = ..., result_json: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ..., source: _Optional[str] = ..., not_cached: _Optional[bool] = ..., identity: _Optional[str] = ...) -> None: ...

class RespondQueryTaskCompletedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class TaskInfo(_message.Message):
    __slots__ = ("kind", "namespace", "task_queue", "workflow_id", "run_id", "scheduled_event_id", "shard_id", "task_id", "attempt", "created_ms")
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SHARD_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    namespace: str
    task_queue: str
    workflow_id: str
    run_id: str
    scheduled_event_id: int
    shard_id: int
    task_id: int
    attempt: int
    created_ms: int
    def __init__(self, kind: _Optional[str] = ..., namespace: _Optional[str] = ..., task_queue: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., scheduled_event_id: _Optional[int] = ..., shard_id: _Optional[int] = ..., task_id: _Optional[int] = ..., attempt: _Optional[int] = ..., created_ms: _Optional[int] = ...) -> None: ...

class RecordWorkflowTaskStartedRequest(_message.Message):
    __slots__ = ("task", "request_id", "identity")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task: TaskInfo
    request_id: str
    identity: str
    def __init__(self, task: _Optional[_Union[TaskInfo, _Mapping]] = ..., request_id: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class RecordWorkflowTaskStartedResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: WorkflowTask
    def __init__(self, task: _Optional[_Union[WorkflowTask, _Mapping]] = ...) -> None: ...

class RecordActivityTaskStartedRequest(_message.Message):
    __slots__ = ("task", "request_id", "identity")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    task: TaskInfo
    request_id: str
    identity: str
    def __init__(self, task: _Optional[_Union[TaskInfo, _Mapping]] = ..., request_id: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class RecordActivityTaskStartedResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: ActivityTask
    def __init__(self, task: _Optional[_Union[ActivityTask, _Mapping]] = ...) -> None: ...

class AddTaskRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: TaskInfo
    def __init__(self, task: _Optional[_Union[TaskInfo, _Mapping]] = ...) -> None: ...

class AddTaskResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class OfferTaskRequest(_message.Message):
    __slots__ = ("task", "request_id")
    TASK_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    task: TaskInfo
    request_id: str
    def __init__(self, task: _Optional[_Union[TaskInfo, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class OfferTaskResponse(_message.Message):
    __slots__ = ("taken", "pollers")
    TAKEN_FIELD_NUMBER: _ClassVar[int]
    POLLERS_FIELD_NUMBER: _ClassVar[int]
    taken: bool
    pollers: int
    def __init__(self, taken: _Optional[bool] = ..., pollers: _Optional[int] = ...) -> None: ...

class DeliverMessageRequest(_message.Message):
    __slots__ = ("pid", "message")
    PID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    pid: str
    message: ProcessMessage
    def __init__(self, pid: _Optional[str] = ..., message: _Optional[_Union[ProcessMessage, _Mapping]] = ...) -> None: ...

class DeliverMessageResponse(_message.Message):
    __slots__ = ("delivered",)
    DELIVERED_FIELD_NUMBER: _ClassVar[int]
    delivered: bool
    def __init__(self, delivered: _Optional[bool] = ...) -> None: ...

class ExecutionClosed(_message.Message):
    __slots__ = ("namespace", "workflow_id", "run_id", "status", "result_json", "failure")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RESULT_JSON_FIELD_NUMBER: _ClassVar[int]
    FAILURE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    workflow_id: str
    run_id: str
    status: str
    result_json: str
    failure: Failure
    def __init__(self, namespace: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., status: _Optional[str] = ..., result_json: _Optional[str] = ..., failure: _Optional[_Union[Failure, _Mapping]] = ...) -> None: ...

class MonitorRegistration(_message.Message):
    __slots__ = ("namespace", "pid", "run_id", "initiated_event_id", "link")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    INITIATED_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    pid: str
    run_id: str
    initiated_event_id: int
    link: bool
    def __init__(self, namespace: _Optional[str] = ..., pid: _Optional[str] = ..., run_id: _Optional[str] = ..., initiated_event_id: _Optional[int] = ..., link: _Optional[bool] = ...) -> None: ...

class RegisterMonitorRequest(_message.Message):
    __slots__ = ("ref", "monitor", "remove")
    REF_FIELD_NUMBER: _ClassVar[int]
    MONITOR_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    monitor: MonitorRegistration
    remove: bool
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., monitor: _Optional[_Union[MonitorRegistration, _Mapping]] = ..., remove: _Optional[bool] = ...) -> None: ...

class RegisterMonitorResponse(_message.Message):
    __slots__ = ("run_id", "closed")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    closed: ExecutionClosed
    def __init__(self, run_id: _Optional[str] = ..., closed: _Optional[_Union[ExecutionClosed, _Mapping]] = ...) -> None: ...

class RecordChildClosedRequest(_message.Message):
    __slots__ = ("parent", "child", "existing")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CHILD_FIELD_NUMBER: _ClassVar[int]
    EXISTING_FIELD_NUMBER: _ClassVar[int]
    parent: ParentInfo
    child: ExecutionClosed
    existing: bool
    def __init__(self, parent: _Optional[_Union[ParentInfo, _Mapping]] = ..., child: _Optional[_Union[ExecutionClosed, _Mapping]] = ..., existing: _Optional[bool] = ...) -> None: ...

class RecordChildClosedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HistoryCall(_message.Message):
    __slots__ = ("start_workflow", "record_child_closed")
    START_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RECORD_CHILD_CLOSED_FIELD_NUMBER: _ClassVar[int]
    start_workflow: StartWorkflowRequest
    record_child_closed: RecordChildClosedRequest
    def __init__(self, start_workflow: _Optional[_Union[StartWorkflowRequest, _Mapping]] = ..., record_child_closed: _Optional[_Union[RecordChildClosedRequest, _Mapping]] = ...) -> None: ...

class HistoryCallBatch(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[HistoryCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[HistoryCall, _Mapping]]] = ...) -> None: ...

class CallError(_message.Message):
    __slots__ = ("code", "message", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class HistoryCallResult(_message.Message):
    __slots__ = ("start_workflow", "record_child_closed", "error")
    START_WORKFLOW_FIELD_NUMBER: _ClassVar[int]
    RECORD_CHILD_CLOSED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    start_workflow: StartWorkflowResponse
    record_child_closed: RecordChildClosedResponse
    error: CallError
    def __init__(self, start_workflow: _Optional[_Union[StartWorkflowResponse, _Mapping]] = ..., record_child_closed: _Optional[_Union[RecordChildClosedResponse, _Mapping]] = ..., error: _Optional[_Union[CallError, _Mapping]] = ...) -> None: ...

class HistoryCallResults(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[HistoryCallResult]
    def __init__(self, results: _Optional[_Iterable[_Union[HistoryCallResult, _Mapping]]] = ...) -> None: ...

class DeliverMonitoredClosedRequest(_message.Message):
    __slots__ = ("ref", "closed", "link")
    REF_FIELD_NUMBER: _ClassVar[int]
    CLOSED_FIELD_NUMBER: _ClassVar[int]
    LINK_FIELD_NUMBER: _ClassVar[int]
    ref: ExecutionRef
    closed: ExecutionClosed
    link: bool
    def __init__(self, ref: _Optional[_Union[ExecutionRef, _Mapping]] = ..., closed: _Optional[_Union[ExecutionClosed, _Mapping]] = ..., link: _Optional[bool] = ...) -> None: ...

class DeliverMonitoredClosedResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class QueryTarget(_message.Message):
    __slots__ = ("run_id", "workflow_type", "task_queue", "status", "sticky_identity")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STICKY_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    workflow_type: str
    task_queue: str
    status: str
    sticky_identity: str
    def __init__(self, run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., task_queue: _Optional[str] = ..., status: _Optional[str] = ..., sticky_identity: _Optional[str] = ...) -> None: ...

class QueryTaskRequest(_message.Message):
    __slots__ = ("namespace", "task_queue", "workflow_id", "run_id", "workflow_type", "query", "sticky_identity", "timeout_ms")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TASK_QUEUE_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_TYPE_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    STICKY_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    task_queue: str
    workflow_id: str
    run_id: str
    workflow_type: str
    query: QueryTask
    sticky_identity: str
    timeout_ms: int
    def __init__(self, namespace: _Optional[str] = ..., task_queue: _Optional[str] = ..., workflow_id: _Optional[str] = ..., run_id: _Optional[str] = ..., workflow_type: _Optional[str] = ..., query: _Optional[_Union[QueryTask, _Mapping]] = ..., sticky_identity: _Optional[str] = ..., timeout_ms: _Optional[int] = ...) -> None: ...
