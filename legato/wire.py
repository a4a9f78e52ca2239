"""Conversions between the `legato.api` dataclasses and the gRPC messages of `legato.proto`.

Shared by every gRPC server and client (the messages only the internal APIs have are converted
by `legato.wire_internal`, with the `_` helpers below). Every `x_to_pb` has an `x_from_pb`
that gives back an equal dataclass. User payloads travel as JSON text; an empty string stands
for "absent" (None, an empty list or an empty mapping). Decoding something malformed raises
`InvalidArgument` naming the field, so a bad request becomes INVALID_ARGUMENT, not INTERNAL.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, TypeVar

from legato import DEFAULT_NAMESPACE, api, codec
from legato.commands import Command, CommandType
from legato.config import Config, Limits
from legato.errors import Failure, InvalidArgument, Kind
from legato.events import EventType, HistoryEvent
from legato.proto import legato_pb2 as pb

__all__ = ["max_message_bytes", "pb"]

_E = TypeVar("_E", bound=StrEnum)


def max_message_bytes(config: Config | Limits) -> int:
    """The largest gRPC message the server accepts: a request may carry several payloads at the
    limit (a start has input, context, memo and search attributes), and a workflow task carries
    the whole history; plus headroom for framing and the JSON of everything else."""
    headroom = 1024 * 1024
    lim = config if isinstance(config, Limits) else config.limits
    return max(4 * lim.max_payload_bytes, lim.max_history_bytes) + headroom


# ---------------------------------------------------------------- helpers

def _dump(value: Any, what: str) -> str:
    try:
        return codec.dumps(value)
    except RecursionError:  # a value nested deeper than Python can encode: refused before sending
        raise InvalidArgument(f"{what} nests arrays and objects too deep to be encoded as JSON (a payload may "
                              "nest limits.max_payload_depth levels)", reason=codec.REASON_TOO_DEEP) from None
    except (TypeError, ValueError) as e:
        raise InvalidArgument(f"{what} cannot be encoded as JSON: {e}") from e


def _dump_any(value: Any, what: str) -> str:
    return "" if value is None else _dump(value, what)


def _dump_dict(value: dict[str, Any], what: str) -> str:
    return _dump(value, what) if value else ""


def _dump_list(value: list[Any], what: str) -> str:
    return _dump(value, what) if value else ""


def _load_any(text: str, what: str) -> Any:
    if not text:
        return None
    # InvalidArgument when not JSON, or nested too deep to decode (measured before decoding)
    return codec.load_payload(text, what)


def _load_dict(text: str, what: str) -> dict[str, Any]:
    value = _load_any(text, what)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidArgument(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _load_list(text: str, what: str) -> list[Any]:
    value = _load_any(text, what)
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidArgument(f"{what} must be a JSON array, got {type(value).__name__}")
    return value


def _enum(cls: type[_E], value: str, what: str, default: _E | None = None) -> _E:
    if not value and default is not None:
        return default
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        raise InvalidArgument(f"{what}: unknown value {value!r} (expected one of: {known})") from None


def _ns(value: str) -> str:
    return value or DEFAULT_NAMESPACE


# ---------------------------------------------------------------- common messages

def failure_to_pb(f: Failure) -> pb.Failure:
    m = pb.Failure(message=f.message, kind=f.kind, retryable=f.retryable,
                   details_json=_dump_any(f.details, "failure.details"))
    if f.source is not None:
        m.source = f.source
    if f.cause is not None:
        m.cause.CopyFrom(failure_to_pb(f.cause))
    return m


def failure_from_pb(m: pb.Failure) -> Failure:
    return Failure(
        message=m.message,
        kind=m.kind or Kind.UNKNOWN,
        retryable=m.retryable,
        details=_load_any(m.details_json, "failure.details_json"),
        source=m.source if m.HasField("source") else None,
        cause=failure_from_pb(m.cause) if m.HasField("cause") else None,
    )


def _set_failure(target: pb.Failure, f: Failure | None) -> None:
    if f is not None:
        target.CopyFrom(failure_to_pb(f))


def _opt_failure(parent: Any, name: str) -> Failure | None:
    return failure_from_pb(getattr(parent, name)) if parent.HasField(name) else None


def event_to_pb(e: HistoryEvent) -> pb.HistoryEvent:
    return pb.HistoryEvent(event_id=e.event_id, event_type=e.event_type, timestamp_ms=e.timestamp_ms,
                           attrs_json=_dump_dict(e.attrs, "event attrs"))


def event_from_pb(m: pb.HistoryEvent) -> HistoryEvent:
    return HistoryEvent(m.event_id, _enum(EventType, m.event_type, "event_type"), m.timestamp_ms,
                        _load_dict(m.attrs_json, f"event {m.event_id} attrs_json"))


def command_to_pb(c: Command) -> pb.Command:
    return pb.Command(command_type=c.command_type, attrs_json=_dump_dict(c.attrs, "command attrs"))


def command_from_pb(m: pb.Command, index: int = 0) -> Command:
    return Command(_enum(CommandType, m.command_type, f"commands[{index}].command_type"),
                   _load_dict(m.attrs_json, f"commands[{index}].attrs_json"))


def ref_to_pb(r: api.ExecutionRef) -> pb.ExecutionRef:
    return pb.ExecutionRef(workflow_id=r.workflow_id, run_id=r.run_id, namespace=r.namespace)


def ref_from_pb(m: pb.ExecutionRef) -> api.ExecutionRef:
    return api.ExecutionRef(workflow_id=m.workflow_id, run_id=m.run_id, namespace=_ns(m.namespace))


# ---------------------------------------------------------------- workflow lifecycle

def _start_message_to_pb(m: api.StartMessage, i: int) -> pb.StartMessage:
    return pb.StartMessage(topic=m.topic, payload_json=_dump_any(m.payload, f"start_messages[{i}].payload"))


def _start_message_from_pb(m: pb.StartMessage, i: int) -> api.StartMessage:
    return api.StartMessage(m.topic, _load_any(m.payload_json, f"start_messages[{i}].payload_json"))


def parent_to_pb(p: api.ParentInfo) -> pb.ParentInfo:
    return pb.ParentInfo(namespace=p.namespace, workflow_id=p.workflow_id, run_id=p.run_id,
                         initiated_event_id=p.initiated_event_id)


def parent_from_pb(m: pb.ParentInfo) -> api.ParentInfo:
    return api.ParentInfo(_ns(m.namespace), m.workflow_id, m.run_id, m.initiated_event_id)


def start_request_to_pb(r: api.StartWorkflowRequest) -> pb.StartWorkflowRequest:
    m = pb.StartWorkflowRequest(
        workflow_id=r.workflow_id, workflow_type=r.workflow_type, task_queue=r.task_queue,
        input_json=_dump_list(r.input, "input"), namespace=r.namespace, request_id=r.request_id,
        identity=r.identity, execution_timeout_ms=r.execution_timeout_ms, run_timeout_ms=r.run_timeout_ms,
        task_timeout_ms=r.task_timeout_ms, id_reuse_policy=r.id_reuse_policy,
        id_conflict_policy=r.id_conflict_policy, context_json=_dump_dict(r.context, "context"),
        memo_json=_dump_dict(r.memo, "memo"),
        search_attributes_json=_dump_dict(r.search_attributes, "search_attributes"),
        retry_policy_json=_dump_any(r.retry_policy, "retry_policy"), cron_schedule=r.cron_schedule,
        start_delay_ms=r.start_delay_ms,
        execution_error_when_already_started=r.execution_error_when_already_started,
        enable_eager_start=r.enable_eager_start, wait_for_cancellation=r.wait_for_cancellation,
        start_messages=[_start_message_to_pb(x, i) for i, x in enumerate(r.start_messages)],
        parent_close_policy=r.parent_close_policy, monitors=list(r.monitors),
    )
    if r.parent is not None:
        m.parent.CopyFrom(parent_to_pb(r.parent))
    return m


def start_request_from_pb(m: pb.StartWorkflowRequest) -> api.StartWorkflowRequest:
    retry = _load_any(m.retry_policy_json, "retry_policy_json")
    if retry is not None and not isinstance(retry, dict):
        raise InvalidArgument(f"retry_policy_json must be a JSON object, got {type(retry).__name__}")
    return api.StartWorkflowRequest(
        workflow_id=m.workflow_id, workflow_type=m.workflow_type, task_queue=m.task_queue,
        input=_load_list(m.input_json, "input_json"), namespace=_ns(m.namespace), request_id=m.request_id,
        identity=m.identity, execution_timeout_ms=m.execution_timeout_ms, run_timeout_ms=m.run_timeout_ms,
        task_timeout_ms=m.task_timeout_ms,
        id_reuse_policy=_enum(api.IdReusePolicy, m.id_reuse_policy, "id_reuse_policy",
                              api.IdReusePolicy.ALLOW_DUPLICATE),
        id_conflict_policy=_enum(api.IdConflictPolicy, m.id_conflict_policy, "id_conflict_policy",
                                 api.IdConflictPolicy.FAIL),
        context=_load_dict(m.context_json, "context_json"), memo=_load_dict(m.memo_json, "memo_json"),
        search_attributes=_load_dict(m.search_attributes_json, "search_attributes_json"),
        retry_policy=retry, cron_schedule=m.cron_schedule, start_delay_ms=m.start_delay_ms,
        execution_error_when_already_started=m.execution_error_when_already_started,
        enable_eager_start=m.enable_eager_start, wait_for_cancellation=m.wait_for_cancellation,
        start_messages=[_start_message_from_pb(x, i) for i, x in enumerate(m.start_messages)],
        parent=parent_from_pb(m.parent) if m.HasField("parent") else None,
        parent_close_policy=_enum(api.ParentClosePolicy, m.parent_close_policy, "parent_close_policy",
                                  api.ParentClosePolicy.TERMINATE),
        monitors=list(m.monitors),
    )


def start_response_to_pb(r: api.StartWorkflowResponse) -> pb.StartWorkflowResponse:
    return pb.StartWorkflowResponse(run_id=r.run_id, started=r.started, existing=r.existing)


def start_response_from_pb(m: pb.StartWorkflowResponse) -> api.StartWorkflowResponse:
    return api.StartWorkflowResponse(run_id=m.run_id, started=m.started, existing=m.existing)


def signal_request_to_pb(r: api.SignalWorkflowRequest) -> pb.SignalWorkflowRequest:
    return pb.SignalWorkflowRequest(ref=ref_to_pb(r.ref), signal_name=r.signal_name,
                                    input_json=_dump_any(r.input, "input"), sender=r.sender,
                                    identity=r.identity, request_id=r.request_id)


def signal_request_from_pb(m: pb.SignalWorkflowRequest) -> api.SignalWorkflowRequest:
    return api.SignalWorkflowRequest(ref=ref_from_pb(m.ref), signal_name=m.signal_name,
                                     input=_load_any(m.input_json, "input_json"), sender=m.sender,
                                     identity=m.identity, request_id=m.request_id)


def terminate_request_to_pb(r: api.TerminateWorkflowRequest) -> pb.TerminateWorkflowRequest:
    return pb.TerminateWorkflowRequest(ref=ref_to_pb(r.ref), reason=r.reason, identity=r.identity,
                                       request_id=r.request_id)


def terminate_request_from_pb(m: pb.TerminateWorkflowRequest) -> api.TerminateWorkflowRequest:
    return api.TerminateWorkflowRequest(ref=ref_from_pb(m.ref), reason=m.reason, identity=m.identity,
                                        request_id=m.request_id)


def cancel_request_to_pb(r: api.CancelWorkflowRequest) -> pb.RequestCancelWorkflowRequest:
    return pb.RequestCancelWorkflowRequest(ref=ref_to_pb(r.ref), reason=r.reason, identity=r.identity,
                                           request_id=r.request_id, deadline_ms=r.deadline_ms)


def cancel_request_from_pb(m: pb.RequestCancelWorkflowRequest) -> api.CancelWorkflowRequest:
    return api.CancelWorkflowRequest(ref=ref_from_pb(m.ref), reason=m.reason, identity=m.identity,
                                     request_id=m.request_id, deadline_ms=m.deadline_ms)


# ---------------------------------------------------------------- reading workflows

def execution_info_to_pb(i: api.WorkflowExecutionInfo) -> pb.WorkflowExecutionInfo:
    return pb.WorkflowExecutionInfo(
        namespace=i.namespace, workflow_id=i.workflow_id, run_id=i.run_id, workflow_type=i.workflow_type,
        task_queue=i.task_queue, status=i.status, start_time_ms=i.start_time_ms,
        close_time_ms=i.close_time_ms, history_length=i.history_length,
        memo_json=_dump_dict(i.memo, "memo"),
        search_attributes_json=_dump_dict(i.search_attributes, "search_attributes"),
    )


def execution_info_from_pb(m: pb.WorkflowExecutionInfo) -> api.WorkflowExecutionInfo:
    return api.WorkflowExecutionInfo(
        namespace=m.namespace, workflow_id=m.workflow_id, run_id=m.run_id, workflow_type=m.workflow_type,
        task_queue=m.task_queue, status=_enum(api.WorkflowStatus, m.status, "status"),
        start_time_ms=m.start_time_ms, close_time_ms=m.close_time_ms, history_length=m.history_length,
        memo=_load_dict(m.memo_json, "memo_json"),
        search_attributes=_load_dict(m.search_attributes_json, "search_attributes_json"),
    )


def describe_request_to_pb(ref: api.ExecutionRef) -> pb.DescribeWorkflowRequest:
    return pb.DescribeWorkflowRequest(ref=ref_to_pb(ref))


def describe_request_from_pb(m: pb.DescribeWorkflowRequest) -> api.ExecutionRef:
    return ref_from_pb(m.ref)


def describe_response_to_pb(r: api.DescribeWorkflowResponse) -> pb.DescribeWorkflowResponse:
    m = pb.DescribeWorkflowResponse(info=execution_info_to_pb(r.info), pending_timers=r.pending_timers,
                                    result_json=_dump_any(r.result, "result"))
    for a in r.pending_activities:
        pa = m.pending_activities.add(
            activity_id=a.activity_id, activity_type=a.activity_type, scheduled_event_id=a.scheduled_event_id,
            state=a.state, attempt=a.attempt, scheduled_time_ms=a.scheduled_time_ms,
            last_started_time_ms=a.last_started_time_ms)
        _set_failure(pa.last_failure, a.last_failure)
    t = r.pending_workflow_task
    if t is not None:
        m.pending_workflow_task.CopyFrom(pb.PendingWorkflowTaskInfo(
            scheduled_event_id=t.scheduled_event_id, state=t.state, attempt=t.attempt,
            scheduled_time_ms=t.scheduled_time_ms, started_time_ms=t.started_time_ms))
    _set_failure(m.last_workflow_task_failure, r.last_workflow_task_failure)
    _set_failure(m.failure, r.failure)
    if r.parent is not None:
        m.parent.CopyFrom(parent_to_pb(r.parent))
    return m


def describe_response_from_pb(m: pb.DescribeWorkflowResponse) -> api.DescribeWorkflowResponse:
    pending_task = None
    if m.HasField("pending_workflow_task"):
        t = m.pending_workflow_task
        pending_task = api.PendingWorkflowTaskInfo(
            scheduled_event_id=t.scheduled_event_id, state=t.state, attempt=t.attempt,
            scheduled_time_ms=t.scheduled_time_ms, started_time_ms=t.started_time_ms)
    return api.DescribeWorkflowResponse(
        info=execution_info_from_pb(m.info),
        pending_activities=[
            api.PendingActivityInfo(
                activity_id=a.activity_id, activity_type=a.activity_type, scheduled_event_id=a.scheduled_event_id,
                state=a.state, attempt=a.attempt, last_failure=_opt_failure(a, "last_failure"),
                scheduled_time_ms=a.scheduled_time_ms, last_started_time_ms=a.last_started_time_ms)
            for a in m.pending_activities
        ],
        pending_workflow_task=pending_task,
        last_workflow_task_failure=_opt_failure(m, "last_workflow_task_failure"),
        pending_timers=m.pending_timers,
        result=_load_any(m.result_json, "result_json"),
        failure=_opt_failure(m, "failure"),
        parent=parent_from_pb(m.parent) if m.HasField("parent") else None,
    )


def history_request_to_pb(r: api.GetHistoryRequest) -> pb.GetWorkflowHistoryRequest:
    return pb.GetWorkflowHistoryRequest(ref=ref_to_pb(r.ref), first_event_id=r.first_event_id,
                                        page_size=r.page_size, wait_new_event=r.wait_new_event,
                                        timeout_ms=r.timeout_ms)


def history_request_from_pb(m: pb.GetWorkflowHistoryRequest) -> api.GetHistoryRequest:
    # proto3 cannot tell 0 from unset: 0 means "the default" for these two fields.
    return api.GetHistoryRequest(ref=ref_from_pb(m.ref), first_event_id=m.first_event_id or 1,
                                 page_size=m.page_size or 1000, wait_new_event=m.wait_new_event,
                                 timeout_ms=m.timeout_ms)


def history_response_to_pb(r: api.GetHistoryResponse) -> pb.GetWorkflowHistoryResponse:
    return pb.GetWorkflowHistoryResponse(run_id=r.run_id, events=[event_to_pb(e) for e in r.events],
                                         next_event_id=r.next_event_id, closed=r.closed)


def history_response_from_pb(m: pb.GetWorkflowHistoryResponse) -> api.GetHistoryResponse:
    return api.GetHistoryResponse(run_id=m.run_id, events=[event_from_pb(e) for e in m.events],
                                  next_event_id=m.next_event_id, closed=m.closed)


def result_request_to_pb(r: api.GetResultRequest) -> pb.GetWorkflowResultRequest:
    return pb.GetWorkflowResultRequest(ref=ref_to_pb(r.ref), timeout_ms=r.timeout_ms,
                                       return_on_task_failure=r.return_on_task_failure)


def result_request_from_pb(m: pb.GetWorkflowResultRequest) -> api.GetResultRequest:
    return api.GetResultRequest(ref=ref_from_pb(m.ref), timeout_ms=m.timeout_ms,
                                return_on_task_failure=m.return_on_task_failure)


def result_response_to_pb(r: api.GetResultResponse) -> pb.GetWorkflowResultResponse:
    m = pb.GetWorkflowResultResponse(run_id=r.run_id, status=r.status, result_json=_dump_any(r.result, "result"))
    _set_failure(m.failure, r.failure)
    _set_failure(m.task_failure, r.task_failure)
    return m


def result_response_from_pb(m: pb.GetWorkflowResultResponse) -> api.GetResultResponse:
    return api.GetResultResponse(run_id=m.run_id, status=_enum(api.WorkflowStatus, m.status, "status"),
                                 result=_load_any(m.result_json, "result_json"),
                                 failure=_opt_failure(m, "failure"), task_failure=_opt_failure(m, "task_failure"))


def list_request_to_pb(r: api.ListWorkflowsRequest) -> pb.ListWorkflowsRequest:
    return pb.ListWorkflowsRequest(namespace=r.namespace, query=r.query, page_size=r.page_size,
                                   next_page_token=r.next_page_token)


def list_request_from_pb(m: pb.ListWorkflowsRequest) -> api.ListWorkflowsRequest:
    return api.ListWorkflowsRequest(namespace=_ns(m.namespace), query=m.query, page_size=m.page_size or 100,
                                    next_page_token=m.next_page_token)


def list_response_to_pb(r: api.ListWorkflowsResponse) -> pb.ListWorkflowsResponse:
    return pb.ListWorkflowsResponse(executions=[execution_info_to_pb(i) for i in r.executions],
                                    next_page_token=r.next_page_token)


def list_response_from_pb(m: pb.ListWorkflowsResponse) -> api.ListWorkflowsResponse:
    return api.ListWorkflowsResponse(executions=[execution_info_from_pb(i) for i in m.executions],
                                     next_page_token=m.next_page_token)


def count_request_to_pb(r: api.CountWorkflowsRequest) -> pb.CountWorkflowsRequest:
    return pb.CountWorkflowsRequest(namespace=r.namespace, query=r.query)


def count_request_from_pb(m: pb.CountWorkflowsRequest) -> api.CountWorkflowsRequest:
    return api.CountWorkflowsRequest(namespace=_ns(m.namespace), query=m.query)


def count_response_to_pb(r: api.CountWorkflowsResponse) -> pb.CountWorkflowsResponse:
    return pb.CountWorkflowsResponse(count=r.count, groups=[pb.CountGroup(value=g.value, count=g.count)
                                                            for g in r.groups])


def count_response_from_pb(m: pb.CountWorkflowsResponse) -> api.CountWorkflowsResponse:
    return api.CountWorkflowsResponse(count=m.count, groups=[api.CountGroup(g.value, g.count) for g in m.groups])


# ---------------------------------------------------------------- worker calls

def poll_workflow_request_to_pb(r: api.PollRequest) -> pb.PollWorkflowTaskRequest:
    return pb.PollWorkflowTaskRequest(task_queue=r.task_queue, namespace=r.namespace, identity=r.identity,
                                      timeout_ms=r.timeout_ms)


def poll_workflow_request_from_pb(m: pb.PollWorkflowTaskRequest) -> api.PollRequest:
    return api.PollRequest(task_queue=m.task_queue, namespace=_ns(m.namespace), identity=m.identity,
                           timeout_ms=m.timeout_ms)


def poll_activity_request_to_pb(r: api.PollRequest) -> pb.PollActivityTaskRequest:
    return pb.PollActivityTaskRequest(task_queue=r.task_queue, namespace=r.namespace, identity=r.identity,
                                      timeout_ms=r.timeout_ms)


def poll_activity_request_from_pb(m: pb.PollActivityTaskRequest) -> api.PollRequest:
    return api.PollRequest(task_queue=m.task_queue, namespace=_ns(m.namespace), identity=m.identity,
                           timeout_ms=m.timeout_ms)


def workflow_task_to_pb(t: api.WorkflowTask) -> pb.WorkflowTask:
    m = pb.WorkflowTask(
        task_token=t.task_token, namespace=t.namespace, workflow_id=t.workflow_id, run_id=t.run_id,
        workflow_type=t.workflow_type, task_queue=t.task_queue, attempt=t.attempt,
        started_event_id=t.started_event_id, previous_started_event_id=t.previous_started_event_id,
        history=[event_to_pb(e) for e in t.history],
    )
    if t.query is not None:
        m.query.CopyFrom(query_task_to_pb(t.query))
    return m


def workflow_task_from_pb(m: pb.WorkflowTask) -> api.WorkflowTask:
    return api.WorkflowTask(
        task_token=m.task_token, namespace=m.namespace, workflow_id=m.workflow_id, run_id=m.run_id,
        workflow_type=m.workflow_type, task_queue=m.task_queue, attempt=m.attempt,
        started_event_id=m.started_event_id, previous_started_event_id=m.previous_started_event_id,
        history=[event_from_pb(e) for e in m.history],
        query=query_task_from_pb(m.query) if m.HasField("query") else None,
    )


def poll_workflow_response_to_pb(t: api.WorkflowTask | None) -> pb.PollWorkflowTaskResponse:
    return pb.PollWorkflowTaskResponse() if t is None else pb.PollWorkflowTaskResponse(task=workflow_task_to_pb(t))


def poll_workflow_response_from_pb(m: pb.PollWorkflowTaskResponse) -> api.WorkflowTask | None:
    return workflow_task_from_pb(m.task) if m.HasField("task") else None


def activity_task_to_pb(t: api.ActivityTask) -> pb.ActivityTask:
    return pb.ActivityTask(
        task_token=t.task_token, namespace=t.namespace, workflow_id=t.workflow_id, run_id=t.run_id,
        workflow_type=t.workflow_type, activity_id=t.activity_id, activity_type=t.activity_type,
        task_queue=t.task_queue, input_json=_dump_list(t.input, "input"), attempt=t.attempt,
        scheduled_time_ms=t.scheduled_time_ms, started_time_ms=t.started_time_ms,
        start_to_close_timeout_ms=t.start_to_close_timeout_ms, heartbeat_timeout_ms=t.heartbeat_timeout_ms,
        heartbeat_details_json=_dump_any(t.heartbeat_details, "heartbeat_details"),
        context_json=_dump_dict(t.context, "context"),
    )


def activity_task_from_pb(m: pb.ActivityTask) -> api.ActivityTask:
    return api.ActivityTask(
        task_token=m.task_token, namespace=m.namespace, workflow_id=m.workflow_id, run_id=m.run_id,
        workflow_type=m.workflow_type, activity_id=m.activity_id, activity_type=m.activity_type,
        task_queue=m.task_queue, input=_load_list(m.input_json, "input_json"), attempt=m.attempt,
        scheduled_time_ms=m.scheduled_time_ms, started_time_ms=m.started_time_ms,
        start_to_close_timeout_ms=m.start_to_close_timeout_ms, heartbeat_timeout_ms=m.heartbeat_timeout_ms,
        heartbeat_details=_load_any(m.heartbeat_details_json, "heartbeat_details_json"),
        context=_load_dict(m.context_json, "context_json"),
    )


def poll_activity_response_to_pb(t: api.ActivityTask | None) -> pb.PollActivityTaskResponse:
    return pb.PollActivityTaskResponse() if t is None else pb.PollActivityTaskResponse(task=activity_task_to_pb(t))


def poll_activity_response_from_pb(m: pb.PollActivityTaskResponse) -> api.ActivityTask | None:
    return activity_task_from_pb(m.task) if m.HasField("task") else None


def workflow_task_completed_to_pb(
        r: api.RespondWorkflowTaskCompletedRequest) -> pb.RespondWorkflowTaskCompletedRequest:
    return pb.RespondWorkflowTaskCompletedRequest(task_token=r.task_token,
                                                  commands=[command_to_pb(c) for c in r.commands],
                                                  identity=r.identity)


def workflow_task_completed_from_pb(
        m: pb.RespondWorkflowTaskCompletedRequest) -> api.RespondWorkflowTaskCompletedRequest:
    return api.RespondWorkflowTaskCompletedRequest(
        task_token=m.task_token, commands=[command_from_pb(c, i) for i, c in enumerate(m.commands)],
        identity=m.identity)


def workflow_task_completed_response_to_pb(
        r: api.RespondWorkflowTaskCompletedResponse | None) -> pb.RespondWorkflowTaskCompletedResponse:
    if r is None or not r.activity_tasks:
        return pb.RespondWorkflowTaskCompletedResponse()
    return pb.RespondWorkflowTaskCompletedResponse(activity_tasks=[activity_task_to_pb(t) for t in r.activity_tasks])


def workflow_task_completed_response_from_pb(
        m: pb.RespondWorkflowTaskCompletedResponse) -> api.RespondWorkflowTaskCompletedResponse:
    return api.RespondWorkflowTaskCompletedResponse(activity_tasks=[activity_task_from_pb(t)
                                                                    for t in m.activity_tasks])


def workflow_task_failed_to_pb(r: api.RespondWorkflowTaskFailedRequest) -> pb.RespondWorkflowTaskFailedRequest:
    return pb.RespondWorkflowTaskFailedRequest(task_token=r.task_token, cause=r.cause,
                                               failure=failure_to_pb(r.failure), identity=r.identity)


def workflow_task_failed_from_pb(m: pb.RespondWorkflowTaskFailedRequest) -> api.RespondWorkflowTaskFailedRequest:
    if not m.HasField("failure"):
        raise InvalidArgument("failure is required")
    return api.RespondWorkflowTaskFailedRequest(task_token=m.task_token, cause=m.cause,
                                                failure=failure_from_pb(m.failure), identity=m.identity)


def activity_completed_to_pb(
        r: api.RespondActivityTaskCompletedRequest) -> pb.RespondActivityTaskCompletedRequest:
    return pb.RespondActivityTaskCompletedRequest(task_token=r.task_token,
                                                  result_json=_dump_any(r.result, "result"), identity=r.identity,
                                                  return_workflow_task=r.return_workflow_task)


def activity_completed_from_pb(
        m: pb.RespondActivityTaskCompletedRequest) -> api.RespondActivityTaskCompletedRequest:
    return api.RespondActivityTaskCompletedRequest(task_token=m.task_token,
                                                   result=_load_any(m.result_json, "result_json"),
                                                   identity=m.identity, return_workflow_task=m.return_workflow_task)


def activity_completed_response_to_pb(
        r: api.RespondActivityTaskCompletedResponse | None) -> pb.RespondActivityTaskCompletedResponse:
    if r is None or r.workflow_task is None:
        return pb.RespondActivityTaskCompletedResponse()
    return pb.RespondActivityTaskCompletedResponse(workflow_task=workflow_task_to_pb(r.workflow_task))


def activity_completed_response_from_pb(
        m: pb.RespondActivityTaskCompletedResponse) -> api.RespondActivityTaskCompletedResponse:
    return api.RespondActivityTaskCompletedResponse(
        workflow_task=workflow_task_from_pb(m.workflow_task) if m.HasField("workflow_task") else None)


def activity_failed_to_pb(r: api.RespondActivityTaskFailedRequest) -> pb.RespondActivityTaskFailedRequest:
    return pb.RespondActivityTaskFailedRequest(task_token=r.task_token, failure=failure_to_pb(r.failure),
                                               identity=r.identity)


def activity_failed_from_pb(m: pb.RespondActivityTaskFailedRequest) -> api.RespondActivityTaskFailedRequest:
    if not m.HasField("failure"):
        raise InvalidArgument("failure is required")
    return api.RespondActivityTaskFailedRequest(task_token=m.task_token, failure=failure_from_pb(m.failure),
                                                identity=m.identity)


def heartbeat_request_to_pb(r: api.RecordActivityHeartbeatRequest) -> pb.RecordActivityHeartbeatRequest:
    return pb.RecordActivityHeartbeatRequest(task_token=r.task_token, details_json=_dump_any(r.details, "details"),
                                             identity=r.identity)


def heartbeat_request_from_pb(m: pb.RecordActivityHeartbeatRequest) -> api.RecordActivityHeartbeatRequest:
    return api.RecordActivityHeartbeatRequest(task_token=m.task_token,
                                              details=_load_any(m.details_json, "details_json"),
                                              identity=m.identity)


def heartbeat_response_to_pb(r: api.RecordActivityHeartbeatResponse) -> pb.RecordActivityHeartbeatResponse:
    return pb.RecordActivityHeartbeatResponse(cancel_requested=r.cancel_requested)


def heartbeat_response_from_pb(m: pb.RecordActivityHeartbeatResponse) -> api.RecordActivityHeartbeatResponse:
    return api.RecordActivityHeartbeatResponse(cancel_requested=m.cancel_requested)


def activity_canceled_to_pb(r: api.RespondActivityTaskCanceledRequest) -> pb.RespondActivityTaskCanceledRequest:
    return pb.RespondActivityTaskCanceledRequest(task_token=r.task_token,
                                                 details_json=_dump_any(r.details, "details"), identity=r.identity)


def activity_canceled_from_pb(m: pb.RespondActivityTaskCanceledRequest) -> api.RespondActivityTaskCanceledRequest:
    return api.RespondActivityTaskCanceledRequest(task_token=m.task_token,
                                                  details=_load_any(m.details_json, "details_json"),
                                                  identity=m.identity)


# ---------------------------------------------------------------- processes (issue 3)

def process_message_to_pb(msg: api.ProcessMessage) -> pb.ProcessMessage:
    return pb.ProcessMessage(kind=msg.kind, topic=msg.topic, payload_json=_dump_any(msg.payload, "payload"),
                             sender=msg.sender, event_json=_dump_any(msg.event, "event"))


def process_message_from_pb(m: pb.ProcessMessage) -> api.ProcessMessage:
    event = _load_any(m.event_json, "event_json")
    if event is not None and not isinstance(event, dict):
        raise InvalidArgument(f"event_json must be a JSON object, got {type(event).__name__}")
    return api.ProcessMessage(kind=m.kind, topic=m.topic, payload=_load_any(m.payload_json, "payload_json"),
                              sender=m.sender, event=event)


def send_message_request_to_pb(r: api.SendMessageRequest) -> pb.SendMessageRequest:
    return pb.SendMessageRequest(target=r.target, topic=r.topic, payload_json=_dump_any(r.payload, "payload"),
                                 sender=r.sender, namespace=r.namespace, request_id=r.request_id)


def send_message_request_from_pb(m: pb.SendMessageRequest) -> api.SendMessageRequest:
    return api.SendMessageRequest(target=m.target, topic=m.topic,
                                  payload=_load_any(m.payload_json, "payload_json"), sender=m.sender,
                                  namespace=_ns(m.namespace), request_id=m.request_id)


def open_mailbox_request_from_pb(m: pb.OpenMailboxRequest) -> str:
    return m.pid


def close_mailbox_request_from_pb(m: pb.CloseMailboxRequest) -> str:
    return m.pid


def poll_mailbox_request_to_pb(r: api.PollMailboxRequest) -> pb.PollMailboxRequest:
    return pb.PollMailboxRequest(pid=r.pid, timeout_ms=r.timeout_ms, max_messages=r.max_messages)


def poll_mailbox_request_from_pb(m: pb.PollMailboxRequest) -> api.PollMailboxRequest:
    # proto3 cannot tell 0 from unset: 0 messages means the default.
    return api.PollMailboxRequest(pid=m.pid, timeout_ms=m.timeout_ms, max_messages=m.max_messages or 100)


def poll_mailbox_response_to_pb(msgs: list[api.ProcessMessage]) -> pb.PollMailboxResponse:
    return pb.PollMailboxResponse(messages=[process_message_to_pb(x) for x in msgs])


def poll_mailbox_response_from_pb(m: pb.PollMailboxResponse) -> list[api.ProcessMessage]:
    return [process_message_from_pb(x) for x in m.messages]


def monitor_request_to_pb(r: api.MonitorWorkflowRequest) -> pb.MonitorWorkflowRequest:
    return pb.MonitorWorkflowRequest(ref=ref_to_pb(r.ref), monitor_pid=r.monitor_pid, link=r.link, remove=r.remove)


def monitor_request_from_pb(m: pb.MonitorWorkflowRequest) -> api.MonitorWorkflowRequest:
    return api.MonitorWorkflowRequest(ref=ref_from_pb(m.ref), monitor_pid=m.monitor_pid, link=m.link,
                                      remove=m.remove)


# ---------------------------------------------------------------- queries (issue 14)

def query_task_to_pb(q: api.QueryTask) -> pb.QueryTask:
    return pb.QueryTask(query_id=q.query_id, query_type=q.query_type, args_json=_dump_any(q.args, "query args"),
                        cache_only=q.cache_only)


def query_task_from_pb(m: pb.QueryTask) -> api.QueryTask:
    return api.QueryTask(m.query_id, m.query_type, _load_any(m.args_json, "query.args_json"), m.cache_only)


def query_request_to_pb(r: api.QueryWorkflowRequest) -> pb.QueryWorkflowRequest:
    return pb.QueryWorkflowRequest(ref=ref_to_pb(r.ref), query_type=r.query_type,
                                   args_json=_dump_any(r.args, "args"), timeout_ms=r.timeout_ms)


def query_request_from_pb(m: pb.QueryWorkflowRequest) -> api.QueryWorkflowRequest:
    return api.QueryWorkflowRequest(ref_from_pb(m.ref), m.query_type, _load_any(m.args_json, "args_json"),
                                    m.timeout_ms)


def query_response_to_pb(r: api.QueryWorkflowResponse) -> pb.QueryWorkflowResponse:
    return pb.QueryWorkflowResponse(run_id=r.run_id, status=r.status, result_json=_dump_any(r.result, "result"),
                                    source=r.source, worker=r.worker, task_queue=r.task_queue)


def query_response_from_pb(m: pb.QueryWorkflowResponse) -> api.QueryWorkflowResponse:
    return api.QueryWorkflowResponse(m.run_id, _enum(api.WorkflowStatus, m.status, "status"),
                                     _load_any(m.result_json, "result_json"), m.source, m.worker, m.task_queue)


def query_answer_to_pb(r: api.RespondQueryTaskCompletedRequest) -> pb.RespondQueryTaskCompletedRequest:
    m = pb.RespondQueryTaskCompletedRequest(task_token=r.task_token, result_json=_dump_any(r.result, "result"),
                                            source=r.source, not_cached=r.not_cached, identity=r.identity)
    _set_failure(m.failure, r.failure)
    return m


def query_answer_from_pb(m: pb.RespondQueryTaskCompletedRequest) -> api.RespondQueryTaskCompletedRequest:
    return api.RespondQueryTaskCompletedRequest(m.task_token, _load_any(m.result_json, "result_json"),
                                                _opt_failure(m, "failure"), m.source, m.not_cached, m.identity)
