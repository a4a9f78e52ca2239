"""The gRPC API end to end: every rpc through a real grpc.aio server on a loopback port, against a
fake WorkflowService; error mapping in both directions; an unreachable server."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from frontend.grpc_server import bound_port, serve
from legato import api
from legato.client import GrpcClient
from legato.commands import Command, CommandType
from legato.errors import (
    AlreadyStarted,
    FailedPrecondition,
    Failure,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    ShardOwnershipLost,
    Unavailable,
)
from legato.events import EventType, HistoryEvent
from legato.proto import legato_pb2 as pb


class FakeService:
    """A WorkflowService that records each call and answers with `responses[method]`, or raises
    `errors[method]`. Polls can be made to hang until cancelled."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.responses: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.hang = False
        self.hanging = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def _answer(self, method: str, req: Any) -> Any:
        self.calls.append((method, req))
        if method in self.errors:
            raise self.errors[method]
        if self.hang:
            self.hanging.set()
            try:
                await asyncio.Future()
            except asyncio.CancelledError:
                self.cancelled.set()
                raise
        return self.responses.get(method)

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        return await self._answer("start_workflow", req)

    async def signal_workflow(self, req: api.SignalWorkflowRequest) -> None:
        await self._answer("signal_workflow", req)

    async def terminate_workflow(self, req: api.TerminateWorkflowRequest) -> None:
        await self._answer("terminate_workflow", req)

    async def request_cancel_workflow(self, req: api.CancelWorkflowRequest) -> None:
        await self._answer("request_cancel_workflow", req)

    async def describe_workflow(self, ref: api.ExecutionRef) -> api.DescribeWorkflowResponse:
        return await self._answer("describe_workflow", ref)

    async def query_workflow(self, req: api.QueryWorkflowRequest) -> api.QueryWorkflowResponse:
        return await self._answer("query_workflow", req)

    async def respond_query_task_completed(self, req: api.RespondQueryTaskCompletedRequest) -> None:
        await self._answer("respond_query_task_completed", req)

    async def get_workflow_history(self, req: api.GetHistoryRequest) -> api.GetHistoryResponse:
        return await self._answer("get_workflow_history", req)

    async def get_workflow_result(self, req: api.GetResultRequest) -> api.GetResultResponse:
        return await self._answer("get_workflow_result", req)

    async def list_workflows(self, req: api.ListWorkflowsRequest) -> api.ListWorkflowsResponse:
        return await self._answer("list_workflows", req)

    async def count_workflows(self, req: api.CountWorkflowsRequest) -> api.CountWorkflowsResponse:
        return await self._answer("count_workflows", req)  # type: ignore[no-any-return]

    async def poll_workflow_task(self, req: api.PollRequest) -> api.WorkflowTask | None:
        return await self._answer("poll_workflow_task", req)

    async def respond_workflow_task_completed(
            self, req: api.RespondWorkflowTaskCompletedRequest) -> api.RespondWorkflowTaskCompletedResponse:
        return await self._answer("respond_workflow_task_completed", req)  # type: ignore[no-any-return]

    async def respond_workflow_task_failed(self, req: api.RespondWorkflowTaskFailedRequest) -> None:
        await self._answer("respond_workflow_task_failed", req)

    async def poll_activity_task(self, req: api.PollRequest) -> api.ActivityTask | None:
        return await self._answer("poll_activity_task", req)

    async def respond_activity_task_completed(
            self, req: api.RespondActivityTaskCompletedRequest) -> api.RespondActivityTaskCompletedResponse:
        return await self._answer("respond_activity_task_completed", req)  # type: ignore[no-any-return]

    async def respond_activity_task_failed(self, req: api.RespondActivityTaskFailedRequest) -> None:
        await self._answer("respond_activity_task_failed", req)

    async def record_activity_heartbeat(
            self, req: api.RecordActivityHeartbeatRequest) -> api.RecordActivityHeartbeatResponse:
        return await self._answer("record_activity_heartbeat", req)

    async def respond_activity_task_canceled(self, req: api.RespondActivityTaskCanceledRequest) -> None:
        await self._answer("respond_activity_task_canceled", req)

    async def send_message(self, req: api.SendMessageRequest) -> None:
        await self._answer("send_message", req)

    async def open_mailbox(self, pid: str) -> None:
        await self._answer("open_mailbox", pid)

    async def close_mailbox(self, pid: str) -> None:
        await self._answer("close_mailbox", pid)

    async def poll_mailbox(self, req: api.PollMailboxRequest) -> list[api.ProcessMessage]:
        return await self._answer("poll_mailbox", req)  # type: ignore[no-any-return]

    async def monitor_workflow(self, req: api.MonitorWorkflowRequest) -> None:
        await self._answer("monitor_workflow", req)


