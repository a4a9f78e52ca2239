"""The public gRPC API: serves a `legato.api.WorkflowService` (normally the `Frontend`).

Each rpc converts the protobuf request (`legato.wire`), calls the service and converts the
answer back; errors, unexpected exceptions and cancellation are handled as for every Legato
server (`legato.grpc_serving`, `legato.grpc_errors`): a `ServiceError` becomes its gRPC status
code, with the message as details, the reason in the trailing metadata key `legato-reason` and
the class name in `legato-error` (`AlreadyStarted` also sends `legato-run-id`); a cancelled rpc
(the client went away) cancels the service call, which is how matching gets a task back from a
poll nobody waits for.
"""

from __future__ import annotations

import logging

import grpc

from frontend.namespaces import RULES as NAMESPACE_RULES
from frontend.service import MAX_WAIT_MS
from legato import api, wire
from legato.config import Config
from legato.grpc_serving import Rpc, add_service, bound_port, fit_wait, start_server

__all__ = ["RPCS", "bound_port", "serve"]

log = logging.getLogger("legato.frontend.grpc")

# Waits end, empty, before the caller's deadline (`fit_wait`), whatever wait the request asks for.


def _fit_history_wait(req: api.GetHistoryRequest, remaining_s: float) -> api.GetHistoryRequest:
    fitted: api.GetHistoryRequest = fit_wait(req, remaining_s) if req.wait_new_event else req
    return fitted


def _fit_task_poll(req: api.PollRequest, remaining_s: float) -> api.PollRequest:
    # A timeout of 0 is matching's long-poll timeout, which matching also caps any wait at: taking
    # it as the longest wait the API allows fits it without knowing matching's configuration.
    fitted: api.PollRequest = fit_wait(req, remaining_s, MAX_WAIT_MS)
    return fitted


RPCS: dict[str, Rpc] = {
    "StartWorkflow": Rpc("start_workflow", wire.start_request_from_pb, wire.start_response_to_pb),
    "SignalWorkflow": Rpc("signal_workflow", wire.signal_request_from_pb,
                          lambda _: wire.pb.SignalWorkflowResponse()),
    "TerminateWorkflow": Rpc("terminate_workflow", wire.terminate_request_from_pb,
                             lambda _: wire.pb.TerminateWorkflowResponse()),
    "RequestCancelWorkflow": Rpc("request_cancel_workflow", wire.cancel_request_from_pb,
                                 lambda _: wire.pb.RequestCancelWorkflowResponse()),
    "DescribeWorkflow": Rpc("describe_workflow", wire.describe_request_from_pb, wire.describe_response_to_pb),
    "GetWorkflowHistory": Rpc("get_workflow_history", wire.history_request_from_pb, wire.history_response_to_pb,
                              fit=_fit_history_wait),
    "GetWorkflowResult": Rpc("get_workflow_result", wire.result_request_from_pb, wire.result_response_to_pb,
                             fit=fit_wait),
    "ListWorkflows": Rpc("list_workflows", wire.list_request_from_pb, wire.list_response_to_pb),
    "CountWorkflows": Rpc("count_workflows", wire.count_request_from_pb, wire.count_response_to_pb),
    "PollWorkflowTask": Rpc("poll_workflow_task", wire.poll_workflow_request_from_pb,
                            wire.poll_workflow_response_to_pb, fit=_fit_task_poll),
    "RespondWorkflowTaskCompleted": Rpc("respond_workflow_task_completed", wire.workflow_task_completed_from_pb,
                                        wire.workflow_task_completed_response_to_pb),
    "RespondWorkflowTaskFailed": Rpc("respond_workflow_task_failed", wire.workflow_task_failed_from_pb,
                                     lambda _: wire.pb.RespondWorkflowTaskFailedResponse()),
    "PollActivityTask": Rpc("poll_activity_task", wire.poll_activity_request_from_pb,
                            wire.poll_activity_response_to_pb, fit=_fit_task_poll),
    "RespondActivityTaskCompleted": Rpc("respond_activity_task_completed", wire.activity_completed_from_pb,
                                        wire.activity_completed_response_to_pb),
    "RespondActivityTaskFailed": Rpc("respond_activity_task_failed", wire.activity_failed_from_pb,
                                     lambda _: wire.pb.RespondActivityTaskFailedResponse()),
    "RecordActivityHeartbeat": Rpc("record_activity_heartbeat", wire.heartbeat_request_from_pb,
                                   wire.heartbeat_response_to_pb),
    "RespondActivityTaskCanceled": Rpc("respond_activity_task_canceled", wire.activity_canceled_from_pb,
                                       lambda _: wire.pb.RespondActivityTaskCanceledResponse()),
    # processes (issue 3)
    "SendMessage": Rpc("send_message", wire.send_message_request_from_pb, lambda _: wire.pb.SendMessageResponse()),
    "OpenMailbox": Rpc("open_mailbox", wire.open_mailbox_request_from_pb, lambda _: wire.pb.OpenMailboxResponse()),
    "CloseMailbox": Rpc("close_mailbox", wire.close_mailbox_request_from_pb,
                        lambda _: wire.pb.CloseMailboxResponse()),
    "PollMailbox": Rpc("poll_mailbox", wire.poll_mailbox_request_from_pb, wire.poll_mailbox_response_to_pb,
                       fit=fit_wait),
    "MonitorWorkflow": Rpc("monitor_workflow", wire.monitor_request_from_pb,
                           lambda _: wire.pb.MonitorWorkflowResponse()),
    "QueryWorkflow": Rpc("query_workflow", wire.query_request_from_pb, wire.query_response_to_pb, fit=fit_wait),
    "RespondQueryTaskCompleted": Rpc("respond_query_task_completed", wire.query_answer_from_pb,
                                     lambda _: wire.pb.RespondQueryTaskCompletedResponse()),
}


async def serve(service: api.WorkflowService, host: str, port: int, *,
                config: Config | None = None, max_message_bytes: int | None = None) -> grpc.aio.Server:
    """Start serving `service` on host:port and return the started server; the caller stops it
    (`await server.stop(grace)`). Port 0 picks a free port: see `bound_port(server)`.

    Requests up to `max_message_bytes` are accepted (default: derived from `config.limits`, see
    `legato.wire.max_message_bytes`). Raises OSError when the address cannot be bound.
    """
    return await start_server(
        lambda server: add_service(server, "WorkflowService", service, RPCS, log),
        host, port, config=config, max_message_bytes=max_message_bytes, namespace_rules=NAMESPACE_RULES,
        what="Legato gRPC API", log=log)
