"""The Python client of the public gRPC API: a `legato.api.WorkflowService` over grpc.aio.

    async with GrpcClient("127.0.0.1:7233") as client:
        run = await client.start_workflow(StartWorkflowRequest("order-1", "app:order", "orders"))

Errors come back as the `legato.errors` class the server raised, with the same message, reason
(and run id for `AlreadyStarted`). A server that cannot be reached raises `Unavailable` with a
message that names the address, within `connect_timeout_s`. Long polls (task polls, result and
history waits) use deadlines slightly longer than the wait they ask for. No call is retried,
except one the server pushed back unprocessed (overloaded), which is sent again with backoff
until its deadline. `security` (`legato.tls.ClientSecurity`) turns on TLS and sends a token.
The connection, deadlines and error mapping are `legato.grpc_channel`'s, shared with the
clients of the internal services (`legato.internal_clients`).
"""

from __future__ import annotations

from typing import Any

from legato import api, wire
from legato.config import GrpcConfig
from legato.grpc_channel import ChannelClient, RpcChannel
from legato.grpc_errors import REASON_KEY, RUN_ID_KEY
from legato.proto import legato_pb2_grpc
from legato.tls import ClientSecurity

__all__ = ["DEFAULT_ADDRESS", "REASON_KEY", "RUN_ID_KEY", "GrpcClient"]

DEFAULT_ADDRESS = "127.0.0.1:7233"
# The longest a query with timeout_ms=0 is assumed to wait on the server (its frontend.query_timeout_ms
# is usually far shorter; the server answers DEADLINE_EXCEEDED itself when that passes).
QUERY_WAIT_MS = 60_000


