"""Fixtures for history tests: a controllable clock, a matching stand-in, and helpers that act as
a worker (record started, respond) so tests read like the protocol."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from history.queues import TimerTask, TransferTask
from history.service import HistoryServiceImpl
from history.state import MutableState
from history.store.base import ExecutionStore, HistoryAppend, ShardWrite
from history.store.factory import open_stores
from legato import codec
from legato.api import (
    ActivityTask,
    PollRequest,
    ProcessMessage,
    RespondWorkflowTaskCompletedRequest,
    StartWorkflowRequest,
    TaskInfo,
    TaskKind,
    VisibilityStore,
    WorkflowTask,
)
from legato.commands import Command, CommandType
from legato.config import Config
from legato.events import ATTRIBUTES, EventType, HistoryEvent
from tests.conftest import store_config_from_env

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
        self.mailboxes: set[str] = set()
        self.delivered: list[tuple[str, ProcessMessage]] = []
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

    async def deliver_message(self, pid: str, msg: ProcessMessage) -> bool:
        """Mailboxes of the pids in `mailboxes` (others have none: the caller is gone)."""
        if pid not in self.mailboxes:
            return False
        self.delivered.append((pid, msg))
        return True

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
    store: ExecutionStore
    visibility: VisibilityStore
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

    async def poll_wft(self, workflow_id: str, scheduled_event_id: int | None = None,
                       identity: str = "worker-1") -> WorkflowTask:
        """The workflow task, started for worker `identity` (the worker that completed the last
        task gets only the events after it: a sticky task)."""
        task = await self.wft_task(workflow_id, scheduled_event_id)
        return await self.history.record_workflow_task_started(task, f"req-{next(self.req_ids)}", identity)

    async def poll_act(self, workflow_id: str, scheduled_event_id: int, attempt: int = 1) -> ActivityTask:
        task = await self.act_task(workflow_id, scheduled_event_id, attempt)
        return await self.history.record_activity_task_started(task, f"req-{next(self.req_ids)}", "worker-1")

    async def complete(self, wt: WorkflowTask, *commands: Command) -> None:
        await self.history.respond_workflow_task_completed(
            RespondWorkflowTaskCompletedRequest(wt.task_token, list(commands), identity="worker-1"))

    async def events(self, workflow_id: str, run_id: str = "") -> list[tuple[int, EventType]]:
        return [(e.event_id, e.event_type) for e in await self.history_of(workflow_id, run_id)]

    async def types(self, workflow_id: str, run_id: str = "") -> list[EventType]:
        return [t for _, t in await self.events(workflow_id, run_id)]

    async def fire(self, advance_ms: int = 0) -> int:
        self.clock.advance(advance_ms)
        return await self.history.fire_due_timers()

    async def settle(self) -> None:
        """Wait until every transfer task (of every shard, including those the finished ones
        created) is done: cross-workflow effects have happened."""
        for _ in range(1000):
            await self.history.wait_transfer_idle()
            if all(self.history.shard(s).transfer.inflight == 0 for s in self.history.owned_shards()):
                return
        raise AssertionError("transfer tasks did not settle")

    async def transfer_tasks(self, kind: str) -> list[tuple[int, TransferTask]]:
        """The stored transfer tasks of `kind`, of every shard (none are acked in tests)."""
        out = []
        for sid in self.history.owned_shards():
            for row in await self.store.read_transfer_tasks(sid, 0, 100_000):
                data = codec.loads(row.data)
                if data["k"] == kind:
                    out.append((sid, TransferTask(row.task_id, data)))
        return out

    async def rerun(self, kind: str) -> int:
        """Run every stored transfer task of `kind` again; return how many."""
        tasks = await self.transfer_tasks(kind)
        for sid, t in tasks:
            await self.history.run_transfer_task(sid, t)
        await self.settle()
        return len(tasks)

    async def run_wf(self, workflow_id: str, *commands: Command) -> WorkflowTask:
        """Take the workflow's next task and complete it with `commands`."""
        wt = await self.poll_next(workflow_id)
        await self.complete(wt, *commands)
        return wt

    async def state(self, workflow_id: str, run_id: str = "") -> MutableState:
        """The run's committed mutable state, as stored."""
        sid = self.history.shard_for("default", workflow_id)
        if not run_id:
            cur = await self.store.get_current_run(sid, "default", workflow_id)
            assert cur is not None
            run_id = cur.run_id
        row = await self.store.get_run(sid, "default", workflow_id, run_id)
        assert row is not None
        return MutableState.decode(row.state)

    async def history_of(self, workflow_id: str, run_id: str = "") -> list[HistoryEvent]:
        from legato.api import ExecutionRef, GetHistoryRequest
        events = (await self.history.get_workflow_history(GetHistoryRequest(ExecutionRef(workflow_id, run_id)))).events
        for e in events:  # the contract with the worker: only the attribute keys legato.events lists
            extra = set(e.attrs) - set(ATTRIBUTES[e.event_type])
            assert not extra, f"event {e.event_id} {e.event_type.value} has unlisted attributes {sorted(extra)}"
        return events

    async def last(self, workflow_id: str, event_type: EventType, run_id: str = "") -> HistoryEvent:
        """The last event of that type in the run's history."""
        evs = [e for e in await self.history_of(workflow_id, run_id) if e.event_type == event_type]
        assert evs, f"{workflow_id} has no {event_type.value}: {await self.types(workflow_id, run_id)}"
        return evs[-1]

    async def poll_next(self, workflow_id: str, run_id: str = "") -> WorkflowTask:
        """Start the latest pending workflow task of the workflow's run (current run by default)."""
        from legato.api import ExecutionRef
        d = await self.history.describe_workflow(ExecutionRef(workflow_id, run_id))
        assert d.pending_workflow_task is not None, f"{workflow_id} has no pending workflow task"
        sched = d.pending_workflow_task.scheduled_event_id
        task = await self.matching.wait_for(
            lambda t: t.kind == TaskKind.WORKFLOW and t.run_id == d.info.run_id and t.scheduled_event_id == sched)
        return await self.history.record_workflow_task_started(task, f"req-{next(self.req_ids)}", "worker-1")