@pytest.fixture
async def env() -> AsyncIterator[tuple[FakeService, GrpcClient, grpc.aio.Server]]:
    service = FakeService()
    server = await serve(service, "127.0.0.1", 0)
    client = GrpcClient(f"127.0.0.1:{bound_port(server)}")
    try:
        yield service, client, server
    finally:
        await client.close()
        await server.stop(None)


# ------------------------------------------------------------------ values for every rpc

REF = api.ExecutionRef("order-1", run_id="run-1", namespace="shop")
FAILURE = Failure("card declined", kind="PAYMENT", retryable=False, details={"code": 51},
                  source="order.lua:12", cause=Failure("gateway said no", kind="REMOTE"))
INFO = api.WorkflowExecutionInfo("shop", "order-1", "run-1", "app:order", "orders", api.WorkflowStatus.FAILED,
                                 1_700_000_000_000, 1_700_000_001_000, 12, {"m": [1, 2]}, {"Customer": "ann"})
EVENTS = [
    HistoryEvent(1, EventType.WorkflowExecutionStarted, 1_700_000_000_000,
                 {"workflow_type": "app:order", "input": [1, {"é": "ü"}], "random_seed": "ab"}),
    HistoryEvent(2, EventType.WorkflowTaskScheduled, 1_700_000_000_001, {"task_queue": "orders", "attempt": 1}),
    HistoryEvent(3, EventType.WorkflowTaskStarted, 1_700_000_000_002),
]
WF_TASK = api.WorkflowTask(b"token-wf", "shop", "order-1", "run-1", "app:order", "orders", 2, 3, 0, EVENTS)
ACT_TASK = api.ActivityTask(b"token-act", "shop", "order-1", "run-1", "app:order", "1", "app:charge", "orders",
                            [{"amount": 5}], 3, 100, 200, 30_000, 5_000, {"progress": 0.5}, {"trace": "t-1"})