class GrpcClient(ChannelClient):
    """`legato.api.WorkflowService` over gRPC. Use as `async with`, or call `await close()`."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, connect_timeout_s: float = 5.0,
                 call_timeout_s: float = 30.0, long_poll_timeout_ms: int = 30_000,
                 long_poll_margin_s: float = 5.0, security: ClientSecurity | None = None,
                 grpc_config: GrpcConfig | None = None) -> None:
        """`long_poll_timeout_ms` is what the client assumes a poll with timeout_ms=0 waits (the
        server's `matching.long_poll_timeout_ms`); a poll whose deadline passes returns None.
        `grpc_config` sets the backoff of calls the server pushes back (default: its defaults)."""
        self.address = address
        self._long_poll_timeout_ms = long_poll_timeout_ms
        busy = grpc_config or GrpcConfig()
        self._rpc = RpcChannel(address, legato_pb2_grpc.WorkflowServiceStub, connect_timeout_s=connect_timeout_s,
                               call_timeout_s=call_timeout_s, long_poll_margin_s=long_poll_margin_s,
                               security=security, busy_retry_initial_ms=busy.busy_retry_initial_ms,
                               busy_retry_max_ms=busy.busy_retry_max_ms)

    @property
    def busy_retries(self) -> int:
        """Calls sent again because the server pushed them back, so far."""
        return self._rpc.busy_retries

    # ------------------------------------------------------------ plumbing

    async def _call(self, rpc: str, request: Any, timeout_s: float | None = None) -> Any:
        return await self._rpc.call(rpc, request, timeout_s)

    async def _poll(self, rpc: str, request: Any, timeout_ms: int) -> Any:
        return await self._rpc.poll(rpc, request, timeout_ms or self._long_poll_timeout_ms)

    # ------------------------------------------------------------ WorkflowService

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        return wire.start_response_from_pb(await self._call("StartWorkflow", wire.start_request_to_pb(req)))

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        await self._call("SignalWorkflow", wire.signal_request_to_pb(req))

    async def terminate_workflow(self, req: api.TerminateWorkflowRequest) -> None:
        await self._call("TerminateWorkflow", wire.terminate_request_to_pb(req))

    async def request_cancel_workflow(self, req: api.CancelWorkflowRequest) -> None:
        await self._call("RequestCancelWorkflow", wire.cancel_request_to_pb(req))

    async def describe_workflow(self, ref: api.ExecutionRef) -> api.DescribeWorkflowResponse:
        return wire.describe_response_from_pb(await self._call("DescribeWorkflow", wire.describe_request_to_pb(ref)))

    async def get_workflow_history(self, req: api.GetHistoryRequest) -> api.GetHistoryResponse:
        timeout = self._wait_s(req.timeout_ms) if req.wait_new_event else None
        return wire.history_response_from_pb(
            await self._call("GetWorkflowHistory", wire.history_request_to_pb(req), timeout))

    async def get_workflow_result(self, req: api.GetResultRequest) -> api.GetResultResponse:
        timeout = self._wait_s(req.timeout_ms)
        return wire.result_response_from_pb(
            await self._call("GetWorkflowResult", wire.result_request_to_pb(req), timeout))

    async def list_workflows(self, req: api.ListWorkflowsRequest) -> api.ListWorkflowsResponse:
        return wire.list_response_from_pb(await self._call("ListWorkflows", wire.list_request_to_pb(req)))

    async def count_workflows(self, req: api.CountWorkflowsRequest) -> api.CountWorkflowsResponse:
        return wire.count_response_from_pb(await self._call("CountWorkflows", wire.count_request_to_pb(req)))

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        m = await self._poll("PollWorkflowTask", wire.poll_workflow_request_to_pb(req), req.timeout_ms)
        return None if m is None else wire.poll_workflow_response_from_pb(m)

    async def respond_workflow_task_completed(
            self, req: api.RespondWorkflowTaskCompletedRequest) -> api.RespondWorkflowTaskCompletedResponse:
        return wire.workflow_task_completed_response_from_pb(
            await self._call("RespondWorkflowTaskCompleted", wire.workflow_task_completed_to_pb(req)))

    async def respond_workflow_task_failed(self, req: api.RespondWorkflowTaskFailedRequest) -> None:
        await self._call("RespondWorkflowTaskFailed", wire.workflow_task_failed_to_pb(req))

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        m = await self._poll("PollActivityTask", wire.poll_activity_request_to_pb(req), req.timeout_ms)
        return None if m is None else wire.poll_activity_response_from_pb(m)

    async def respond_activity_task_completed(
            self, req: api.RespondActivityTaskCompletedRequest) -> api.RespondActivityTaskCompletedResponse:
        return wire.activity_completed_response_from_pb(
            await self._call("RespondActivityTaskCompleted", wire.activity_completed_to_pb(req)))

    async def respond_activity_task_failed(self, req: api.RespondActivityTaskFailedRequest) -> None:
        await self._call("RespondActivityTaskFailed", wire.activity_failed_to_pb(req))

    async def record_activity_heartbeat(
            self, req: api.RecordActivityHeartbeatRequest) -> api.RecordActivityHeartbeatResponse:
        return wire.heartbeat_response_from_pb(
            await self._call("RecordActivityHeartbeat", wire.heartbeat_request_to_pb(req)))

    async def respond_activity_task_canceled(self, req: api.RespondActivityTaskCanceledRequest) -> None:
        await self._call("RespondActivityTaskCanceled", wire.activity_canceled_to_pb(req))

    # ------------------------------------------------------------ queries (issue 14)

    async def query_workflow(self, req: api.QueryWorkflowRequest) -> api.QueryWorkflowResponse:
        timeout = self._wait_s(req.timeout_ms or QUERY_WAIT_MS)
        return wire.query_response_from_pb(await self._call("QueryWorkflow", wire.query_request_to_pb(req), timeout))

    async def respond_query_task_completed(self, req: api.RespondQueryTaskCompletedRequest) -> None:
        await self._call("RespondQueryTaskCompleted", wire.query_answer_to_pb(req))

    # ------------------------------------------------------------ processes (issue 3)

    async def send_message(self, req: api.SendMessageRequest) -> None:
        await self._call("SendMessage", wire.send_message_request_to_pb(req))

    async def open_mailbox(self, pid: str) -> None:
        await self._call("OpenMailbox", wire.pb.OpenMailboxRequest(pid=pid))

    async def close_mailbox(self, pid: str) -> None:
        await self._call("CloseMailbox", wire.pb.CloseMailboxRequest(pid=pid))

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        m = await self._poll("PollMailbox", wire.poll_mailbox_request_to_pb(req), req.timeout_ms)
        return [] if m is None else wire.poll_mailbox_response_from_pb(m)

    async def monitor_workflow(self, req: api.MonitorWorkflowRequest) -> None:
        await self._call("MonitorWorkflow", wire.monitor_request_to_pb(req))
