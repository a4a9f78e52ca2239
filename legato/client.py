"""The Python client of the public gRPC API: a `legato.api.WorkflowService` over grpc.aio.

    async with GrpcClient("127.0.0.1:7233") as client:
        run = await client.start_workflow(StartWorkflowRequest("order-1", "app:order", "orders"))

Errors come back as the `legato.errors` class the server raised, with the same message, reason
(and run id for `AlreadyStarted`). A server that cannot be reached raises `Unavailable` with a
message that names the address, within `connect_timeout_s`. Long polls (task polls, result and
history waits) use deadlines slightly longer than the wait they ask for.
"""

from __future__ import annotations

import asyncio
from types import TracebackType
from typing import Any

import grpc

from legato import api, wire
from legato.errors import SERVICE_ERRORS, AlreadyStarted, ResourceExhausted, ServiceError, Unavailable
from legato.proto import legato_pb2_grpc

DEFAULT_ADDRESS = "127.0.0.1:7233"
REASON_KEY = "legato-reason"
RUN_ID_KEY = "legato-run-id"

_IDLE = grpc.ChannelConnectivity.IDLE
_CONNECTING = grpc.ChannelConnectivity.CONNECTING
_READY = grpc.ChannelConnectivity.READY


class GrpcClient:
    """`legato.api.WorkflowService` over gRPC. Use as `async with`, or call `await close()`."""

    def __init__(self, address: str = DEFAULT_ADDRESS, *, connect_timeout_s: float = 5.0,
                 call_timeout_s: float = 30.0, long_poll_timeout_ms: int = 30_000,
                 long_poll_margin_s: float = 5.0) -> None:
        """`long_poll_timeout_ms` is what the client assumes a poll with timeout_ms=0 waits (the
        server's `matching.long_poll_timeout_ms`); a poll whose deadline passes returns None."""
        self.address = address
        self._connect_timeout_s = connect_timeout_s
        self._call_timeout_s = call_timeout_s
        self._long_poll_timeout_ms = long_poll_timeout_ms
        self._margin_s = long_poll_margin_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: legato_pb2_grpc.WorkflowServiceStub | None = None
        self._connected = False
        self._closed = False

    async def __aenter__(self) -> GrpcClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        self._closed = True
        if self._channel is not None:
            channel, self._channel, self._stub = self._channel, None, None
            await channel.close()

    # ------------------------------------------------------------ plumbing

    def _stub_for_call(self) -> legato_pb2_grpc.WorkflowServiceStub:
        if self._closed:
            raise Unavailable(f"the client of the Legato server at {self.address} is closed",
                              reason="ClientClosed")
        if self._stub is None:
            # Created lazily, inside the event loop that uses it.
            self._channel = grpc.aio.insecure_channel(self.address, options=[
                ("grpc.max_receive_message_length", -1),
                ("grpc.max_send_message_length", -1),
                # Reconnect soon after a server restart instead of backing off for minutes.
                ("grpc.initial_reconnect_backoff_ms", 200),
                ("grpc.min_reconnect_backoff_ms", 200),
                ("grpc.max_reconnect_backoff_ms", 5_000),
            ])
            self._stub = legato_pb2_grpc.WorkflowServiceStub(self._channel)
        return self._stub

    async def _ensure_connected(self) -> None:
        """Wait (briefly) for a connection. A refused connection is left to the call itself,
        which then fails at once with gRPC's explanation; a connection that hangs fails here."""
        channel = self._channel
        assert channel is not None
        state = channel.get_state(try_to_connect=True)
        if state == _READY:
            self._connected = True
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        while state in (_IDLE, _CONNECTING):
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                await asyncio.wait_for(channel.wait_for_state_change(state), remaining)
            except TimeoutError:
                raise Unavailable(f"cannot reach the Legato server at {self.address}: no connection "
                                  f"within {self._connect_timeout_s:g}s", reason="ServerUnreachable") from None
            state = channel.get_state(try_to_connect=True)
        self._connected = state == _READY

    async def _call(self, rpc: str, request: Any, timeout_s: float | None = None) -> Any:
        stub = self._stub_for_call()
        if not self._connected:
            await self._ensure_connected()
        try:
            return await getattr(stub, rpc)(request, timeout=timeout_s or self._call_timeout_s,
                                            wait_for_ready=False)
        except grpc.aio.AioRpcError as e:
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                self._connected = False  # check the connection again before the next call
            raise self._error(e, rpc) from None

    def _long_poll_s(self, timeout_ms: int) -> float:
        return max(timeout_ms, 0) / 1000.0 + self._margin_s

    def _error(self, e: grpc.aio.AioRpcError, rpc: str) -> ServiceError:
        code = e.code()
        details = e.details() or code.name
        metadata: dict[str, str] = {}
        for key, value in e.trailing_metadata() or ():
            metadata[key] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        reason = metadata.get(REASON_KEY)
        if reason is None:  # not an answer of the Legato service: the transport or gRPC itself
            if code == grpc.StatusCode.UNAVAILABLE:
                return Unavailable(f"cannot reach the Legato server at {self.address}: {details}",
                                   reason="ServerUnreachable")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Unavailable(f"the Legato server at {self.address} did not answer in time: {details}",
                                   reason="DeadlineExceeded")
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                return ResourceExhausted(details)
            if code == grpc.StatusCode.UNIMPLEMENTED:
                unimplemented = ServiceError(
                    f"the server at {self.address} does not serve the Legato call {rpc} "
                    f"(is it a Legato server of a matching version?): {details}", reason="Unimplemented")
                unimplemented.code = code.name
                return unimplemented
        cls = SERVICE_ERRORS.get(code.name)
        err: ServiceError
        if cls is AlreadyStarted:
            err = AlreadyStarted(details, run_id=metadata.get(RUN_ID_KEY, ""))
        elif cls is not None:
            err = cls(details)
        else:  # INTERNAL, UNIMPLEMENTED, UNKNOWN, ...: keep the code on the instance
            err = ServiceError(details)
            err.code = code.name
        err.reason = reason or code.name
        return err

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
        timeout = max(self._call_timeout_s, self._long_poll_s(req.timeout_ms)) if req.wait_new_event else None
        return wire.history_response_from_pb(
            await self._call("GetWorkflowHistory", wire.history_request_to_pb(req), timeout))

    async def get_workflow_result(self, req: api.GetResultRequest) -> api.GetResultResponse:
        timeout = max(self._call_timeout_s, self._long_poll_s(req.timeout_ms))
        return wire.result_response_from_pb(
            await self._call("GetWorkflowResult", wire.result_request_to_pb(req), timeout))

    async def list_workflows(self, req: api.ListWorkflowsRequest) -> api.ListWorkflowsResponse:
        return wire.list_response_from_pb(await self._call("ListWorkflows", wire.list_request_to_pb(req)))

    async def count_workflows(self, req: api.CountWorkflowsRequest) -> api.CountWorkflowsResponse:
        return wire.count_response_from_pb(await self._call("CountWorkflows", wire.count_request_to_pb(req)))

    async def _poll(self, rpc: str, request: Any, timeout_ms: int) -> Any:
        try:
            return await self._call(rpc, request, self._long_poll_s(timeout_ms or self._long_poll_timeout_ms))
        except Unavailable as e:
            if e.reason == "DeadlineExceeded":  # the server waited longer than we assumed: an empty poll
                return None
            raise

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
