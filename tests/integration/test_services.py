"""The services as separate processes (`legato server start --role ...`): frontend, history and
matching each in its own process, reaching each other over gRPC, tasks and timers on the real
Kafka broker (topics of each test's own), state in one SQLite file, and a worker process.

The kill tests SIGKILL matching, history or both in the middle of a run of workflows with durable
sleeps and restart them: every workflow completes, no step is recorded twice, no timer fires
before its due time or is lost, and the processes that lost a peer keep running.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from legato.api import ExecutionRef, ListWorkflowsRequest, StartWorkflowRequest, WorkflowStatus
from legato.cli.workflow_cmds import read_history, wait_result
from legato.client import GrpcClient
from legato.config import QueuesConfig
from legato.errors import Unavailable
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.integration.conftest import BASIC
from tests.integration.histories import assert_steps_recorded_once
from tests.integration.procs import Services, legato

pytestmark = pytest.mark.timeout(120)
T = TypeVar("T")

# Short timeouts, so that tasks lost with a killed process come back quickly.
FAST = {"history": {"workflow_task_timeout_ms": 2000, "workflow_task_retry_initial_ms": 100}}
WORKFLOWS = 16
STEPS = 6
SLEEP_MS = 500
EXPECTED = {"total": sum(10 * i for i in range(1, STEPS + 1)), "n": STEPS, "ids": STEPS}


@pytest.fixture
def services(tmp_path: Path, kafka_queues: QueuesConfig) -> Iterator[Services]:
    """The three roles and a worker, started, on topics of this test's own."""
    s = Services(tmp_path, BASIC, kafka_queues.model_dump(mode="json"), FAST)
    try:
        s.start()
        s.start_worker()
        yield s
    finally:
        s.stop()


# ---------------------------------------------------------------------- the roles, one process each

async def test_three_role_processes_run_the_basic_app(services: Services) -> None:
    async with GrpcClient(services.address) as c:
        for wid, wf_type, args in (("hello", "basic:hello", ["Ada"]), ("steps", "basic:steps", [{"n": 3}]),
                                   ("fails", "basic:fails", [])):
            await c.start_workflow(StartWorkflowRequest(wid, wf_type, "basic", args, request_id=wid))
        hello = await wait_result(c, ExecutionRef("hello"), timeout_ms=30_000)
        steps = await wait_result(c, ExecutionRef("steps"), timeout_ms=30_000)
        fails = await wait_result(c, ExecutionRef("fails"), timeout_ms=30_000)
        assert (hello.status, hello.result) == (WorkflowStatus.COMPLETED, {"greeting": "hello, Ada"})
        assert (steps.status, steps.result) == (WorkflowStatus.COMPLETED, {"total": 60, "n": 3, "ids": 3})
        assert fails.status == WorkflowStatus.FAILED
        # the frontend's own view of the history's visibility records
        listed = await _eventually_listed(c, {"hello", "steps", "fails"})
    assert listed == {"hello", "steps", "fails"}


async def _eventually_listed(c: GrpcClient, ids: set[str]) -> set[str]:
    """Visibility is written after the close: list until every id shows up as closed (or 10 s)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        page = await c.list_workflows(ListWorkflowsRequest(query="ExecutionStatus IN ('Completed', 'Failed')"))
        found = {w.workflow_id for w in page.executions} & ids
        if found == ids or loop.time() > deadline:
            return found
        await asyncio.sleep(0.1)  # polling a condition, with the deadline above as safety net


def test_history_apart_from_matching_refuses_the_in_process_bus(tmp_path: Path) -> None:
    p = legato("server", "start", "--role", "history,frontend", "--db", str(tmp_path / "x.db"), timeout=60)
    assert p.returncode != 0
    assert "queues.kind: kafka" in p.stderr and "legato kafka setup" in p.stderr, p.stderr


def test_unknown_role_is_refused() -> None:
    p = legato("server", "start", "--role", "history,scheduler", timeout=60)
    assert p.returncode != 0
    assert "unknown: scheduler" in p.stderr, p.stderr


# ---------------------------------------------------------------------- SIGKILL and restart

@pytest.mark.parametrize("victims", [("matching",), ("history",), ("history", "matching")],
                         ids=["matching", "history", "both"])
async def test_kill_and_restart_mid_run(services: Services, victims: tuple[str, ...]) -> None:
    ids = await start_workflows(services.address)
    rnd = random.Random("-".join(victims))
    async with GrpcClient(services.address) as c:
        for _ in range(2):
            await asyncio.sleep(rnd.uniform(0.3, 1.0))  # fault injection at an arbitrary moment, not synchronisation
            # The kill must hit workflows in the middle of their run, or this proves nothing.
            assert await when_served(lambda: count_running(c, ids)) > 0
            services.kill(*victims)
            survivors = {name: up for name, up in services.alive().items() if name not in victims}
            assert all(survivors.values()), f"a process died with its peer: {survivors}"
            await asyncio.to_thread(services.start, *victims)
        histories = await when_served(lambda: collect(c, ids))
    assert all(services.alive().values()), services.alive()
    for wid, events in histories.items():
        assert_steps_recorded_once(events)
        assert_timers_fired_once_on_time(events, wid)


async def start_workflows(address: str) -> list[str]:
    ids = [f"svc-{i}" for i in range(WORKFLOWS)]
    async with GrpcClient(address) as c:
        for wid in ids:
            await c.start_workflow(StartWorkflowRequest(
                wid, "basic:steps", "basic", [{"n": STEPS, "sleep": f"{SLEEP_MS}ms"}], request_id=wid))
    return ids


async def when_served(call: Callable[[], Awaitable[T]], timeout_s: float = 15.0) -> T:
    """`call()` once the frontend reaches the restarted services again (its channels reconnect
    within about a second): Unavailable is retried until `timeout_s`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await call()
        except Unavailable:
            if loop.time() > deadline:
                raise
        await asyncio.sleep(0.1)  # retrying a call, with the deadline above as safety net


async def count_running(c: GrpcClient, ids: list[str]) -> int:
    return sum([(await c.describe_workflow(ExecutionRef(w))).info.status == WorkflowStatus.RUNNING for w in ids])


async def collect(c: GrpcClient, ids: list[str]) -> dict[str, list[HistoryEvent]]:
    """Each workflow's history once it completed with the expected result."""
    out = {}
    for wid in ids:
        r = await wait_result(c, ExecutionRef(wid), timeout_ms=60_000)
        assert (r.status, r.result) == (WorkflowStatus.COMPLETED, EXPECTED), (wid, r)
        out[wid] = await read_history(c, ExecutionRef(wid))
    return out


def assert_timers_fired_once_on_time(events: list[HistoryEvent], wid: str) -> None:
    """Every durable sleep started fired (none lost), and none before its due time."""
    started = {e.attrs["timer_id"]: e for e in events if e.event_type == E.TimerStarted}
    fired = {e.attrs["timer_id"]: e for e in events if e.event_type == E.TimerFired}
    assert len(started) == STEPS and set(fired) == set(started), (wid, sorted(started), sorted(fired))
    for timer_id, f in fired.items():
        s = started[timer_id]
        due = s.timestamp_ms + s.attrs["start_to_fire_timeout_ms"]
        assert f.timestamp_ms >= due, f"{wid}: timer {timer_id} fired {due - f.timestamp_ms} ms early"
