"""Bursts against a real grpc.aio server on loopback: calls past `grpc.max_concurrent_calls` are
refused with ServerBusy before the service sees them, and the client sends them again with
backoff until they are served, or until their deadline (then ResourceExhausted, ServerBusy)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from frontend.grpc_server import bound_port, serve
from legato import api
from legato.client import GrpcClient
from legato.config import Config, GrpcConfig
from legato.errors import ResourceExhausted
from tests.unit.legato.grpc_fakes import Recorder

LIMIT = 4


class GatedService(Recorder):
    """start_workflow waits for `gate`; counts how many run at once (other methods: Recorder's)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.active = 0
        self.peak = 0
        self.arrived = asyncio.Condition()
        self.served = 0

    async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
        self.active += 1
        self.peak = max(self.peak, self.active)
        async with self.arrived:
            self.arrived.notify_all()
        try:
            await self.gate.wait()
        finally:
            self.active -= 1
        self.served += 1
        return api.StartWorkflowResponse(run_id=f"run-{req.workflow_id}", started=True)


@pytest.fixture
async def gated() -> AsyncIterator[tuple[GatedService, grpc.aio.Server]]:
    service = GatedService()
    config = Config(grpc=GrpcConfig(max_concurrent_calls=LIMIT))
    server = await serve(service, "127.0.0.1", 0, config=config)
    try:
        yield service, server
    finally:
        await server.stop(None)


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Wait for a condition on the server's counters, which signal nothing (checked every few
    ms), at most `timeout_s`."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - a counter, not an event, of the code under test
            await asyncio.sleep(0.005)


def _start(i: int) -> api.StartWorkflowRequest:
    return api.StartWorkflowRequest(f"wf-{i}", "app:flow", "q", request_id=f"r-{i}")


async def test_calls_past_the_limit_are_refused_then_retried_until_served(
        gated: tuple[GatedService, grpc.aio.Server]) -> None:
    service, server = gated
    fast = GrpcConfig(busy_retry_initial_ms=5, busy_retry_max_ms=50)
    async with GrpcClient(f"127.0.0.1:{bound_port(server)}", grpc_config=fast) as client:
        calls = [asyncio.create_task(client.start_workflow(_start(i))) for i in range(40)]
        async with service.arrived:
            await service.arrived.wait_for(lambda: service.active == LIMIT)
        # The service holds LIMIT calls; each of the others is pushed back (again and again).
        await _until(lambda: server.legato_call_limit.refused >= 2 * (40 - LIMIT))
        assert service.active == LIMIT
        service.gate.set()
        results = await asyncio.gather(*calls)
    assert sorted(r.run_id for r in results) == sorted(f"run-wf-{i}" for i in range(40))
    assert service.peak == LIMIT
    assert client.busy_retries >= 2 * (40 - LIMIT)


async def test_a_call_refused_until_its_deadline_fails_with_server_busy(
        gated: tuple[GatedService, grpc.aio.Server]) -> None:
    service, server = gated
    fast = GrpcConfig(busy_retry_initial_ms=5, busy_retry_max_ms=20)
    address = f"127.0.0.1:{bound_port(server)}"
    # The calls holding the slots outlive the refused one's deadline (had they the same 2 s,
    # they would expire first on a slow machine, and the refused call get in and time out there).
    async with (GrpcClient(address, grpc_config=fast, call_timeout_s=60.0) as holder,
                GrpcClient(address, grpc_config=fast, call_timeout_s=2.0) as client):
        held = [asyncio.create_task(holder.start_workflow(_start(i))) for i in range(LIMIT)]
        async with service.arrived:
            await service.arrived.wait_for(lambda: service.active == LIMIT)
        with pytest.raises(ResourceExhausted) as info:
            await client.start_workflow(_start(99))
        assert info.value.reason == "ServerBusy"
        assert "grpc.max_concurrent_calls" in info.value.message
        assert client.busy_retries > 0
        service.gate.set()
        assert len(await asyncio.gather(*held)) == LIMIT  # served once the gate opened


async def test_a_resource_exhausted_from_the_service_is_not_retried() -> None:
    """Only a push-back is sent again: a limit the service reports is the caller's answer."""

    class Full(Recorder):
        calls = 0

        async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
            Full.calls += 1
            raise ResourceExhausted("too many pending activities", reason="PendingActivities")

    server = await serve(Full(), "127.0.0.1", 0)
    try:
        async with GrpcClient(f"127.0.0.1:{bound_port(server)}") as client:
            with pytest.raises(ResourceExhausted) as info:
                await client.start_workflow(_start(1))
        assert info.value.reason == "PendingActivities"
        assert Full.calls == 1 and client.busy_retries == 0
    finally:
        await server.stop(None)
