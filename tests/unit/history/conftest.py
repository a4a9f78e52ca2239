"""Fixtures for history tests: a controllable clock, a matching stand-in, and helpers that act as
a worker (record started, respond) so tests read like the protocol."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from history.service import HistoryServiceImpl
from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore
from legato.api import (
    ActivityTask,
    PollRequest,
    RespondWorkflowTaskCompletedRequest,
    StartWorkflowRequest,
    TaskInfo,
    TaskKind,
    WorkflowTask,
)
from legato.commands import Command, CommandType
from legato.config import Config
from legato.events import EventType

T0 = 1_700_000_000_000
WAIT_S = 5.0  # safety net for waits on conditions; never reached when tests pass


class FakeClock:
    def __init__(self, now: int = T0) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


class FakeMatching:
    """Records add_task calls. Task queues in `blocked` never complete add_task (nobody polls)."""

    def __init__(self) -> None:
        self.tasks: list[TaskInfo] = []
        self.blocked: set[str] = set()
        self._cond = asyncio.Condition()

    async def add_task(self, task: TaskInfo) -> None:
        if task.task_queue in self.blocked:
            await asyncio.Event().wait()  # forever (until cancelled)
        async with self._cond:
            self.tasks.append(task)
            self._cond.notify_all()

    async def wait_for(self, pred: Callable[[TaskInfo], bool]) -> TaskInfo:
        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(lambda: any(pred(t) for t in self.tasks)), WAIT_S)
            return [t for t in self.tasks if pred(t)][-1]

    def find(self, pred: Callable[[TaskInfo], bool]) -> list[TaskInfo]:
        return [t for t in self.tasks if pred(t)]

    async def poll_workflow_task(self, req: PollRequest) -> WorkflowTask | None:
        return None

    async def poll_activity_task(self, req: PollRequest) -> ActivityTask | None:
        return None


def make_config(**history: Any) -> Config:
    h: dict[str, Any] = {"num_shards": 2, "ack_flush_interval_ms": 3_600_000}
    h.update(history)
    limits = h.pop("limits", {})
    return Config.model_validate({"history": h, "limits": limits})


@dataclass
class Env:
    history: HistoryServiceImpl
    store: SqliteStore
    visibility: SqliteVisibilityStore
    matching: FakeMatching
    clock: FakeClock
    config: Config
    req_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # ------------------------------------------------------------ worker-like helpers

    async def start(self, workflow_id: str = "wf-1", **kw: Any) -> str:
        kw.setdefault("workflow_type", "app:order")
        kw.setdefault("task_queue", "q")
        resp = await self.history.start_workflow(StartWorkflowRequest(workflow_id=workflow_id, **kw))
        return resp.run_id

    async def wft_task(self, workflow_id: str, scheduled_event_id: int | None = None) -> TaskInfo:
        return await self.matching.wait_for(
            lambda t: t.kind == TaskKind.WORKFLOW and t.workflow_id == workflow_id
            and (scheduled_event_id is None or t.scheduled_event_id == scheduled_event_id))

    async def act_task(self, workflow_id: str, scheduled_event_id: int, attempt: int = 1) -> TaskInfo:
        return await self.matching.wait_for(
            lambda t: t.kind == TaskKind.ACTIVITY and t.workflow_id == workflow_id
            and t.scheduled_event_id == scheduled_event_id and t.attempt == attempt)

    async def poll_wft(self, workflow_id: str, scheduled_event_id: int | None = None) -> WorkflowTask:
        task = await self.wft_task(workflow_id, scheduled_event_id)
        return await self.history.record_workflow_task_started(task, f"req-{next(self.req_ids)}", "worker-1")

    async def poll_act(self, workflow_id: str, scheduled_event_id: int, attempt: int = 1) -> ActivityTask:
        task = await self.act_task(workflow_id, scheduled_event_id, attempt)
        return await self.history.record_activity_task_started(task, f"req-{next(self.req_ids)}", "worker-1")

    async def complete(self, wt: WorkflowTask, *commands: Command) -> None:
        await self.history.respond_workflow_task_completed(
            RespondWorkflowTaskCompletedRequest(wt.task_token, list(commands), identity="worker-1"))

    async def events(self, workflow_id: str, run_id: str = "") -> list[tuple[int, EventType]]:
        from legato.api import ExecutionRef, GetHistoryRequest
        resp = await self.history.get_workflow_history(GetHistoryRequest(ExecutionRef(workflow_id, run_id)))
        return [(e.event_id, e.event_type) for e in resp.events]

    async def types(self, workflow_id: str, run_id: str = "") -> list[EventType]:
        return [t for _, t in await self.events(workflow_id, run_id)]

    async def fire(self, advance_ms: int = 0) -> int:
        self.clock.advance(advance_ms)
        return await self.history.fire_due_timers()


def cmd(kind: CommandType, **attrs: Any) -> Command:
    return Command(kind, attrs)


def activity(activity_id: str = "1", activity_type: str = "app:charge", **kw: Any) -> Command:
    return Command(CommandType.ScheduleActivityTask, {"activity_id": activity_id, "activity_type": activity_type,
                                                      "input": kw.pop("input", [1]), **kw})


def timer(timer_id: str = "1", ms: int = 1000) -> Command:
    return Command(CommandType.StartTimer, {"timer_id": timer_id, "start_to_fire_timeout_ms": ms})


def complete_wf(result: Any = "done") -> Command:
    return Command(CommandType.CompleteWorkflowExecution, {"result": result})


async def make_env(path: str | None, config: Config | None = None, clock: FakeClock | None = None,
                   matching: FakeMatching | None = None, identity: str = "h1") -> Env:
    store = SqliteStore(path)
    await store.open()
    vis = SqliteVisibilityStore(store)
    cfg = config or make_config()
    clk = clock or FakeClock()
    m = matching or FakeMatching()
    h = HistoryServiceImpl(store, vis, cfg, clock=clk, identity=identity)
    h.set_matching(m)
    await h.start()
    return Env(h, store, vis, m, clk, cfg)


async def close_env(env: Env) -> None:
    await env.history.stop()
    await env.store.close()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    e = await make_env(None)
    try:
        yield e
    finally:
        await close_env(e)
