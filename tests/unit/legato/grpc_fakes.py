"""A recording stand-in for any service protocol, values with every field set, and the one-process
engine's real history behind its gRPC API, for the tests of the internal gRPC APIs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from history.grpc_server import serve
from legato import api
from legato.config import Config
from legato.errors import Failure
from legato.events import EventType, HistoryEvent
from legato.grpc_serving import bound_port
from legato.internal_clients import GrpcHistoryClient
from legato.server import Engine


class Recorder:
    """Answers any method: records `(name, args)`, then raises `errors[name]`, hangs until
    cancelled (`hang`), or returns `responses[name]`."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.responses: dict[str, Any] = {}
        self.errors: dict[str, BaseException] = {}
        self.hang = False
        self.hanging = asyncio.Event()
        self.cancelled = asyncio.Event()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        if name.startswith("_"):
            raise AttributeError(name)

        async def method(*args: Any) -> Any:
            self.calls.append((name, args))
            if name in self.errors:
                raise self.errors[name]
            if self.hang:
                self.hanging.set()
                try:
                    await asyncio.Future()
                except asyncio.CancelledError:
                    self.cancelled.set()
                    raise
            return self.responses.get(name)
        return method


def protocol_methods(protocol: type) -> set[str]:
    return {name for name in dir(protocol) if not name.startswith("_")}


REF = api.ExecutionRef("order-1", run_id="run-1", namespace="shop")
FAILURE = Failure("card declined", kind="PAYMENT", retryable=False, details={"code": 51},
                  source="order.lua:12", cause=Failure("gateway said no", kind="REMOTE"))
INFO = api.WorkflowExecutionInfo("shop", "order-1", "run-1", "app:order", "orders", api.WorkflowStatus.FAILED,
                                 1_700_000_000_000, 1_700_000_001_000, 12, {"m": [1, 2]}, {"Customer": "ann"})
EVENTS = [
    HistoryEvent(1, EventType.WorkflowExecutionStarted, 1_700_000_000_000,
                 {"workflow_type": "app:order", "input": [1, {"é": "ü"}], "random_seed": "ab"}),
    HistoryEvent(2, EventType.WorkflowTaskScheduled, 1_700_000_000_001, {"task_queue": "orders", "attempt": 1}),
    HistoryEvent(3, EventType.WorkflowTaskStarted, 1_700_000_000_002, {"identity": "worker-1"}),
]
WF_TASK = api.WorkflowTask(b"token-wf", "shop", "order-1", "run-1", "app:order", "orders", 2, 3, 1, EVENTS)
ACT_TASK = api.ActivityTask(b"token-act", "shop", "order-1", "run-1", "app:order", "1", "app:charge", "orders",
                            [{"amount": 5}], 3, 100, 200, 30_000, 5_000, {"progress": 0.5}, {"trace": "t-1"})
WF_TASK_INFO = api.TaskInfo(api.TaskKind.WORKFLOW, "shop", "orders", "order-1", "run-1", 2, shard_id=3,
                            task_id=(7 << 20) + 5, attempt=4, created_ms=1_700_000_000_003)
ACT_TASK_INFO = api.TaskInfo(api.TaskKind.ACTIVITY, "shop", "charges", "order-1", "run-1", 5, shard_id=1,
                             task_id=(2 << 20) + 9, attempt=2, created_ms=1_700_000_000_004)
CLOSED = api.ExecutionClosed("shop", "child-1", "run-c", api.WorkflowStatus.FAILED, {"partial": [1, 2]}, FAILURE)
COMPLETED = api.ExecutionClosed("shop", "child-2", "run-d", api.WorkflowStatus.COMPLETED, "done")
PARENT = api.ParentInfo("shop", "parent-1", "run-p", 7)


@contextlib.asynccontextmanager
async def served_engine_history() -> AsyncIterator[tuple[api.HistoryService, GrpcHistoryClient]]:
    """The one-process engine's HistoryServiceImpl (in-memory SQLite) served by
    history/grpc_server.py, and a GrpcHistoryClient of it."""
    async with Engine(Config(), db_path=None) as engine:
        history: api.HistoryService = engine._history  # type: ignore[assignment]  # the engine's own history
        server = await serve(history, "127.0.0.1", 0)
        try:
            async with GrpcHistoryClient(f"127.0.0.1:{bound_port(server)}") as client:
                yield history, client
        finally:
            await server.stop(None)