def child(seq: str, workflow_id: str, workflow_type: str = "app:child", input: Any = None,
          **options: Any) -> Command:
    return Command(CommandType.StartChildWorkflowExecution, {
        "seq": seq, "workflow_id": workflow_id, "workflow_type": workflow_type,
        "input": [] if input is None else input, "options": options})


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
    """A history service on the SQLite file `path` (None: in memory), or on the test keyspace of
    Cassandra when the test asked for it (the `history_store` fixture)."""
    cfg = config or make_config()
    cfg.store = store_config_from_env() or cfg.store
    stores = await open_stores(cfg, path)
    store, vis = stores.execution, stores.visibility
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
async def env(history_store: str) -> AsyncIterator[Env]:
    e = await make_env(None)
    try:
        yield e
    finally:
        await close_env(e)


class HeldCommits:
    """A shard's store with its commits held until `release` is set (install it with `hold`);
    `entered` is set when a commit arrives, `writes` lists the writes made."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.entered = asyncio.Event()
        self.release = asyncio.Event()
        self.writes: list[ShardWrite] = []

    async def commit(self, appends: Sequence[HistoryAppend], write: ShardWrite) -> None:
        self.entered.set()
        await self.release.wait()
        self.writes.append(write)
        await self._store.commit(appends, write)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    @classmethod
    def hold(cls, env: Env, shard_id: int = 0) -> HeldCommits:
        shard = env.history.shard(shard_id)
        held = cls(shard._store)
        shard._store = held
        return held



def count_in_flight(q: Any) -> list[int]:
    """Wrap a timer queue's fire callable (either kind): [in flight now, most ever in flight].
    Each fire yields once first, so fires started together are in flight together."""
    seen = [0, 0]
    fire: Callable[[TimerTask], Any] = q._fire

    async def counted(t: TimerTask) -> None:
        seen[0] += 1
        seen[1] = max(seen[1], seen[0])
        try:
            await asyncio.sleep(0)
            await fire(t)
        finally:
            seen[0] -= 1

    q._fire = counted
    return seen
