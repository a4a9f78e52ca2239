"""The public gRPC API: serves a `legato.api.WorkflowService` (normally the `Frontend`).

Each rpc converts the protobuf request (`legato.wire`), calls the service and converts the
answer back. A `ServiceError` becomes its gRPC status code, with the message as details and the
reason in the trailing metadata key `legato-reason` (`AlreadyStarted` also sends `legato-run-id`).
Anything else is a bug: it is logged with its traceback and answered with INTERNAL and a one-line
message; the server keeps serving. A cancelled rpc (the client went away) cancels the service
call, which is how matching gets a task back from a poll nobody waits for.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from legato import api, wire
from legato.config import Config
from legato.errors import AlreadyStarted, ServiceError
from legato.proto import legato_pb2_grpc

log = logging.getLogger("legato.frontend.grpc")

REASON_KEY = "legato-reason"
RUN_ID_KEY = "legato-run-id"

_NOT_ASCII = re.compile(r"[^ -~]")

Handler = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]

# rpc name -> (WorkflowService method, request decoder, response encoder)
RPCS: dict[str, tuple[str, Callable[[Any], Any], Callable[[Any], Any]]] = {
    "StartWorkflow": ("start_workflow", wire.start_request_from_pb, wire.start_response_to_pb),
    "SignalWorkflow": ("signal_workflow", wire.signal_request_from_pb,
                       lambda _: wire.pb.SignalWorkflowResponse()),
    "TerminateWorkflow": ("terminate_workflow", wire.terminate_request_from_pb,
                          lambda _: wire.pb.TerminateWorkflowResponse()),
    "RequestCancelWorkflow": ("request_cancel_workflow", wire.cancel_request_from_pb,
                              lambda _: wire.pb.RequestCancelWorkflowResponse()),
    "DescribeWorkflow": ("describe_workflow", wire.describe_request_from_pb, wire.describe_response_to_pb),
    "GetWorkflowHistory": ("get_workflow_history", wire.history_request_from_pb, wire.history_response_to_pb),
    "GetWorkflowResult": ("get_workflow_result", wire.result_request_from_pb, wire.result_response_to_pb),
    "ListWorkflows": ("list_workflows", wire.list_request_from_pb, wire.list_response_to_pb),
    "CountWorkflows": ("count_workflows", wire.count_request_from_pb, wire.count_response_to_pb),
    "PollWorkflowTask": ("poll_workflow_task", wire.poll_workflow_request_from_pb,
                         wire.poll_workflow_response_to_pb),
    "RespondWorkflowTaskCompleted": ("respond_workflow_task_completed", wire.workflow_task_completed_from_pb,
                                     wire.workflow_task_completed_response_to_pb),
    "RespondWorkflowTaskFailed": ("respond_workflow_task_failed", wire.workflow_task_failed_from_pb,
                                  lambda _: wire.pb.RespondWorkflowTaskFailedResponse()),
    "PollActivityTask": ("poll_activity_task", wire.poll_activity_request_from_pb,
                         wire.poll_activity_response_to_pb),
    "RespondActivityTaskCompleted": ("respond_activity_task_completed", wire.activity_completed_from_pb,
                                     wire.activity_completed_response_to_pb),
    "RespondActivityTaskFailed": ("respond_activity_task_failed", wire.activity_failed_from_pb,
                                  lambda _: wire.pb.RespondActivityTaskFailedResponse()),
    "RecordActivityHeartbeat": ("record_activity_heartbeat", wire.heartbeat_request_from_pb,
                                wire.heartbeat_response_to_pb),
    "RespondActivityTaskCanceled": ("respond_activity_task_canceled", wire.activity_canceled_from_pb,
                                    lambda _: wire.pb.RespondActivityTaskCanceledResponse()),
    # processes (issue 3)
    "SendMessage": ("send_message", wire.send_message_request_from_pb, lambda _: wire.pb.SendMessageResponse()),
    "OpenMailbox": ("open_mailbox", wire.open_mailbox_request_from_pb, lambda _: wire.pb.OpenMailboxResponse()),
    "CloseMailbox": ("close_mailbox", wire.close_mailbox_request_from_pb, lambda _: wire.pb.CloseMailboxResponse()),
    "PollMailbox": ("poll_mailbox", wire.poll_mailbox_request_from_pb, wire.poll_mailbox_response_to_pb),
    "MonitorWorkflow": ("monitor_workflow", wire.monitor_request_from_pb, lambda _: wire.pb.MonitorWorkflowResponse()),
}


def _ascii(text: str) -> str:
    return _NOT_ASCII.sub("?", text)


def error_status(e: ServiceError) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]]:
    """The status code, details and trailing metadata a service error travels as."""
    try:
        code = grpc.StatusCode[e.code]
    except KeyError:
        code = grpc.StatusCode.UNKNOWN
    metadata: tuple[tuple[str, str], ...] = ((REASON_KEY, _ascii(e.reason)),)
    if isinstance(e, AlreadyStarted) and e.run_id:
        metadata += ((RUN_ID_KEY, _ascii(e.run_id)),)
    return code, e.message, metadata


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if len(text) > 500:
        text = text[:500] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _handler(rpc: str, method: Callable[[Any], Awaitable[Any]],
             decode: Callable[[Any], Any], encode: Callable[[Any], Any]) -> Handler:
    async def handle(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            result = await method(decode(request))
        except ServiceError as e:
            code, details, metadata = error_status(e)
        except Exception as e:  # a bug: never let it take the server down (cancellation passes)
            log.exception("internal error in rpc %s", rpc)
            code, details = grpc.StatusCode.INTERNAL, f"internal error in {rpc}: {_one_line(e)}"
            metadata = ((REASON_KEY, "Internal"),)
        else:
            try:
                return encode(result)
            except Exception as e:
                log.exception("cannot encode the response of rpc %s", rpc)
                code, details = grpc.StatusCode.INTERNAL, f"internal error in {rpc}: {_one_line(e)}"
                metadata = ((REASON_KEY, "Internal"),)
        await context.abort(code, details, metadata)

    return handle


class _Servicer(legato_pb2_grpc.WorkflowServiceServicer):
    """One attribute per rpc, each bound to the wrapped service."""

    def __init__(self, service: api.WorkflowService) -> None:
        for rpc, (method_name, decode, encode) in RPCS.items():
            setattr(self, rpc, _handler(rpc, getattr(service, method_name), decode, encode))


async def serve(service: api.WorkflowService, host: str, port: int, *,
                config: Config | None = None, max_message_bytes: int | None = None) -> grpc.aio.Server:
    """Start serving `service` on host:port and return the started server; the caller stops it
    (`await server.stop(grace)`). Port 0 picks a free port: see `bound_port(server)`.

    Requests up to `max_message_bytes` are accepted (default: derived from `config.limits`, see
    `legato.wire.max_message_bytes`). Raises OSError when the address cannot be bound.
    """
    limit = max_message_bytes or wire.max_message_bytes(config or Config())
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", -1),
        ("grpc.so_reuseport", 0),  # a second server on a busy port must fail, not share it
    ])
    legato_pb2_grpc.add_WorkflowServiceServicer_to_server(_Servicer(service), server)
    address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:
        raise OSError(f"cannot listen on {address}: the address is in use or not available") from e
    if not bound:
        raise OSError(f"cannot listen on {address}: the address is in use or not available")
    server.legato_port = bound
    await server.start()
    log.info("Legato gRPC API listening on %s", f"{address.rsplit(':', 1)[0]}:{bound}")
    return server


def bound_port(server: grpc.aio.Server) -> int:
    """The port a server made by `serve` listens on (useful with port 0)."""
    return int(server.legato_port)
