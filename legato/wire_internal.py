"""Conversions for the internal gRPC APIs (`HistoryService`, `MatchingService` in
`legato.proto`): the messages the public API does not have.

The rest of those services' messages are the public API's, converted by `legato.wire`, whose
conventions (and helpers) these follow: every `x_to_pb` has an `x_from_pb` giving back an equal
dataclass; payloads travel as JSON text; a malformed message raises `InvalidArgument` naming the
field.
"""

from __future__ import annotations

from google.protobuf.message import Message

from legato import api
from legato.errors import InvalidArgument
from legato.wire import (
    _dump_any,
    _enum,
    _load_any,
    _ns,
    _opt_failure,
    _set_failure,
    activity_task_from_pb,
    activity_task_to_pb,
    parent_from_pb,
    parent_to_pb,
    pb,
    process_message_from_pb,
    process_message_to_pb,
    query_task_from_pb,
    query_task_to_pb,
    ref_from_pb,
    ref_to_pb,
    workflow_task_from_pb,
    workflow_task_to_pb,
)


def _required(m: Message, name: str, what: str) -> None:
    if not m.HasField(name):
        raise InvalidArgument(f"{what}: {name} is required")


# ---------------------------------------------------------------- tasks

def task_info_to_pb(t: api.TaskInfo) -> pb.TaskInfo:
    return pb.TaskInfo(kind=t.kind, namespace=t.namespace, task_queue=t.task_queue, workflow_id=t.workflow_id,
                       run_id=t.run_id, scheduled_event_id=t.scheduled_event_id, shard_id=t.shard_id,
                       task_id=t.task_id, attempt=t.attempt, created_ms=t.created_ms)


def task_info_from_pb(m: pb.TaskInfo) -> api.TaskInfo:
    return api.TaskInfo(kind=_enum(api.TaskKind, m.kind, "task.kind"), namespace=_ns(m.namespace),
                        task_queue=m.task_queue, workflow_id=m.workflow_id, run_id=m.run_id,
                        scheduled_event_id=m.scheduled_event_id, shard_id=m.shard_id, task_id=m.task_id,
                        attempt=m.attempt, created_ms=m.created_ms)


# The arguments of HistoryService.record_*_task_started: (task, request_id, identity).
RecordStarted = tuple[api.TaskInfo, str, str]


def record_workflow_started_to_pb(task: api.TaskInfo, request_id: str,
                                  identity: str) -> pb.RecordWorkflowTaskStartedRequest:
    return pb.RecordWorkflowTaskStartedRequest(task=task_info_to_pb(task), request_id=request_id, identity=identity)


def record_workflow_started_from_pb(m: pb.RecordWorkflowTaskStartedRequest) -> RecordStarted:
    _required(m, "task", "record workflow task started")
    return task_info_from_pb(m.task), m.request_id, m.identity


def record_workflow_started_response_to_pb(t: api.WorkflowTask) -> pb.RecordWorkflowTaskStartedResponse:
    return pb.RecordWorkflowTaskStartedResponse(task=workflow_task_to_pb(t))


def record_workflow_started_response_from_pb(m: pb.RecordWorkflowTaskStartedResponse) -> api.WorkflowTask:
    _required(m, "task", "record workflow task started response")
    return workflow_task_from_pb(m.task)


def record_activity_started_to_pb(task: api.TaskInfo, request_id: str,
                                  identity: str) -> pb.RecordActivityTaskStartedRequest:
    return pb.RecordActivityTaskStartedRequest(task=task_info_to_pb(task), request_id=request_id, identity=identity)


def record_activity_started_from_pb(m: pb.RecordActivityTaskStartedRequest) -> RecordStarted:
    _required(m, "task", "record activity task started")
    return task_info_from_pb(m.task), m.request_id, m.identity


def record_activity_started_response_to_pb(t: api.ActivityTask) -> pb.RecordActivityTaskStartedResponse:
    return pb.RecordActivityTaskStartedResponse(task=activity_task_to_pb(t))


def record_activity_started_response_from_pb(m: pb.RecordActivityTaskStartedResponse) -> api.ActivityTask:
    _required(m, "task", "record activity task started response")
    return activity_task_from_pb(m.task)


def add_task_request_to_pb(t: api.TaskInfo) -> pb.AddTaskRequest:
    return pb.AddTaskRequest(task=task_info_to_pb(t))


def add_task_request_from_pb(m: pb.AddTaskRequest) -> api.TaskInfo:
    _required(m, "task", "add task")
    return task_info_from_pb(m.task)


def offer_task_to_pb(t: api.TaskInfo, request_id: str) -> pb.OfferTaskRequest:
    return pb.OfferTaskRequest(task=task_info_to_pb(t), request_id=request_id)


def offer_task_from_pb(m: pb.OfferTaskRequest) -> tuple[api.TaskInfo, str]:
    _required(m, "task", "offer task")
    return task_info_from_pb(m.task), m.request_id


def offer_result_to_pb(r: api.OfferResult) -> pb.OfferTaskResponse:
    return pb.OfferTaskResponse(taken=r.taken, pollers=r.pollers)


def offer_result_from_pb(m: pb.OfferTaskResponse) -> api.OfferResult:
    return api.OfferResult(m.taken, m.pollers)


# ---------------------------------------------------------------- caller mailboxes

def deliver_message_to_pb(pid: str, msg: api.ProcessMessage) -> pb.DeliverMessageRequest:
    return pb.DeliverMessageRequest(pid=pid, message=process_message_to_pb(msg))


