"""The in-process assembly for end-to-end tests: `legato.server.Engine` on a SQLite file plus a
`worker.worker.Worker`, driven through the public `WorkflowService` (the engine's frontend).

The worker talks to the frontend through `Spy`, which records every call (so a test can wait for
"the worker got an activity task" or "an activity's response was refused") and can hold a call
at a gate (so a test can act while a workflow task is in flight). Waits are long-polls on
history or on those recorded calls, never sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frontend.grpc_server import bound_port, serve
from legato.api import (
    DescribeWorkflowResponse,
    ExecutionRef,
    GetHistoryRequest,
    GetResultRequest,
    GetResultResponse,
    SignalWorkflowRequest,
    StartWorkflowRequest,
    WorkflowService,
    WorkflowStatus,
)
from legato.client import GrpcClient
from legato.config import Config
from legato.events import EventType as E
from legato.events import HistoryEvent
from legato.server import Engine
from tests.conftest import queues_config_from_env, store_config_from_env
from worker.entries import Registry, load_registry
from worker.worker import Worker

APPS = Path(__file__).resolve().parent.parent / "apps"
ENGINE_APP = APPS / "engine"
TASK_QUEUE = "eng"


def engine_config() -> Config:
    """Short timeouts and few pollers: fast tests. The store and the queues are the ones the test runs on."""
    c = Config()
    c.store = store_config_from_env() or c.store
    c.queues = queues_config_from_env() or c.queues
    c.history.workflow_task_timeout_ms = 3000
    c.history.workflow_task_retry_initial_ms = 20
    c.history.workflow_task_retry_max_ms = 200
    c.history.activity_retry_initial_ms = 10
    c.worker.workflow_pollers = 2
    c.worker.activity_pollers = 4
    return c


@dataclass
class Call:
    name: str
    request: Any
    result: Any = None
    error: BaseException | None = None


class Spy:
    """A `WorkflowService` in front of another: records calls, and holds the gated ones."""

    def __init__(self, inner: WorkflowService) -> None:
        self.inner = inner
        self.calls: list[Call] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.entered: dict[str, asyncio.Event] = {}
        self._changed = asyncio.Condition()

    def hold(self, name: str) -> None:
        """Hold calls of `name` until `release(name)`; `entered[name]` is set when one arrives."""
        self.gates[name] = asyncio.Event()
        self.entered[name] = asyncio.Event()

    def release(self, name: str) -> None:
        gate = self.gates.pop(name, None)
        if gate is not None:
            gate.set()

    async def wait_call(self, name: str, pred: Callable[[Call], bool] = lambda c: True,
                        timeout: float = 10.0) -> Call:
        async def find() -> Call:
            async with self._changed:
                while True:
                    for c in self.calls:
                        if c.name == name and pred(c):
                            return c
                    await self._changed.wait()
        return await asyncio.wait_for(find(), timeout)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)

        async def call(req: Any) -> Any:
            if name in self.gates:
                self.entered[name].set()
                await self.gates[name].wait()
            rec = Call(name, req)
            try:
                rec.result = await target(req)
                return rec.result
            except Exception as err:
                rec.error = err
                raise
            finally:
                if not name.startswith("poll_") or rec.result is not None or rec.error is not None:
                    async with self._changed:
                        self.calls.append(rec)
                        self._changed.notify_all()
        return call


class Harness:
    """An engine on `db` and a worker for `app`; both restartable (a new worker has an empty cache)."""

    _ids = itertools.count(1)

    def __init__(self, tmp: Path, app: Path = ENGINE_APP, config: Config | None = None, *,
                 grpc: bool | None = None) -> None:
        """`grpc`: the worker and the test talk to the engine over its gRPC API instead of in-process
        (default: the LEGATO_TEST_GRPC environment variable, set by the `transport` fixture)."""
        self.db = tmp / "legato.db"
        self.app = app
        self.config = config or engine_config()
        self.grpc = grpc if grpc is not None else os.environ.get("LEGATO_TEST_GRPC") == "1"
        self.engine: Engine | None = None
        self.worker: Worker | None = None
        self.spy: Spy | None = None
        self._server: Any = None
        self._client: GrpcClient | None = None

    @property
    def api(self) -> WorkflowService:
        if self._client is not None:
            return self._client
        assert self.engine is not None
        return self.engine.frontend

    async def start(self, registry: Registry | None = None) -> Harness:
        self.engine = Engine(self.config, str(self.db))
        await self.engine.start()
        if self.grpc:
            self._server = await serve(self.engine.frontend, "127.0.0.1", 0, config=self.config)
            self._client = GrpcClient(f"127.0.0.1:{bound_port(self._server)}",
                                      long_poll_timeout_ms=self.config.matching.long_poll_timeout_ms)
        await self.start_worker(registry)
        return self

    async def start_worker(self, registry: Registry | None = None) -> Worker:
        self.spy = Spy(self.api)
        self.worker = Worker(self.spy, registry or load_registry(self.app), self.config, identity="test-worker")
        await self.worker.start()
        return self.worker

    async def stop_worker(self) -> None:
        if self.spy is not None:
            for name in list(self.spy.gates):
                self.spy.release(name)
        if self.worker is not None:
            await self.worker.stop(grace_s=0.2)
            self.worker = None

    async def close(self) -> None:
        await self.stop_worker()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._server is not None:
            await self._server.stop(grace=0.1)
            self._server = None
        if self.engine is not None:
            await self.engine.stop()
            self.engine = None

    async def restart(self) -> None:
        """Stop worker and engine, then start both again on the same database."""
        await self.close()
        await self.start()

    async def __aenter__(self) -> Harness:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------ client calls

    async def start_workflow(self, workflow_type: str, *args: Any, workflow_id: str = "") -> str:
        wid = workflow_id or f"{workflow_type.split(':')[-1]}-{next(self._ids)}"
        await self.api.start_workflow(StartWorkflowRequest(
            workflow_id=wid, workflow_type=workflow_type, task_queue=TASK_QUEUE, input=list(args)))
        return wid

    async def signal(self, wid: str, name: str, data: Any = None, sender: str = "tester") -> None:
        await self.api.signal_workflow(SignalWorkflowRequest(ExecutionRef(wid), name, data, sender=sender))

    async def result(self, wid: str, timeout: float = 15.0) -> GetResultResponse:
        r = await self.api.get_workflow_result(GetResultRequest(ExecutionRef(wid), int(timeout * 1000)))
        assert r.status != WorkflowStatus.RUNNING, f"{wid} still running after {timeout}s: {await self.summary(wid)}"
        return r

    async def value(self, wid: str, timeout: float = 15.0) -> Any:
        """The result of a workflow that must complete."""
        r = await self.result(wid, timeout)
        assert r.status == WorkflowStatus.COMPLETED, (r.status, r.failure)
        return r.result

    async def describe(self, wid: str) -> DescribeWorkflowResponse:
        return await self.api.describe_workflow(ExecutionRef(wid))

    async def summary(self, wid: str) -> str:
        """For assertion messages: the event types and the last workflow task failure."""
        d = await self.describe(wid)
        return f"events {types(await self.history(wid))[:60]}, last task failure: {d.last_workflow_task_failure}"

    async def history(self, wid: str) -> list[HistoryEvent]:
        events: list[HistoryEvent] = []
        while True:
            page = await self.api.get_workflow_history(GetHistoryRequest(ExecutionRef(wid),
                                                                         first_event_id=len(events) + 1))
            events.extend(page.events)
            if not page.events:
                return events

    async def wait_event(self, wid: str, pred: Callable[[HistoryEvent], bool], timeout: float = 10.0) -> HistoryEvent:
        """Long-poll the history until an event matches."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        first = 1
        while True:
            left = int((deadline - loop.time()) * 1000)
            assert left > 0, f"no such event in the history of {wid}: {await self.summary(wid)}"
            page = await self.api.get_workflow_history(GetHistoryRequest(
                ExecutionRef(wid), first_event_id=first, wait_new_event=True, timeout_ms=min(left, 5000)))
            for ev in page.events:
                if pred(ev):
                    return ev
            assert not (page.closed and not page.events), \
                f"{wid} closed without such an event: {await self.summary(wid)}"
            first = page.next_event_id

    async def wait_idle(self, wid: str, timeout: float = 10.0) -> None:
        """Until the run has no workflow task and no activity in flight (it waits for a signal or a
        timer): nothing is lost when the worker or the engine stops then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            events = await self.history(wid)
            d = await self.describe(wid)
            if d.pending_workflow_task is None and not d.pending_activities:
                return
            left = int((deadline - loop.time()) * 1000)
            assert left > 0, f"{wid} is not idle: {await self.summary(wid)}"
            await self.api.get_workflow_history(GetHistoryRequest(  # until the next event
                ExecutionRef(wid), first_event_id=len(events) + 1, wait_new_event=True, timeout_ms=min(left, 5000)))

    async def wait_type(self, wid: str, etype: E, timeout: float = 10.0) -> HistoryEvent:
        return await self.wait_event(wid, lambda e: e.event_type is etype, timeout)


def types(events: list[HistoryEvent]) -> list[str]:
    return [e.event_type.value for e in events]


def of_type(events: list[HistoryEvent], etype: E) -> list[HistoryEvent]:
    return [e for e in events if e.event_type is etype]


@contextlib.asynccontextmanager
async def engine_with_worker(config: Config, registry: Registry, db_path: str, via: str,
                             identity: str) -> AsyncIterator[tuple[Any, Engine, Worker]]:
    """An in-process engine on a SQLite file and a started worker for `registry`; the worker (and
    the returned service, for callers) reach the engine directly (via "in-process") or over gRPC
    (via "grpc"), as `legato worker` does."""
    async with Engine(config, db_path) as engine:
        server = client = None
        service: Any = engine.frontend
        if via == "grpc":
            server = await serve(engine.frontend, "127.0.0.1", 0, config=config)
            client = GrpcClient(f"127.0.0.1:{bound_port(server)}")
            service = client
        worker = Worker(service, registry, config, identity=identity)
        await worker.start()
        try:
            yield service, engine, worker
        finally:
            await worker.stop()
            if client is not None:
                await client.close()
            if server is not None:
                await server.stop(None)
