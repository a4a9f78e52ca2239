"""The internal history API end to end: every HistoryService method through a real grpc.aio
server on a loopback port (history/grpc_server.py) and GrpcHistoryClient, against a recording
stand-in; errors keep their class, message and reason; waits end before the caller's deadline;
only reads are retried."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from history.grpc_server import RPCS, serve, served
from legato import api, wire
from legato.commands import Command, CommandType
from legato.errors import (
    AlreadyStarted,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    ShardOwnershipLost,
    Unavailable,
)
from legato.grpc_serving import bind_servicer, bound_port, start_server
from legato.internal_clients import GrpcHistoryClient
from legato.proto import legato_pb2_grpc
from tests.unit.legato.grpc_fakes import (
    ACT_TASK,
    ACT_TASK_INFO,
    CLOSED,
    COMPLETED,
    EVENTS,
    FAILURE,
    INFO,
    PARENT,
    REF,
    WF_TASK,
    WF_TASK_INFO,
    Recorder,
    protocol_methods,
)

Env = tuple[Recorder, GrpcHistoryClient, grpc.aio.Server]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    service = Recorder()
    server = await serve(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    client = GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}")
    try:
        yield service, client, server
    finally:
        await client.close()
        await server.stop(None)


# (method, its arguments, the service's answer): every field set to a value that is not its default
CASES: list[tuple[str, tuple[Any, ...], Any]] = [
    ("start_workflow", (api.StartWorkflowRequest(
        "order-2", "app:order", "orders", [1, "two", None, {"x": [True]}], "shop", "req-9", "cli@host", 60_000,
        30_000, 10_000, api.IdReusePolicy.REJECT_DUPLICATE, api.IdConflictPolicy.USE_EXISTING, {"user": "ann"},
        {"note": "hi"}, {"Prio": 3}, {"initial_interval_ms": 10, "maximum_attempts": 3}, "0 */6 * * *", 5_000,
        True, True, True, [api.StartMessage("go", {"n": 1}), api.StartMessage("ping")], PARENT,
        api.ParentClosePolicy.REQUEST_CANCEL, ["@caller-1", "@caller-2"]),),
     api.StartWorkflowResponse("run-2", False, existing=True)),
    ("signal_workflow", (api.SignalWorkflowRequest(REF, "approve", {"by": "bob"}, "app:other", "cli", "req-2"),),
     None),
    ("terminate_workflow", (api.TerminateWorkflowRequest(REF, "stuck", "cli", "req-t"),), None),
    ("request_cancel_workflow", (api.CancelWorkflowRequest(REF, "hurry", "cli", "req-4", deadline_ms=5_000),), None),
    ("describe_workflow", (REF,), api.DescribeWorkflowResponse(
        INFO, [api.PendingActivityInfo("1", "app:charge", 5, "BACKOFF", 3, FAILURE, 10, 20)],
        api.PendingWorkflowTaskInfo(9, "STARTED", 2, 30, 40), FAILURE, 2, {"r": 1}, FAILURE)),
    ("get_workflow_history", (api.GetHistoryRequest(REF, 2, 50, True, 1_000),),
     api.GetHistoryResponse("run-1", EVENTS, 4, True)),
    ("get_workflow_result", (api.GetResultRequest(REF, 1_000, True),),
     api.GetResultResponse("run-1", api.WorkflowStatus.FAILED, {"total": 42}, FAILURE, FAILURE)),
    ("record_workflow_task_started", (WF_TASK_INFO, "req-5", "matching-1"), WF_TASK),
    ("record_activity_task_started", (ACT_TASK_INFO, "req-6", "matching-2"), ACT_TASK),
    ("respond_workflow_task_completed", (api.RespondWorkflowTaskCompletedRequest(b"token-wf", [
        Command(CommandType.ScheduleActivityTask, {"activity_id": "1", "request_eager_execution": True}),
        Command(CommandType.CompleteWorkflowExecution, {"result": [1]})], "worker-1"),),
     api.RespondWorkflowTaskCompletedResponse([ACT_TASK])),
    ("respond_workflow_task_failed",
     (api.RespondWorkflowTaskFailedRequest(b"token-wf", "NON_DETERMINISTIC", FAILURE, "worker-1"),), None),
    ("respond_activity_task_completed",
     (api.RespondActivityTaskCompletedRequest(b"token-act", {"charged": 5}, "worker-1", True),),
     api.RespondActivityTaskCompletedResponse(WF_TASK)),
    ("respond_activity_task_failed", (api.RespondActivityTaskFailedRequest(b"token-act", FAILURE, "worker-1"),), None),
    ("record_activity_heartbeat", (api.RecordActivityHeartbeatRequest(b"token-act", [1, 2, 3], "worker-1"),),
     api.RecordActivityHeartbeatResponse(True)),
    ("respond_activity_task_canceled",
     (api.RespondActivityTaskCanceledRequest(b"token-act", {"cleaned": True}, "worker-1"),), None),
    ("monitor_workflow", (api.MonitorWorkflowRequest(REF, "@caller-1", link=True, remove=True),), None),
    ("register_monitor", (api.RegisterMonitorRequest(
        REF, api.MonitorRegistration("shop", "parent-1", "run-p", 7, link=True), remove=True),),
     api.RegisterMonitorResponse("run-1", CLOSED)),
    ("register_monitor", (api.RegisterMonitorRequest(REF, api.MonitorRegistration("shop", "@caller-1")),),
     api.RegisterMonitorResponse("run-1")),  # still running: nothing closed
    ("record_child_closed", (api.RecordChildClosedRequest(PARENT, CLOSED, existing=True),), None),
    ("record_child_closed", (api.RecordChildClosedRequest(PARENT, COMPLETED),), None),
    ("deliver_monitored_closed", (api.DeliverMonitoredClosedRequest(REF, CLOSED, link=True),), None),
    ("get_query_target", (REF,), api.QueryTarget("run-1", "app:order", "orders", api.WorkflowStatus.RUNNING,
                                                  "worker-1")),
]


@pytest.mark.parametrize(("method", "args", "response"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
async def test_every_method_round_trips(env: Env, method: str, args: tuple[Any, ...], response: Any) -> None:
    service, client, _ = env
    service.responses[method] = response
    got = await getattr(client, method)(*args)
    assert service.calls == [(method, args)]
    assert got == response


def test_every_protocol_method_has_a_case_and_an_rpc() -> None:
    methods = protocol_methods(api.HistoryService)
    assert methods == {c[0] for c in CASES}
    # and CallBatch, which carries several calls of the protocol (legato/call_batch.py)
    assert methods | {"call_batch"} == {spec.method for spec in RPCS.values()}


def test_client_methods_take_the_protocol_parameters() -> None:
    for name in protocol_methods(api.HistoryService):
        expected = list(inspect.signature(getattr(api.HistoryService, name)).parameters)
        assert list(inspect.signature(getattr(GrpcHistoryClient, name)).parameters) == expected, name


# ------------------------------------------------------------------ errors

@pytest.mark.parametrize("error", [
    NotFound("workflow order-1 not found", reason="WorkflowNotFound"),
    InvalidArgument("input is too large — ünïcödé ✓", reason="PayloadTooLarge"),
    FailedPrecondition("workflow task already completed"),
    ResourceExhausted("too many pending activities", reason="LimitExceeded"),
    Unavailable("history is stopping", reason="ShuttingDown"),
    ShardOwnershipLost("shard 3 is not owned by this history node", reason="ShardOwnershipLost"),
], ids=lambda e: type(e).__name__)
async def test_errors_keep_their_class_message_and_reason(env: Env, error: ServiceError) -> None:
    service, client, _ = env
    service.errors["record_workflow_task_started"] = error
    with pytest.raises(ServiceError) as info:
        await client.record_workflow_task_started(WF_TASK_INFO, "req-1", "matching-1")
    assert type(info.value) is type(error)
    assert (info.value.message, info.value.reason, info.value.code) == (error.message, error.reason, error.code)


async def test_already_started_carries_the_run_id(env: Env) -> None:
    service, client, _ = env
    service.errors["start_workflow"] = AlreadyStarted("order-1 is already running", run_id="run-7")
    with pytest.raises(AlreadyStarted) as info:
        await client.start_workflow(api.StartWorkflowRequest("order-1", "app:order", "orders"))
    assert (info.value.message, info.value.run_id, info.value.reason) == (
        "order-1 is already running", "run-7", "AlreadyStarted")


async def test_unexpected_exception_is_internal_and_logged(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    service, client, _ = env
    service.errors["register_monitor"] = KeyError("monitors")
    with caplog.at_level(logging.ERROR, logger="legato.history.grpc"), pytest.raises(ServiceError) as info:
        await client.register_monitor(api.RegisterMonitorRequest(REF, api.MonitorRegistration("shop", "@c")))
    assert (info.value.code, info.value.reason) == ("INTERNAL", "Internal")
    assert info.value.message == "internal error in RegisterMonitor: KeyError: 'monitors'"
    assert any(r.exc_info and "RegisterMonitor" in r.getMessage() for r in caplog.records)


async def test_a_malformed_request_is_invalid_argument(env: Env) -> None:
    service, client, _ = env
    with pytest.raises(InvalidArgument, match=r"task\.kind: unknown value 'timer'"):
        await client._rpc.call("RecordWorkflowTaskStarted", wire.pb.RecordWorkflowTaskStartedRequest(
            task=wire.pb.TaskInfo(kind="timer")))
    with pytest.raises(InvalidArgument, match="record child closed: child is required"):
        await client._rpc.call("RecordChildClosed", wire.pb.RecordChildClosedRequest(parent=wire.pb.ParentInfo()))
    assert service.calls == []


async def test_message_size_limit_comes_from_the_server(env: Env) -> None:
    service, client, _ = env
    big = "x" * (5 * 1024 * 1024)  # above gRPC's 4 MB default, below the limit derived from config
    await client.signal_workflow(api.SignalWorkflowRequest(REF, "go", big))
    assert service.calls[0][1][0].input == big
    small = await serve(service, "127.0.0.1", 0, max_message_bytes=64 * 1024)  # type: ignore[arg-type]
    try:
        async with GrpcHistoryClient(f"127.0.0.1:{bound_port(small)}") as c:
            with pytest.raises(ResourceExhausted):
                await c.signal_workflow(api.SignalWorkflowRequest(REF, "go", "y" * (128 * 1024)))
    finally:
        await small.stop(None)
    assert len(service.calls) == 1


# ------------------------------------------------------------------ deadlines and cancellation

async def test_a_wait_is_fitted_to_the_callers_deadline(env: Env) -> None:
    service, _, server = env
    service.responses["get_workflow_result"] = api.GetResultResponse("run-1", api.WorkflowStatus.RUNNING)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        stub = legato_pb2_grpc.HistoryServiceStub(channel)
        await stub.GetWorkflowResult(wire.result_request_to_pb(api.GetResultRequest(REF, 60_000)), timeout=2.0)
    [(_, (req,))] = service.calls
    assert 0 < req.timeout_ms < 2_000  # waits less than the caller does, so its answer arrives


async def test_cancelling_a_wait_cancels_it_on_the_server(env: Env) -> None:
    service, client, _ = env
    service.hang = True
    wait = asyncio.ensure_future(client.get_workflow_history(api.GetHistoryRequest(REF, 5, wait_new_event=True)))
    await service.hanging.wait()
    wait.cancel()
    with pytest.raises(asyncio.CancelledError):
        await wait
    await service.cancelled.wait()


# ------------------------------------------------------------------ retries

class Refuse(grpc.aio.ServerInterceptor):
    """Answers the next `count` calls with a bare UNAVAILABLE, as a server that is going away does."""

    def __init__(self, count: int) -> None:
        self.count = count

    async def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if self.count > 0:
            self.count -= 1
            return grpc.unary_unary_rpc_method_handler(self._refuse)
        return await continuation(details)

    @staticmethod
    async def _refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")


async def _flaky_server(service: Recorder, refusals: int) -> grpc.aio.Server:
    servicer = legato_pb2_grpc.HistoryServiceServicer()
    bind_servicer(servicer, served(service), RPCS, logging.getLogger("test"))  # type: ignore[arg-type]
    return await start_server(lambda s: legato_pb2_grpc.add_HistoryServiceServicer_to_server(servicer, s),
                              "127.0.0.1", 0, interceptors=[Refuse(refusals)], what="flaky history",
                              log=logging.getLogger("test"))


async def test_reads_are_retried_when_the_server_was_unreachable() -> None:
    service = Recorder()
    service.responses["describe_workflow"] = api.DescribeWorkflowResponse(INFO)
    server = await _flaky_server(service, refusals=2)
    try:
        async with GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}", read_attempts=3) as client:
            assert await client.describe_workflow(REF) == api.DescribeWorkflowResponse(INFO)
    finally:
        await server.stop(None)
    assert service.calls == [("describe_workflow", (REF,))]


async def test_writes_are_not_retried() -> None:
    service = Recorder()
    server = await _flaky_server(service, refusals=1)
    try:
        async with GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}", read_attempts=3) as client:
            with pytest.raises(Unavailable) as info:
                await client.record_child_closed(api.RecordChildClosedRequest(PARENT, CLOSED))
            assert info.value.reason == "ServerUnreachable"
            await client.record_child_closed(api.RecordChildClosedRequest(PARENT, CLOSED))  # the caller's retry
    finally:
        await server.stop(None)
    assert [name for name, _ in service.calls] == ["record_child_closed"]


async def test_a_services_own_unavailable_is_not_retried(env: Env) -> None:
    service, client, _ = env
    service.errors["describe_workflow"] = ShardOwnershipLost("shard 1 moved")
    with pytest.raises(ShardOwnershipLost):
        await client.describe_workflow(REF)
    assert len(service.calls) == 1  # a router must ask the new owner, not this node again


async def test_closed_client_refuses_calls(env: Env) -> None:
    _, client, _ = env
    await client.close()
    with pytest.raises(Unavailable, match=r"client of the Legato history service .* is closed"):
        await client.describe_workflow(REF)