def deliver_message_from_pb(m: pb.DeliverMessageRequest) -> tuple[str, api.ProcessMessage]:
    _required(m, "message", "deliver message")
    return m.pid, process_message_from_pb(m.message)


def deliver_message_response_to_pb(delivered: bool) -> pb.DeliverMessageResponse:
    return pb.DeliverMessageResponse(delivered=delivered)


def deliver_message_response_from_pb(m: pb.DeliverMessageResponse) -> bool:
    return m.delivered


# ---------------------------------------------------------------- between runs

def execution_closed_to_pb(c: api.ExecutionClosed) -> pb.ExecutionClosed:
    m = pb.ExecutionClosed(namespace=c.namespace, workflow_id=c.workflow_id, run_id=c.run_id, status=c.status,
                           result_json=_dump_any(c.result, "result"))
    _set_failure(m.failure, c.failure)
    return m


def execution_closed_from_pb(m: pb.ExecutionClosed) -> api.ExecutionClosed:
    return api.ExecutionClosed(namespace=_ns(m.namespace), workflow_id=m.workflow_id, run_id=m.run_id,
                               status=_enum(api.WorkflowStatus, m.status, "closed.status"),
                               result=_load_any(m.result_json, "closed.result_json"),
                               failure=_opt_failure(m, "failure"))


def monitor_registration_to_pb(r: api.MonitorRegistration) -> pb.MonitorRegistration:
    return pb.MonitorRegistration(namespace=r.namespace, pid=r.pid, run_id=r.run_id,
                                  initiated_event_id=r.initiated_event_id, link=r.link)


def monitor_registration_from_pb(m: pb.MonitorRegistration) -> api.MonitorRegistration:
    return api.MonitorRegistration(namespace=_ns(m.namespace), pid=m.pid, run_id=m.run_id,
                                   initiated_event_id=m.initiated_event_id, link=m.link)


def register_monitor_to_pb(r: api.RegisterMonitorRequest) -> pb.RegisterMonitorRequest:
    return pb.RegisterMonitorRequest(ref=ref_to_pb(r.ref), monitor=monitor_registration_to_pb(r.monitor),
                                     remove=r.remove)


def register_monitor_from_pb(m: pb.RegisterMonitorRequest) -> api.RegisterMonitorRequest:
    _required(m, "monitor", "register monitor")
    return api.RegisterMonitorRequest(ref=ref_from_pb(m.ref), monitor=monitor_registration_from_pb(m.monitor),
                                      remove=m.remove)


def register_monitor_response_to_pb(r: api.RegisterMonitorResponse) -> pb.RegisterMonitorResponse:
    m = pb.RegisterMonitorResponse(run_id=r.run_id)
    if r.closed is not None:
        m.closed.CopyFrom(execution_closed_to_pb(r.closed))
    return m


def register_monitor_response_from_pb(m: pb.RegisterMonitorResponse) -> api.RegisterMonitorResponse:
    return api.RegisterMonitorResponse(
        run_id=m.run_id, closed=execution_closed_from_pb(m.closed) if m.HasField("closed") else None)


def child_closed_to_pb(r: api.RecordChildClosedRequest) -> pb.RecordChildClosedRequest:
    return pb.RecordChildClosedRequest(parent=parent_to_pb(r.parent), child=execution_closed_to_pb(r.child),
                                       existing=r.existing)


def child_closed_from_pb(m: pb.RecordChildClosedRequest) -> api.RecordChildClosedRequest:
    _required(m, "parent", "record child closed")
    _required(m, "child", "record child closed")
    return api.RecordChildClosedRequest(parent=parent_from_pb(m.parent), child=execution_closed_from_pb(m.child),
                                        existing=m.existing)


def monitored_closed_to_pb(r: api.DeliverMonitoredClosedRequest) -> pb.DeliverMonitoredClosedRequest:
    return pb.DeliverMonitoredClosedRequest(ref=ref_to_pb(r.ref), closed=execution_closed_to_pb(r.closed),
                                            link=r.link)


def monitored_closed_from_pb(m: pb.DeliverMonitoredClosedRequest) -> api.DeliverMonitoredClosedRequest:
    _required(m, "closed", "deliver monitored closed")
    return api.DeliverMonitoredClosedRequest(ref=ref_from_pb(m.ref), closed=execution_closed_from_pb(m.closed),
                                             link=m.link)


# ---------------------------------------------------------------- queries (issue 14)

def query_target_to_pb(t: api.QueryTarget) -> pb.QueryTarget:
    return pb.QueryTarget(run_id=t.run_id, workflow_type=t.workflow_type, task_queue=t.task_queue, status=t.status,
                          sticky_identity=t.sticky_identity)


def query_target_from_pb(m: pb.QueryTarget) -> api.QueryTarget:
    return api.QueryTarget(m.run_id, m.workflow_type, m.task_queue, _enum(api.WorkflowStatus, m.status, "status"),
                           m.sticky_identity)


def query_task_request_to_pb(r: api.QueryTaskRequest) -> pb.QueryTaskRequest:
    return pb.QueryTaskRequest(namespace=r.namespace, task_queue=r.task_queue, workflow_id=r.workflow_id,
                               run_id=r.run_id, workflow_type=r.workflow_type, query=query_task_to_pb(r.query),
                               sticky_identity=r.sticky_identity, timeout_ms=r.timeout_ms)


def query_task_request_from_pb(m: pb.QueryTaskRequest) -> api.QueryTaskRequest:
    _required(m, "query", "query task request")
    return api.QueryTaskRequest(_ns(m.namespace), m.task_queue, m.workflow_id, m.run_id, m.workflow_type,
                                query_task_from_pb(m.query), m.sticky_identity, m.timeout_ms)
