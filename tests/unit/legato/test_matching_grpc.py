"""The internal matching API end to end: every MatchingService method through a real grpc.aio
server on a loopback port (matching/grpc_server.py) and GrpcMatchingClient, against a recording
stand-in and against the real InProcessMatching; errors keep their class, message and reason;
long polls end before the caller's deadline, and a poll or add_task the caller gives up is
cancelled on the server."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from legato import api, wire
from legato.config import Config
from legato.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Failure,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from legato.grpc_serving import bound_port
from legato.internal_clients import GrpcMatchingClient
from legato.proto import legato_pb2_grpc
from matching.grpc_server import rpcs, serve
from matching.service import InProcessMatching
from tests.unit.legato.grpc_fakes import ACT_TASK, WF_TASK, WF_TASK_INFO, Recorder, protocol_methods

Env = tuple[Recorder, GrpcMatchingClient, grpc.aio.Server]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    service = Recorder()
    server = await serve(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    client = GrpcMatchingClient(f"127.0.0.1:{bound_port(server)}")
    try:
        yield service, client, server
    finally:
        await client.close()
        await server.stop(None)


EXIT = api.ProcessMessage("event", "", None, "order-1",
                          {"kind": "EXIT", "from": "order-1", "result": {"value": 42, "error": None}})
REPLY = api.ProcessMessage("message", "reply", {"ok": [1, 2]}, "order-1")

QUERY = api.QueryTaskRequest("shop", "orders", "order-1", "run-1", "app:order",
                             api.QueryTask("q-1", api.STACK_TRACE_QUERY, {"a": 1}, True), "worker-1", 1_500)
ANSWER = api.RespondQueryTaskCompletedRequest(b"q-1", {"coroutines": []}, Failure("no", "Invalid"), "worker-cache",
                                              True, "worker-1")

# (method, its arguments, the service's answer): every field set to a value that is not its default
CASES: list[tuple[str, tuple[Any, ...], Any]] = [
    ("add_task", (WF_TASK_INFO,), None),
    ("poll_workflow_task", (api.PollRequest("orders", "shop", "worker-1", 1_000),), WF_TASK),
    ("poll_workflow_task", (api.PollRequest("orders", "shop", "worker-1", 10),), None),
    ("poll_activity_task", (api.PollRequest("charges", "shop", "worker-2", 2_000),), ACT_TASK),
    ("poll_activity_task", (api.PollRequest("charges", "shop", "worker-2", 10),), None),
    ("deliver_message", ("@caller-1", REPLY), True),
    ("deliver_message", ("@caller-2", EXIT), False),
    ("open_mailbox", ("@caller-1",), None),
    ("close_mailbox", ("@caller-1",), None),
    ("poll_mailbox", (api.PollMailboxRequest("@caller-1", 1_000, 5),), [REPLY, EXIT]),
    ("poll_mailbox", (api.PollMailboxRequest("@caller-1", 10, 7),), []),
    ("offer_task", (WF_TASK_INFO, "req-7"), api.OfferResult(True, 3)),
    ("offer_task", (WF_TASK_INFO, "req-8"), api.OfferResult(False, 0)),
    ("query_workflow", (QUERY,), ANSWER),
    ("respond_query_task_completed", (ANSWER,), None),
]


@pytest.mark.parametrize(("method", "args", "response"), CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
async def test_every_method_round_trips(env: Env, method: str, args: tuple[Any, ...], response: Any) -> None:
    service, client, _ = env
    service.responses[method] = response
    got = await getattr(client, method)(*args)
    assert service.calls == [(method, args)]
    assert got == response


def test_every_protocol_method_has_a_case_and_an_rpc() -> None:
    methods = protocol_methods(api.MatchingService) | protocol_methods(api.MatchingPeer)
    assert methods == {c[0] for c in CASES}
    assert methods == {spec.method for spec in rpcs(Config()).values()}


def test_client_methods_take_the_protocol_parameters() -> None:
    for protocol in (api.MatchingService, api.MatchingPeer):
        for name in protocol_methods(protocol):
            expected = list(inspect.signature(getattr(protocol, name)).parameters)
            assert list(inspect.signature(getattr(GrpcMatchingClient, name)).parameters) == expected, name



@pytest.mark.parametrize("error", [
    NotFound("mailbox @caller-1 is not open", reason="MailboxNotFound"),
    InvalidArgument("pid must be a caller pid"),
    FailedPrecondition("stale"),
    ResourceExhausted("the mailbox of @caller-1 is full (10000 messages)", reason="MailboxFull"),
    Unavailable("matching is stopped", reason="MatchingStopped"),
], ids=lambda e: type(e).__name__)
async def test_errors_keep_their_class_message_and_reason(env: Env, error: ServiceError) -> None:
    service, client, _ = env
    service.errors["deliver_message"] = error
    with pytest.raises(ServiceError) as info:
        await client.deliver_message("@caller-1", REPLY)
    assert type(info.value) is type(error)
    assert (info.value.message, info.value.reason) == (error.message, error.reason)


# ------------------------------------------------------------------ deadlines and cancellation

async def test_a_poll_past_the_clients_deadline_is_empty_and_cancelled_on_the_server() -> None:
    service = Recorder()
    service.hang = True  # a service that ignores the poll's timeout
    server = await serve(service, "127.0.0.1", 0)  # type: ignore[arg-type]
    try:
        async with GrpcMatchingClient(f"127.0.0.1:{bound_port(server)}", long_poll_margin_s=0.05) as client:
            assert await client.poll_workflow_task(api.PollRequest("orders", timeout_ms=50)) is None
        await service.cancelled.wait()
    finally:
        await server.stop(None)


@pytest.mark.parametrize("method", ["poll_mailbox", "add_task"])
async def test_a_call_the_client_gives_up_is_cancelled_on_the_server(env: Env, method: str) -> None:
    service, client, _ = env
    service.hang = True
    args = (api.PollMailboxRequest("@caller-1", 60_000),) if method == "poll_mailbox" else (WF_TASK_INFO,)
    call = asyncio.ensure_future(getattr(client, method)(*args))
    await service.hanging.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await service.cancelled.wait()


async def test_task_polls_are_fitted_to_the_callers_deadline(env: Env) -> None:
    service, _, server = env
    service.responses["poll_mailbox"] = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        stub = legato_pb2_grpc.MatchingServiceStub(channel)
        # timeout 0 = the server's long-poll timeout (30 s), longer than this caller waits
        await stub.PollActivityTask(wire.pb.PollActivityTaskRequest(task_queue="q"), timeout=2.0)
        await stub.PollMailbox(wire.pb.PollMailboxRequest(pid="@c", timeout_ms=60_000), timeout=2.0)
        await stub.PollMailbox(wire.pb.PollMailboxRequest(pid="@c", timeout_ms=0), timeout=2.0)
    waits = [args[0].timeout_ms for _, args in service.calls]
    assert 0 < waits[0] < 2_000 and 0 < waits[1] < 2_000
    assert waits[2] == 0  # no wait asked: none added


class _NoHistory:
    """History for a matching that is never handed a task."""

    async def record_workflow_task_started(self, *args: Any) -> api.WorkflowTask:
        raise AssertionError("no task was added")

    record_activity_task_started = record_workflow_task_started


@pytest.fixture
async def real_matching() -> AsyncIterator[tuple[InProcessMatching, grpc.aio.Server]]:
    matching = InProcessMatching(_NoHistory(), Config())  # type: ignore[arg-type]
    server = await serve(matching, "127.0.0.1", 0)
    try:
        yield matching, server
    finally:
        await server.stop(None)
        await matching.stop()


async def test_a_real_long_poll_answers_empty_before_the_callers_deadline(
        real_matching: tuple[InProcessMatching, grpc.aio.Server]) -> None:
    matching, server = real_matching
    async with grpc.aio.insecure_channel(f"127.0.0.1:{bound_port(server)}") as channel:
        stub = legato_pb2_grpc.MatchingServiceStub(channel)
        answer = await stub.PollWorkflowTask(wire.pb.PollWorkflowTaskRequest(task_queue="q", timeout_ms=60_000),
                                             timeout=0.5)  # would be DEADLINE_EXCEEDED without the fit
    assert not answer.HasField("task")
    assert matching.pollers("default", "q", api.TaskKind.WORKFLOW) == 0


async def test_real_mailboxes_through_the_client(real_matching: tuple[InProcessMatching, grpc.aio.Server]) -> None:
    _, server = real_matching
    async with GrpcMatchingClient(f"127.0.0.1:{bound_port(server)}") as client:
        with pytest.raises(NotFound):
            await client.poll_mailbox(api.PollMailboxRequest("@caller-9", 0))
        assert await client.deliver_message("@caller-9", REPLY) is False
        await client.open_mailbox("@caller-9")
        waiting = asyncio.ensure_future(client.poll_mailbox(api.PollMailboxRequest("@caller-9", 10_000)))
        assert await client.deliver_message("@caller-9", REPLY) is True
        assert await waiting == [REPLY]
        await client.close_mailbox("@caller-9")
        assert await client.deliver_message("@caller-9", EXIT) is False


async def test_a_real_query_reaches_a_poll_and_its_answer_the_caller(
        real_matching: tuple[InProcessMatching, grpc.aio.Server]) -> None:
    """Issue 14 over the internal API: a query task goes to a workflow poll (of the sticky worker
    only, when it names one) without history being asked anything; the answer comes back to the
    caller; a query nobody takes is DEADLINE_EXCEEDED, and an answer nobody waits for NOT_FOUND."""
    matching, server = real_matching
    async with GrpcMatchingClient(f"127.0.0.1:{bound_port(server)}") as client:
        query = api.QueryTaskRequest("default", "q", "order-1", "run-1", "app:order",
                                     api.QueryTask("q-1", api.STACK_TRACE_QUERY), "worker-1", 5_000)
        asking = asyncio.ensure_future(client.query_workflow(query))
        other = await client.poll_workflow_task(api.PollRequest("q", identity="worker-2", timeout_ms=200))
        assert other is None  # held for worker-1
        task = await client.poll_workflow_task(api.PollRequest("q", identity="worker-1", timeout_ms=5_000))
        assert task is not None and task.query is not None and task.history == []
        assert (task.query.query_id, task.run_id, task.task_token) == ("q-1", "run-1", b"q-1")
        answer = api.RespondQueryTaskCompletedRequest(task.task_token, {"coroutines": []}, source="worker-cache",
                                                      identity="worker-1")
        await client.respond_query_task_completed(answer)
        assert await asking == answer
        with pytest.raises(NotFound) as e:
            await client.respond_query_task_completed(answer)
        assert e.value.reason == "QueryNotWaiting"
        with pytest.raises(DeadlineExceeded) as d:
            await client.query_workflow(api.QueryTaskRequest("default", "q", "order-1", "run-1", "app:order",
                                                             api.QueryTask("q-2", api.STACK_TRACE_QUERY),
                                                             timeout_ms=100))
        assert d.value.reason == "QueryTimeout" and "default/q" in d.value.message
    assert matching.backlog("default", "q", api.TaskKind.WORKFLOW) == 0
