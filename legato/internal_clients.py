"""Clients of the internal gRPC APIs: `GrpcHistoryClient` is a `legato.api.HistoryService`,
`GrpcMatchingClient` a `legato.api.MatchingService`, so that code written against the protocols
works unchanged whether the other service runs in the same process or behind an address.

    async with GrpcHistoryClient("10.0.0.5:7234") as history:
        desc = await history.describe_workflow(ExecutionRef("order-1"))

Connections, deadlines and errors are those of every Legato client (`legato.grpc_channel`): an
error raised by the remote service arrives as the same `legato.errors` class (a
`ShardOwnershipLost` stays one, so a router can look for the shard's new owner) with the same
message and reason. Only reads (describe, history, result) are retried, and only when the server
could not be reached; every other call may have been applied, so its caller decides (calls the
server pushed back unprocessed are sent again, as by every client). `security` is the TLS and
token of the calls between the services (`legato.tls.internal_security`). Waits use
deadlines slightly longer than the wait they ask for; cancelling a call cancels it on the server.
"""

from __future__ import annotations

from typing import Any

from legato import api, call_batch, wire
from legato import wire_internal as wi
from legato.config import GrpcConfig
from legato.grpc_channel import INTERNAL_CHANNEL_OPTIONS, ChannelClient, RpcChannel
from legato.proto import legato_pb2_grpc
from legato.tls import ClientSecurity

READ_ATTEMPTS = 3


def _busy(config: GrpcConfig | None) -> dict[str, int]:
    """The backoff of calls a server pushed back (`grpc.busy_retry_*`)."""
    c = config or GrpcConfig()
    return {"busy_retry_initial_ms": c.busy_retry_initial_ms, "busy_retry_max_ms": c.busy_retry_max_ms}


class _Client(ChannelClient):
    """The channel both internal clients are built on."""

    def __init__(self, rpc: RpcChannel) -> None:
        self._rpc = rpc
        self.address = rpc.address