# (client method, request, service response)
CASES: list[tuple[str, Any, Any]] = [
    ("start_workflow",
     api.StartWorkflowRequest("order-1", "app:order", "orders", [1, "two", None, {"x": [True]}], "shop", "req-1",
                              "cli@host", 60_000, 30_000, 10_000, api.IdReusePolicy.REJECT_DUPLICATE,
                              api.IdConflictPolicy.USE_EXISTING, {"user": "ann"}, {"note": "hi"}, {"Prio": 3}),
     api.StartWorkflowResponse("run-1", True)),
    ("start_workflow",  # every issue-3 start option
     api.StartWorkflowRequest(
         "order-2", "app:order", "orders", [], "shop", "req-9", retry_policy={"initial_interval_ms": 10,
                                                                              "maximum_attempts": 3},
         cron_schedule="0 */6 * * *", start_delay_ms=5_000, execution_error_when_already_started=True,
         enable_eager_start=True, wait_for_cancellation=True,
         start_messages=[api.StartMessage("go", {"n": 1}), api.StartMessage("ping")],
         parent=api.ParentInfo("shop", "parent-1", "run-p", 7),
         parent_close_policy=api.ParentClosePolicy.REQUEST_CANCEL, monitors=["@caller-1", "@caller-2"]),
     api.StartWorkflowResponse("run-2", False, existing=True)),
    ("signal_workflow", api.SignalWorkflowRequest(REF, "approve", {"by": "bob"}, "app:other", "cli", "req-2"), None),
    ("signal_workflow", api.SignalWorkflowRequest(REF, "ping"), None),  # no input at all
    ("terminate_workflow", api.TerminateWorkflowRequest(REF, "stuck", "cli", "req-t"), None),
    ("request_cancel_workflow", api.CancelWorkflowRequest(REF, "no longer needed", "cli", "req-3"), None),
    ("request_cancel_workflow", api.CancelWorkflowRequest(REF, "hurry", "cli", "req-4", deadline_ms=5_000), None),
    ("describe_workflow", REF,
     api.DescribeWorkflowResponse(
         INFO,
         [api.PendingActivityInfo("1", "app:charge", 5, "BACKOFF", 3, FAILURE, 10, 20),
          api.PendingActivityInfo("2", "app:ship", 6, "SCHEDULED", 1)],
         api.PendingWorkflowTaskInfo(9, "STARTED", 2, 30, 40), FAILURE, 2, None, FAILURE)),
    ("describe_workflow", api.ExecutionRef("order-2"),
     api.DescribeWorkflowResponse(INFO, result=[1, 2])),
    ("describe_workflow", api.ExecutionRef("order-2/child"),
     api.DescribeWorkflowResponse(INFO, parent=api.ParentInfo("shop", "order-2", "run-9", 5))),
    ("get_workflow_history", api.GetHistoryRequest(REF, 2, 50, True, 1_000),
     api.GetHistoryResponse("run-1", EVENTS, 4, False)),
    ("get_workflow_result", api.GetResultRequest(REF, 1_000, True),
     api.GetResultResponse("run-1", api.WorkflowStatus.RUNNING, None, None, FAILURE)),
    ("get_workflow_result", api.GetResultRequest(REF, 0),
     api.GetResultResponse("run-1", api.WorkflowStatus.COMPLETED, {"total": 42})),
    ("list_workflows", api.ListWorkflowsRequest("shop", "status = 'RUNNING'", 10, b"\x00page"),
     api.ListWorkflowsResponse([INFO, INFO], b"\x01next")),
    ("count_workflows", api.CountWorkflowsRequest("shop", "WorkflowType = 'app:order'"),
     api.CountWorkflowsResponse(7)),
    ("count_workflows", api.CountWorkflowsRequest("shop", "GROUP BY ExecutionStatus"),
     api.CountWorkflowsResponse(7, [api.CountGroup("RUNNING", 5), api.CountGroup("FAILED", 2)])),
    ("poll_workflow_task", api.PollRequest("orders", "shop", "worker-1", 1_000), WF_TASK),
    ("poll_workflow_task", api.PollRequest("orders", timeout_ms=10), None),
    ("poll_workflow_task", api.PollRequest("orders", "shop", "worker-1", 1_000),
     api.WorkflowTask(b"q-1", "shop", "order-1", "run-1", "app:order", "orders", 0, 0, 0, [],
                      query=api.QueryTask("node/q-1", api.STACK_TRACE_QUERY, {"depth": 2}, cache_only=True))),
    ("query_workflow", api.QueryWorkflowRequest(REF, api.STACK_TRACE_QUERY, [1], 2_500),
     api.QueryWorkflowResponse("run-1", api.WorkflowStatus.RUNNING, {"coroutines": []}, "worker-cache", "worker-1",
                               "orders")),
    ("respond_query_task_completed",
     api.RespondQueryTaskCompletedRequest(b"node/q-1", {"coroutines": [{"id": 1}]}, None, "worker-replay", False,
                                          "worker-1"), None),
    ("respond_query_task_completed",
     api.RespondQueryTaskCompletedRequest(b"q-2", failure=FAILURE, not_cached=True), None),
    ("respond_workflow_task_completed",
     api.RespondWorkflowTaskCompletedRequest(b"token-wf", [
         Command(CommandType.ScheduleActivityTask, {"activity_id": "1", "input": [1], "retry_policy": None}),
         Command(CommandType.StartTimer, {"timer_id": "2", "start_to_fire_timeout_ms": 1000}),
         Command(CommandType.CompleteWorkflowExecution, {"result": None})], "worker-1"),
     api.RespondWorkflowTaskCompletedResponse()),
    ("respond_workflow_task_completed",
     api.RespondWorkflowTaskCompletedRequest(b"token-wf", [
         Command(CommandType.ScheduleActivityTask, {"activity_id": "1", "request_eager_execution": True})]),
     api.RespondWorkflowTaskCompletedResponse([ACT_TASK])),
    ("respond_workflow_task_failed",
     api.RespondWorkflowTaskFailedRequest(b"token-wf", "NON_DETERMINISTIC", FAILURE, "worker-1"), None),
    ("poll_activity_task", api.PollRequest("orders", "shop", "worker-1", 1_000), ACT_TASK),
    ("poll_activity_task", api.PollRequest("orders", timeout_ms=10), None),
    ("respond_activity_task_completed",
     api.RespondActivityTaskCompletedRequest(b"token-act", {"charged": 5}, "worker-1"),
     api.RespondActivityTaskCompletedResponse()),
    ("respond_activity_task_completed", api.RespondActivityTaskCompletedRequest(b"token-act"),
     api.RespondActivityTaskCompletedResponse()),
    ("respond_activity_task_completed",
     api.RespondActivityTaskCompletedRequest(b"token-act", "done", "worker-1", return_workflow_task=True),
     api.RespondActivityTaskCompletedResponse(WF_TASK)),
    ("respond_activity_task_failed",
     api.RespondActivityTaskFailedRequest(b"token-act", Failure("oops"), "worker-1"), None),
    ("record_activity_heartbeat", api.RecordActivityHeartbeatRequest(b"token-act", [1, 2, 3], "worker-1"),
     api.RecordActivityHeartbeatResponse(True)),
    ("respond_activity_task_canceled",
     api.RespondActivityTaskCanceledRequest(b"token-act", {"cleaned": True}, "worker-1"), None),
    ("send_message", api.SendMessageRequest("order-1", "approve", {"by": "ann"}, "@caller-1", "shop", "req-5"), None),
    ("send_message", api.SendMessageRequest("@caller-2", "reply"), None),
    ("open_mailbox", "@caller-1", None),
    ("close_mailbox", "@caller-1", None),
    ("poll_mailbox", api.PollMailboxRequest("@caller-1", 1_000, 5),
     [api.ProcessMessage("message", "reply", {"ok": True}, "order-1"),
      api.ProcessMessage("event", event={"kind": "EXIT", "from": "order-1",
                                         "result": {"value": 42, "error": None}})]),
    ("poll_mailbox", api.PollMailboxRequest("@caller-1", 0), []),
    ("monitor_workflow", api.MonitorWorkflowRequest(REF, "@caller-1"), None),
    ("monitor_workflow", api.MonitorWorkflowRequest(REF, "@caller-1", link=True, remove=True), None),
]


