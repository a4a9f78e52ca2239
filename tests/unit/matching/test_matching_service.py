"""InProcessMatching: dispatch order, long polls, stale/transient/cancelled handouts, isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from legato import api
from legato.config import Config, MatchingConfig
from legato.errors import FailedPrecondition, NotFound, Unavailable
from matching.service import InProcessMatching
from tests.unit.matching.fakes import FakeHistory, raiser

WF = api.TaskKind.WORKFLOW
ACT = api.TaskKind.ACTIVITY


def task(n: int, queue: str = "q", kind: api.TaskKind = WF, namespace: str = "default") -> api.TaskInfo:
    return api.TaskInfo(kind, namespace, queue, f"wf-{n}", f"run-{n}", scheduled_event_id=n)


@pytest.fixture
def history() -> FakeHistory:
    return FakeHistory()


@pytest.fixture
async def matching(history: FakeHistory) -> Any:
    m = InProcessMatching(history, Config())  # type: ignore[arg-type]
    yield m
    await m.stop()


async def started(coro: Any) -> asyncio.Task[Any]:
    """Start a coroutine as a task and let it run up to its first wait (one loop turn, no timer)."""
    t = asyncio.ensure_future(coro)
    await asyncio.sleep(0)
    return t


def poll(queue: str = "q", timeout_ms: int = 0, identity: str = "w1") -> api.PollRequest:
    return api.PollRequest(task_queue=queue, identity=identity, timeout_ms=timeout_ms)


async def test_tasks_are_handed_out_in_fifo_order(matching: InProcessMatching, history: FakeHistory) -> None:
    adds = [await started(matching.add_task(task(n))) for n in range(5)]
    assert matching.backlog("default", "q", WF) == 5
    got = [await matching.poll_workflow_task(poll()) for _ in range(5)]
    assert [t.workflow_id for t in got if t] == [f"wf-{n}" for n in range(5)]
    await asyncio.gather(*adds)  # each add_task returned once its task was recorded started
    assert [c[1] for c in history.calls] == [f"wf-{n}" for n in range(5)]
    assert history.calls[0] == ("workflow", "wf-0", "w1")


async def test_waiting_pollers_are_served_in_arrival_order(matching: InProcessMatching) -> None:
    polls = [await started(matching.poll_workflow_task(poll(identity=f"w{i}"))) for i in range(3)]
    assert matching.pollers("default", "q", WF) == 3
    for n in range(3):
        await matching.add_task(task(n))
    results = [await p for p in polls]
    assert [r.workflow_id for r in results if r] == ["wf-0", "wf-1", "wf-2"]


async def test_workflow_and_activity_queues_are_separate(matching: InProcessMatching) -> None:
    add_act = await started(matching.add_task(task(1, kind=ACT)))
    assert await matching.poll_workflow_task(poll(timeout_ms=1)) is None
    got = await matching.poll_activity_task(poll())
    assert isinstance(got, api.ActivityTask) and got.workflow_id == "wf-1"
    await add_act


async def test_long_poll_times_out_with_none(history: FakeHistory) -> None:
    m = InProcessMatching(history, Config(matching=MatchingConfig(long_poll_timeout_ms=30)))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await m.poll_workflow_task(poll()) is None  # the server's timeout
    assert loop.time() - t0 >= 0.025
    assert m.pollers("default", "q", WF) == 0  # the expired waiter is gone
    await m.stop()


async def test_request_timeout_shorter_than_server_timeout_wins(matching: InProcessMatching) -> None:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await matching.poll_activity_task(poll(timeout_ms=20)) is None
    assert loop.time() - t0 < 5  # not the 30 s server default


@pytest.mark.parametrize("error", [FailedPrecondition("task already started"), NotFound("run is gone")])
async def test_stale_task_is_dropped_and_add_task_returns(
        matching: InProcessMatching, history: FakeHistory, error: Exception) -> None:
    history.behaviour["wf-1"] = raiser(error)
    add_stale = await started(matching.add_task(task(1)))
    add_good = await started(matching.add_task(task(2)))
    got = await matching.poll_workflow_task(poll())
    assert got is not None and got.workflow_id == "wf-2"  # the poll skipped the stale one
    await add_stale  # returned without error: history may acknowledge the outbox row
    await add_good
    assert matching.backlog("default", "q", WF) == 0


async def test_transient_failure_puts_the_task_back(matching: InProcessMatching, history: FakeHistory) -> None:
    history.behaviour["wf-1"] = raiser(Unavailable("shard is moving"))
    add1 = await started(matching.add_task(task(1)))
    add2 = await started(matching.add_task(task(2)))
    with pytest.raises(Unavailable, match="shard is moving"):
        await matching.poll_workflow_task(poll())
    assert not add1.done()  # not handed over: history must not ack it
    assert matching.backlog("default", "q", WF) == 2
    got = await matching.poll_workflow_task(poll())
    assert got is not None and got.workflow_id == "wf-1"  # back at the front, order kept
    await add1
    got = await matching.poll_workflow_task(poll())
    assert got is not None and got.workflow_id == "wf-2"
    await add2


async def test_unexpected_error_also_puts_the_task_back(matching: InProcessMatching, history: FakeHistory) -> None:
    history.behaviour["wf-1"] = raiser(RuntimeError("database is locked"))
    add1 = await started(matching.add_task(task(1)))
    with pytest.raises(RuntimeError):
        await matching.poll_workflow_task(poll())
    assert matching.backlog("default", "q", WF) == 1
    assert (await matching.poll_workflow_task(poll())) is not None
    await add1


async def test_poll_cancelled_while_recording_puts_the_task_back(
        matching: InProcessMatching, history: FakeHistory) -> None:
    recording = asyncio.Event()

    async def hang() -> None:
        recording.set()
        await asyncio.Future()  # until cancelled

    history.behaviour["wf-1"] = hang
    add1 = await started(matching.add_task(task(1)))
    add2 = await started(matching.add_task(task(2)))
    p = asyncio.ensure_future(matching.poll_workflow_task(poll()))
    await recording.wait()
    p.cancel()
    with pytest.raises(asyncio.CancelledError):
        await p
    assert not add1.done()
    got = [await matching.poll_workflow_task(poll()) for _ in range(2)]
    assert [t.workflow_id for t in got if t] == ["wf-1", "wf-2"]  # front of the queue
    await asyncio.gather(add1, add2)


async def test_poll_cancelled_just_after_a_task_was_handed_to_it(matching: InProcessMatching) -> None:
    p = await started(matching.poll_workflow_task(poll()))
    add1 = await started(matching.add_task(task(1)))  # resolves the poller's future ...
    p.cancel()  # ... but the poller is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await p
    assert matching.backlog("default", "q", WF) == 1
    got = await matching.poll_workflow_task(poll())
    assert got is not None and got.workflow_id == "wf-1"
    await add1


async def test_cancelled_waiting_poll_leaves_no_waiter(matching: InProcessMatching) -> None:
    p = await started(matching.poll_workflow_task(poll()))
    p.cancel()
    with pytest.raises(asyncio.CancelledError):
        await p
    assert matching.pollers("default", "q", WF) == 0
    add1 = await started(matching.add_task(task(1)))
    assert matching.backlog("default", "q", WF) == 1  # not swallowed by the dead poller
    assert await matching.poll_workflow_task(poll()) is not None
    await add1


async def test_unpolled_queue_keeps_its_tasks_and_blocks_nothing(matching: InProcessMatching) -> None:
    idle = [await started(matching.add_task(task(n, queue="idle"))) for n in range(3)]
    busy = await started(matching.add_task(task(9, queue="busy")))
    got = await matching.poll_workflow_task(poll(queue="busy"))
    assert got is not None and got.workflow_id == "wf-9"
    await busy
    assert matching.backlog("default", "idle", WF) == 3
    assert not any(t.done() for t in idle)
    # Namespaces are separate queues too.
    assert await matching.poll_workflow_task(api.PollRequest("idle", namespace="other", timeout_ms=1)) is None
    got = await matching.poll_workflow_task(poll(queue="idle"))
    assert got is not None and got.workflow_id == "wf-0"


async def test_cancelled_add_task_is_not_handed_out(matching: InProcessMatching, history: FakeHistory) -> None:
    add1 = await started(matching.add_task(task(1)))
    add2 = await started(matching.add_task(task(2)))
    add1.cancel()
    with pytest.raises(asyncio.CancelledError):
        await add1
    got = await matching.poll_workflow_task(poll())
    assert got is not None and got.workflow_id == "wf-2"
    await add2
    assert [c[1] for c in history.calls] == ["wf-2"]


async def test_stop_ends_waiting_polls_and_add_tasks(history: FakeHistory) -> None:
    m = InProcessMatching(history, Config())  # type: ignore[arg-type]
    p = await started(m.poll_workflow_task(poll()))
    add = await started(m.add_task(task(1, queue="other")))
    await m.stop()
    assert await p is None
    with pytest.raises(Unavailable):
        await add  # not handed over: history keeps the outbox row
    with pytest.raises(Unavailable):
        await m.add_task(task(2))
    with pytest.raises(Unavailable):
        await m.poll_workflow_task(poll())


async def test_many_tasks_many_pollers_each_delivered_once(matching: InProcessMatching) -> None:
    n = 3000
    seen: list[str] = []

    async def worker(kind: api.TaskKind) -> None:
        while len(seen) < n:
            if kind == WF:
                t: Any = await matching.poll_workflow_task(poll(timeout_ms=200))
            else:
                t = await matching.poll_activity_task(poll(timeout_ms=200))
            if t is not None:
                seen.append(t.workflow_id)

    workers = [asyncio.ensure_future(worker(WF if i % 2 else ACT)) for i in range(8)]
    await asyncio.gather(*(matching.add_task(task(i, kind=WF if i % 2 else ACT)) for i in range(n)))
    assert sorted(seen) == sorted(f"wf-{i}" for i in range(n))
    await asyncio.gather(*workers)


@pytest.mark.parametrize("kind", [WF, ACT])
async def test_a_task_put_back_is_recorded_again_with_the_same_request_id(
        matching: InProcessMatching, history: FakeHistory, kind: api.TaskKind) -> None:
    """History may have applied a record whose reply was lost; asked again with the same request
    id it hands the task over again (a new id would be "already started by another poller", and
    the task would wait for its timeout)."""
    poll_fn = matching.poll_workflow_task if kind == WF else matching.poll_activity_task
    add1 = await started(matching.add_task(task(1, kind=kind)))
    history.behaviour["wf-1"] = raiser(Unavailable("reply lost"))
    with pytest.raises(Unavailable):
        await poll_fn(poll())
    got = await poll_fn(poll(identity="w2"))
    assert got is not None and got.workflow_id == "wf-1"
    await add1
    add2 = await started(matching.add_task(task(2, kind=kind)))
    await poll_fn(poll())
    await add2
    assert history.request_ids[0] == history.request_ids[1] != history.request_ids[2]