class GrpcHistoryClient(_Client):
    """`legato.api.HistoryService` over gRPC. Use as `async with`, or call `await close()`."""

    def __init__(self, address: str, *, connect_timeout_s: float = 5.0, call_timeout_s: float = 30.0,
                 long_poll_margin_s: float = 5.0, read_attempts: int = READ_ATTEMPTS,
                 security: ClientSecurity | None = None, grpc_config: GrpcConfig | None = None) -> None:
        super().__init__(RpcChannel(address, legato_pb2_grpc.HistoryServiceStub, connect_timeout_s=connect_timeout_s,
                                    call_timeout_s=call_timeout_s, long_poll_margin_s=long_poll_margin_s,
                                    server_name="Legato history service", options=INTERNAL_CHANNEL_OPTIONS,
                                    security=security, **_busy(grpc_config)))
        self._read_attempts = max(1, read_attempts)
        # The calls between runs (a child's start, its close told to the parent) go in batches.
        self._batcher = call_batch.CallBatcher(lambda batch: self._rpc.call("CallBatch", batch), self._rpc.call)

    async def close(self) -> None:
        await self._batcher.close()
        await super().close()

    async def _read(self, rpc: str, request: Any, timeout_s: float | None = None) -> Any:
        return await self._rpc.call(rpc, request, timeout_s, attempts=self._read_attempts)

    # ------------------------------------------------------------ workflow lifecycle

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        return wire.start_response_from_pb(await self._batcher.call("start_workflow", wire.start_request_to_pb(req)))

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        await self._rpc.call("SignalWorkflow", wire.signal_request_to_pb(req))

    async def terminate_workflow(self, req: api.TerminateWorkflowRequest) -> None:
        await self._rpc.call("TerminateWorkflow", wire.terminate_request_to_pb(req))

    async def request_cancel_workflow(self, req: api.CancelWorkflowRequest) -> None:
        await self._rpc.call("RequestCancelWorkflow", wire.cancel_request_to_pb(req))

    # ------------------------------------------------------------ reads

    async def describe_workflow(self, ref: api.ExecutionRef) -> api.DescribeWorkflowResponse:
        return wire.describe_response_from_pb(await self._read("DescribeWorkflow", wire.describe_request_to_pb(ref)))

    async def get_workflow_history(self, req: api.GetHistoryRequest) -> api.GetHistoryResponse:
        timeout = self._wait_s(req.timeout_ms) if req.wait_new_event else None
        return wire.history_response_from_pb(
            await self._read("GetWorkflowHistory", wire.history_request_to_pb(req), timeout))

    async def get_workflow_result(self, req: api.GetResultRequest) -> api.GetResultResponse:
        return wire.result_response_from_pb(
            await self._read("GetWorkflowResult", wire.result_request_to_pb(req), self._wait_s(req.timeout_ms)))

    # ------------------------------------------------------------ tasks

    async def record_workflow_task_started(self, task: api.TaskInfo, request_id: str,
                                           identity: str) -> api.WorkflowTask:
        request = wi.record_workflow_started_to_pb(task, request_id, identity)
        return wi.record_workflow_started_response_from_pb(await self._rpc.call("RecordWorkflowTaskStarted", request))

    async def record_activity_task_started(self, task: api.TaskInfo, request_id: str,
                                           identity: str) -> api.ActivityTask:
        request = wi.record_activity_started_to_pb(task, request_id, identity)
        return wi.record_activity_started_response_from_pb(await self._rpc.call("RecordActivityTaskStarted", request))

    async def respond_workflow_task_completed(
            self, req: api.RespondWorkflowTaskCompletedRequest) -> api.RespondWorkflowTaskCompletedResponse:
        return wire.workflow_task_completed_response_from_pb(
            await self._rpc.call("RespondWorkflowTaskCompleted", wire.workflow_task_completed_to_pb(req)))

    async def respond_workflow_task_failed(self, req: api.RespondWorkflowTaskFailedRequest) -> None:
        await self._rpc.call("RespondWorkflowTaskFailed", wire.workflow_task_failed_to_pb(req))

    async def respond_activity_task_completed(
            self, req: api.RespondActivityTaskCompletedRequest) -> api.RespondActivityTaskCompletedResponse:
        return wire.activity_completed_response_from_pb(
            await self._rpc.call("RespondActivityTaskCompleted", wire.activity_completed_to_pb(req)))

    async def respond_activity_task_failed(self, req: api.RespondActivityTaskFailedRequest) -> None:
        await self._rpc.call("RespondActivityTaskFailed", wire.activity_failed_to_pb(req))

    async def record_activity_heartbeat(
            self, req: api.RecordActivityHeartbeatRequest) -> api.RecordActivityHeartbeatResponse:
        return wire.heartbeat_response_from_pb(
            await self._rpc.call("RecordActivityHeartbeat", wire.heartbeat_request_to_pb(req)))

    async def respond_activity_task_canceled(self, req: api.RespondActivityTaskCanceledRequest) -> None:
        await self._rpc.call("RespondActivityTaskCanceled", wire.activity_canceled_to_pb(req))

    # ------------------------------------------------------------ processes

    async def monitor_workflow(self, req: api.MonitorWorkflowRequest) -> None:
        await self._rpc.call("MonitorWorkflow", wire.monitor_request_to_pb(req))

    async def register_monitor(self, req: api.RegisterMonitorRequest) -> api.RegisterMonitorResponse:
        return wi.register_monitor_response_from_pb(
            await self._rpc.call("RegisterMonitor", wi.register_monitor_to_pb(req)))

    async def record_child_closed(self, req: api.RecordChildClosedRequest) -> None:
        await self._batcher.call("record_child_closed", wi.child_closed_to_pb(req))

    async def deliver_monitored_closed(self, req: api.DeliverMonitoredClosedRequest) -> None:
        await self._rpc.call("DeliverMonitoredClosed", wi.monitored_closed_to_pb(req))

    async def get_query_target(self, ref: api.ExecutionRef) -> api.QueryTarget:
        return wi.query_target_from_pb(await self._read("GetQueryTarget", wire.describe_request_to_pb(ref)))