@pytest.mark.parametrize(("method", "request_", "response"), CASES,
                         ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
async def test_every_rpc_round_trips(env: tuple[FakeService, GrpcClient, grpc.aio.Server],
                                     method: str, request_: Any, response: Any) -> None:
    service, client, _ = env
    service.responses[method] = response
    got = await getattr(client, method)(request_)
    assert service.calls == [(method, request_)]
    assert got == response


def test_every_service_method_has_an_rpc_case() -> None:
    methods = {name for name in dir(api.WorkflowService) if not name.startswith("_")}
    assert methods == {c[0] for c in CASES}


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("error", [
    NotFound("workflow order-1 not found", reason="WorkflowNotFound"),
    InvalidArgument("input is 3000000 bytes; the limit is 2097152 bytes — ünïcödé ✓", reason="PayloadTooLarge"),
    FailedPrecondition("workflow task already completed"),
    ResourceExhausted("too many pending activities", reason="LimitExceeded"),
    Unavailable("shard 3 is moving"),
])
async def test_service_errors_map_to_the_same_class(
        env: tuple[FakeService, GrpcClient, grpc.aio.Server], error: ServiceError) -> None:
    service, client, _ = env
    service.errors["signal_workflow"] = error
    with pytest.raises(type(error)) as info:
        await client.signal_workflow(api.SignalWorkflowRequest(REF, "go"))
    assert type(info.value) is type(error)
    assert info.value.message == error.message
    assert info.value.reason == error.reason


async def test_already_started_carries_the_run_id(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    service.errors["start_workflow"] = AlreadyStarted("order-1 is already running", run_id="run-7")
    with pytest.raises(AlreadyStarted) as info:
        await client.start_workflow(api.StartWorkflowRequest("order-1", "app:order", "orders"))
    assert (info.value.message, info.value.run_id, info.value.reason) == (
        "order-1 is already running", "run-7", "AlreadyStarted")


async def test_error_subclass_keeps_its_reason(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    service.errors["describe_workflow"] = ShardOwnershipLost("shard 1 was taken over")
    with pytest.raises(Unavailable) as info:
        await client.describe_workflow(REF)
    assert info.value.reason == "ShardOwnershipLost"


async def test_status_codes_on_the_wire(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, _, server = env
    service.errors["start_workflow"] = AlreadyStarted("dup", run_id="run-7")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        call = channel.unary_unary("/legato.v1.WorkflowService/StartWorkflow",
                                   request_serializer=pb.StartWorkflowRequest.SerializeToString,
                                   response_deserializer=pb.StartWorkflowResponse.FromString)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(pb.StartWorkflowRequest(workflow_id="w", workflow_type="t", task_queue="q"))
    e = info.value
    assert e.code() == grpc.StatusCode.ALREADY_EXISTS
    assert e.details() == "dup"
    metadata = dict(e.trailing_metadata() or ())
    assert metadata["legato-reason"] == "AlreadyStarted"
    assert metadata["legato-run-id"] == "run-7"


async def test_unexpected_exception_is_internal_and_the_server_survives(
        env: tuple[FakeService, GrpcClient, grpc.aio.Server], caplog: pytest.LogCaptureFixture) -> None:
    service, client, _ = env
    service.errors["terminate_workflow"] = RuntimeError("boom\nwith a second line")
    with caplog.at_level(logging.ERROR, logger="legato.frontend.grpc"), pytest.raises(ServiceError) as info:
        await client.terminate_workflow(api.TerminateWorkflowRequest(REF))
    assert info.value.code == "INTERNAL"
    assert info.value.message == "internal error in TerminateWorkflow: RuntimeError: boom with a second line"
    assert any(r.exc_info and "TerminateWorkflow" in r.getMessage() for r in caplog.records)  # traceback logged
    service.responses["start_workflow"] = api.StartWorkflowResponse("run-1", True)
    assert (await client.start_workflow(api.StartWorkflowRequest("w", "t", "q"))).run_id == "run-1"


async def test_malformed_request_is_invalid_argument_not_internal(
        env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    with pytest.raises(InvalidArgument, match="input_json is not valid JSON"):
        await client._call("StartWorkflow", pb.StartWorkflowRequest(workflow_id="w", input_json="{nope"))
    with pytest.raises(InvalidArgument, match="id_reuse_policy: unknown value 'sometimes'"):
        await client._call("StartWorkflow", pb.StartWorkflowRequest(workflow_id="w", id_reuse_policy="sometimes"))
    with pytest.raises(InvalidArgument, match=r"commands\[1\].command_type: unknown value 'Nope'"):
        await client._call("RespondWorkflowTaskCompleted", pb.RespondWorkflowTaskCompletedRequest(
            task_token=b"t", commands=[pb.Command(command_type="StartTimer"), pb.Command(command_type="Nope")]))
    assert service.calls == []


async def test_unset_proto_fields_take_the_api_defaults(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    service.responses["get_workflow_history"] = api.GetHistoryResponse("r", [], 1, False)
    await client._call("GetWorkflowHistory", pb.GetWorkflowHistoryRequest(ref=pb.ExecutionRef(workflow_id="w")))
    assert service.calls[0][1] == api.GetHistoryRequest(api.ExecutionRef("w"), first_event_id=1, page_size=1000,
                                                        timeout_ms=0)


async def test_client_refuses_a_payload_that_is_not_json(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    with pytest.raises(InvalidArgument, match="input cannot be encoded as JSON"):
        await client.signal_workflow(api.SignalWorkflowRequest(REF, "go", {1, 2}))
    assert service.calls == []


async def test_large_payload_passes(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    big = "x" * (5 * 1024 * 1024)  # above gRPC's 4 MB default receive limit
    service.responses["get_workflow_result"] = api.GetResultResponse("r", api.WorkflowStatus.COMPLETED, big)
    await client.signal_workflow(api.SignalWorkflowRequest(REF, "go", big))
    assert service.calls[0][1].input == big
    assert (await client.get_workflow_result(api.GetResultRequest(REF))).result == big


# ------------------------------------------------------------------ long polls and connections

async def test_client_going_away_cancels_the_server_call(
        env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, client, _ = env
    service.hang = True
    poll = asyncio.ensure_future(client.poll_activity_task(api.PollRequest("orders", timeout_ms=60_000)))
    await service.hanging.wait()
    poll.cancel()
    with pytest.raises(asyncio.CancelledError):
        await poll
    await service.cancelled.wait()  # matching sees the cancellation and puts its task back


async def test_poll_past_its_deadline_is_an_empty_poll() -> None:
    service = FakeService()
    service.hang = True
    server = await serve(service, "127.0.0.1", 0)
    try:
        async with GrpcClient(f"127.0.0.1:{bound_port(server)}", long_poll_margin_s=0.05) as client:
            assert await client.poll_workflow_task(api.PollRequest("orders", timeout_ms=50)) is None
        await service.cancelled.wait()
    finally:
        await server.stop(None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_is_unavailable_quickly() -> None:
    port = free_port()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with GrpcClient(f"127.0.0.1:{port}") as client:
        with pytest.raises(Unavailable) as info:
            await client.poll_workflow_task(api.PollRequest("orders"))  # a long poll: must not wait 30 s
    assert info.value.message.startswith(f"cannot reach the Legato server at 127.0.0.1:{port}: ")
    assert loop.time() - t0 < 5


async def test_connection_that_never_completes_times_out() -> None:
    # A listening socket that never accepts: TCP connects, but the HTTP/2 handshake never completes.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        address = f"127.0.0.1:{s.getsockname()[1]}"
        async with GrpcClient(address, connect_timeout_s=0.3) as client:
            with pytest.raises(Unavailable) as info:
                await client.describe_workflow(REF)
    assert info.value.message.startswith(f"cannot reach the Legato server at {address}: ")


async def test_closed_client_refuses_calls(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    _, client, _ = env
    await client.close()
    with pytest.raises(Unavailable, match="is closed"):
        await client.describe_workflow(REF)


async def test_busy_port_is_an_error(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, _, server = env
    with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1:"):
        await serve(service, "127.0.0.1", bound_port(server))


async def test_a_server_without_the_legato_service_is_named() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with GrpcClient(f"127.0.0.1:{port}") as client:
            with pytest.raises(ServiceError) as info:
                await client.describe_workflow(REF)
        assert info.value.code == "UNIMPLEMENTED"
        assert "does not serve the Legato call DescribeWorkflow" in info.value.message
    finally:
        await server.stop(None)


async def test_several_addresses_a_dead_one_is_skipped(env: tuple[FakeService, GrpcClient, grpc.aio.Server]) -> None:
    service, _, server = env
    service.errors["describe_workflow"] = NotFound("no such workflow")  # an answer: the live server was reached
    dead = f"127.0.0.1:{free_port()}"
    live = f"127.0.0.1:{bound_port(server)}"
    async with GrpcClient(f"{dead},{live}") as client:
        for _ in range(3):  # the first call fails over to the live one; later calls stay there
            with pytest.raises(NotFound):
                await client.describe_workflow(REF)
        assert client._rpc.address == live
    assert len(service.calls) == 3


async def test_several_addresses_all_dead_is_unavailable_naming_the_last() -> None:
    dead = [f"127.0.0.1:{free_port()}" for _ in range(2)]
    async with GrpcClient(",".join(dead)) as client:
        with pytest.raises(Unavailable, match=r"cannot reach the Legato server at 127\.0\.0\.1:"):
            await client.describe_workflow(REF)
