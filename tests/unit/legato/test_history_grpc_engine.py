"""The real history service behind its internal gRPC API: the one-process engine's
HistoryServiceImpl (in-memory SQLite) served by history/grpc_server.py and reached through
GrpcHistoryClient gives the same answers, and raises the same errors, as when called in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from legato import api
from legato.errors import AlreadyStarted, NotFound
from legato.events import EventType
from legato.internal_clients import GrpcHistoryClient
from tests.unit.legato.grpc_fakes import served_engine_history

Env = tuple[api.HistoryService, GrpcHistoryClient]


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with served_engine_history() as env:
        yield env


def _start(workflow_id: str, request_id: str = "", **kw: object) -> api.StartWorkflowRequest:
    return api.StartWorkflowRequest(workflow_id, "app:order", "orders", [{"items": 2}], memo={"m": 1},
                                    search_attributes={"Customer": "ann"},
                                    request_id=request_id or f"req-{workflow_id}", **kw)  # type: ignore[arg-type]


async def test_start_describe_and_history_through_grpc(env: Env) -> None:
    history, client = env
    started = await client.start_workflow(_start("order-1"))
    assert started.started and started.run_id
    ref = api.ExecutionRef("order-1")

    desc = await client.describe_workflow(ref)
    assert (desc.info.run_id, desc.info.status, desc.info.memo) == (started.run_id, api.WorkflowStatus.RUNNING,
                                                                   {"m": 1})
    assert desc == await history.describe_workflow(ref)

    page = await client.get_workflow_history(api.GetHistoryRequest(ref))
    assert [e.event_type for e in page.events][:2] == [EventType.WorkflowExecutionStarted,
                                                       EventType.WorkflowTaskScheduled]
    assert page.events[0].attrs["input"] == [{"items": 2}]
    assert page == await history.get_workflow_history(api.GetHistoryRequest(ref))

    retried = await client.start_workflow(_start("order-1"))  # the same request id: the same run
    assert (retried.run_id, retried.started) == (started.run_id, False)


async def test_a_history_long_poll_wakes_on_a_new_event(env: Env) -> None:
    _, client = env
    await client.start_workflow(_start("order-2"))
    ref = api.ExecutionRef("order-2")
    first = await client.get_workflow_history(api.GetHistoryRequest(ref))
    wait = asyncio.ensure_future(client.get_workflow_history(
        api.GetHistoryRequest(ref, first.next_event_id, wait_new_event=True, timeout_ms=10_000)))
    await client.signal_workflow(api.SignalWorkflowRequest(ref, "approve", {"by": "bob"}, request_id="sig-1"))
    page = await wait
    assert [(e.event_type, e.attrs.get("input")) for e in page.events][:1] == [
        (EventType.WorkflowExecutionSignaled, {"by": "bob"})]


async def test_the_real_services_errors_arrive_as_raised(env: Env) -> None:
    history, client = env
    with pytest.raises(NotFound) as remote:
        await client.describe_workflow(api.ExecutionRef("nobody"))
    with pytest.raises(NotFound) as local:
        await history.describe_workflow(api.ExecutionRef("nobody"))
    assert (remote.value.message, remote.value.reason) == (local.value.message, local.value.reason)

    run = await client.start_workflow(_start("order-3"))
    with pytest.raises(AlreadyStarted) as dup:
        await client.start_workflow(_start("order-3", request_id="another",
                                           id_reuse_policy=api.IdReusePolicy.REJECT_DUPLICATE))
    assert dup.value.run_id == run.run_id
