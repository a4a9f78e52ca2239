"""The internal gRPC API of history: serves a `legato.api.HistoryService` (normally
`HistoryServiceImpl`) to frontends and matching nodes in other processes.

Each rpc mirrors one protocol method (`HistoryService` in `legato.proto`); requests and answers
are converted by `legato.wire` and `legato.wire_internal`, and errors, unexpected exceptions and
cancellation are handled as by every Legato server (`legato.grpc_serving`): a `ShardOwnershipLost`
raised here arrives at the caller as a `ShardOwnershipLost`. The two waits (history long poll,
result wait) are shortened to end before the caller's deadline.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc

from legato import api, call_batch, wire
from legato import wire_internal as wi
from legato.config import Config
from legato.grpc_serving import Rpc, add_service, bound_port, empty, fit_wait, start_server

__all__ = ["RPCS", "bound_port", "serve", "served"]

log = logging.getLogger("legato.history.grpc")


def _fit_history_wait(req: api.GetHistoryRequest, remaining_s: float) -> api.GetHistoryRequest:
    fitted: api.GetHistoryRequest = fit_wait(req, remaining_s) if req.wait_new_event else req
    return fitted


RPCS: dict[str, Rpc] = {
    "StartWorkflow": Rpc("start_workflow", wire.start_request_from_pb, wire.start_response_to_pb),
    "SignalWorkflow": Rpc("signal_workflow", wire.signal_request_from_pb, empty(wire.pb.SignalWorkflowResponse)),
    "TerminateWorkflow": Rpc("terminate_workflow", wire.terminate_request_from_pb,
                             empty(wire.pb.TerminateWorkflowResponse)),
    "RequestCancelWorkflow": Rpc("request_cancel_workflow", wire.cancel_request_from_pb,
                                 empty(wire.pb.RequestCancelWorkflowResponse)),
    "DescribeWorkflow": Rpc("describe_workflow", wire.describe_request_from_pb, wire.describe_response_to_pb),
    "GetWorkflowHistory": Rpc("get_workflow_history", wire.history_request_from_pb, wire.history_response_to_pb,
                              fit=_fit_history_wait),
    "GetWorkflowResult": Rpc("get_workflow_result", wire.result_request_from_pb, wire.result_response_to_pb,
                             fit=fit_wait),
    "RecordWorkflowTaskStarted": Rpc("record_workflow_task_started", wi.record_workflow_started_from_pb,
                                     wi.record_workflow_started_response_to_pb, spread=True),
    "RecordActivityTaskStarted": Rpc("record_activity_task_started", wi.record_activity_started_from_pb,
                                     wi.record_activity_started_response_to_pb, spread=True),
    "RespondWorkflowTaskCompleted": Rpc("respond_workflow_task_completed", wire.workflow_task_completed_from_pb,
                                        wire.workflow_task_completed_response_to_pb),
    "RespondWorkflowTaskFailed": Rpc("respond_workflow_task_failed", wire.workflow_task_failed_from_pb,
                                     empty(wire.pb.RespondWorkflowTaskFailedResponse)),
    "RespondActivityTaskCompleted": Rpc("respond_activity_task_completed", wire.activity_completed_from_pb,
                                        wire.activity_completed_response_to_pb),
    "RespondActivityTaskFailed": Rpc("respond_activity_task_failed", wire.activity_failed_from_pb,
                                     empty(wire.pb.RespondActivityTaskFailedResponse)),
    "RecordActivityHeartbeat": Rpc("record_activity_heartbeat", wire.heartbeat_request_from_pb,
                                   wire.heartbeat_response_to_pb),
    "RespondActivityTaskCanceled": Rpc("respond_activity_task_canceled", wire.activity_canceled_from_pb,
                                       empty(wire.pb.RespondActivityTaskCanceledResponse)),
    "MonitorWorkflow": Rpc("monitor_workflow", wire.monitor_request_from_pb, empty(wire.pb.MonitorWorkflowResponse)),
    "RegisterMonitor": Rpc("register_monitor", wi.register_monitor_from_pb, wi.register_monitor_response_to_pb),
    "RecordChildClosed": Rpc("record_child_closed", wi.child_closed_from_pb,
                             empty(wire.pb.RecordChildClosedResponse)),
    "DeliverMonitoredClosed": Rpc("deliver_monitored_closed", wi.monitored_closed_from_pb,
                                  empty(wire.pb.DeliverMonitoredClosedResponse)),
    "GetQueryTarget": Rpc("get_query_target", wire.describe_request_from_pb, wi.query_target_to_pb),
    "CallBatch": Rpc("call_batch", lambda batch: batch, lambda results: results),
}


class _Served:
    """The history service as its rpcs see it: its own methods, and `call_batch`, which carries
    out the calls of a `CallBatch` on it (legato/call_batch.py)."""

    def __init__(self, service: api.HistoryService) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def call_batch(self, batch: wire.pb.HistoryCallBatch) -> wire.pb.HistoryCallResults:
        return await call_batch.run_batch(self._service, RPCS, batch)


def served(service: api.HistoryService) -> Any:
    """What the rpcs of `RPCS` call: `service`, with `call_batch` added."""
    return _Served(service)


async def serve(service: api.HistoryService, host: str, port: int, *,
                config: Config | None = None, max_message_bytes: int | None = None) -> grpc.aio.Server:
    """Start serving `service` on host:port and return the started server; the caller stops it
    (`await server.stop(grace)`). Port 0 picks a free port: see `bound_port(server)`.

    Requests up to `max_message_bytes` are accepted (default: derived from `config.limits`, see
    `legato.wire.max_message_bytes`). Raises OSError when the address cannot be bound.
    """
    return await start_server(
        lambda server: add_service(server, "HistoryService", served(service), RPCS, log),
        host, port, config=config, max_message_bytes=max_message_bytes, what="Legato history gRPC API", log=log)