class GrpcMatchingClient(_Client):
    """`legato.api.MatchingService` over gRPC. Use as `async with`, or call `await close()`.

    `long_poll_timeout_ms` is what a task poll with timeout_ms=0 waits on the server (its
    `matching.long_poll_timeout_ms`); a poll whose deadline passes returns None. `add_task`
    waits until a worker took the task, so it has no deadline unless `add_task_timeout_s` sets
    one (its caller usually bounds it by cancelling)."""

    def __init__(self, address: str, *, connect_timeout_s: float = 5.0, call_timeout_s: float = 30.0,
                 long_poll_timeout_ms: int = 30_000, long_poll_margin_s: float = 5.0,
                 add_task_timeout_s: float | None = None, security: ClientSecurity | None = None,
                 grpc_config: GrpcConfig | None = None) -> None:
        super().__init__(RpcChannel(address, legato_pb2_grpc.MatchingServiceStub,
                                    connect_timeout_s=connect_timeout_s, call_timeout_s=call_timeout_s,
                                    long_poll_margin_s=long_poll_margin_s, server_name="Legato matching service",
                                    options=INTERNAL_CHANNEL_OPTIONS, security=security, **_busy(grpc_config)))
        self._long_poll_timeout_ms = long_poll_timeout_ms
        self._add_task_timeout_s = add_task_timeout_s

    async def add_task(self, task: api.TaskInfo) -> None:
        await self._rpc.call("AddTask", wi.add_task_request_to_pb(task), self._add_task_timeout_s or _NO_DEADLINE_S)

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        m = await self._rpc.poll("PollWorkflowTask", wire.poll_workflow_request_to_pb(req),
                                 req.timeout_ms or self._long_poll_timeout_ms)
        return None if m is None else wire.poll_workflow_response_from_pb(m)

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        m = await self._rpc.poll("PollActivityTask", wire.poll_activity_request_to_pb(req),
                                 req.timeout_ms or self._long_poll_timeout_ms)
        return None if m is None else wire.poll_activity_response_from_pb(m)

    async def offer_task(self, task: api.TaskInfo, request_id: str) -> api.OfferResult:
        return wi.offer_result_from_pb(await self._rpc.call("OfferTask", wi.offer_task_to_pb(task, request_id)))

    async def query_workflow(self, req: api.QueryTaskRequest) -> api.RespondQueryTaskCompletedRequest:
        # the server answers DEADLINE_EXCEEDED itself once req.timeout_ms passed: the call's
        # deadline leaves it the time to say so
        return wire.query_answer_from_pb(await self._rpc.call(
            "QueryWorkflow", wi.query_task_request_to_pb(req), self._rpc.long_poll_s(req.timeout_ms)))

    async def respond_query_task_completed(self, req: api.RespondQueryTaskCompletedRequest) -> None:
        await self._rpc.call("RespondQueryTaskCompleted", wire.query_answer_to_pb(req))

    async def deliver_message(self, pid: str, msg: api.ProcessMessage) -> bool:
        return wi.deliver_message_response_from_pb(
            await self._rpc.call("DeliverMessage", wi.deliver_message_to_pb(pid, msg)))

    async def open_mailbox(self, pid: str) -> None:
        await self._rpc.call("OpenMailbox", wire.pb.OpenMailboxRequest(pid=pid))

    async def close_mailbox(self, pid: str) -> None:
        await self._rpc.call("CloseMailbox", wire.pb.CloseMailboxRequest(pid=pid))

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        m = await self._rpc.poll("PollMailbox", wire.poll_mailbox_request_to_pb(req), req.timeout_ms)
        return [] if m is None else wire.poll_mailbox_response_from_pb(m)


# add_task may wait as long as no worker polls its queue; a deadline of a day stands for none.
_NO_DEADLINE_S = 86_400.0


def _implements_the_protocols(history: GrpcHistoryClient, matching: GrpcMatchingClient
                              ) -> tuple[api.HistoryService, api.MatchingService, api.MatchingPeer]:
    """Never called: mypy checks here that the clients implement the protocols they stand for."""
    return history, matching, matching
