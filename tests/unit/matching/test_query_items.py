"""Query tasks on the queues of a matching node (issue 14): handed to a workflow poll before any
task and without history's record, kept for their sticky worker, given back when the poll holding
one is cancelled, never parked or counted as backlog, failed when matching stops; and the
router's first-answer rule."""

from __future__ import annotations

import asyncio

import pytest

from legato import api
from legato.config import ConfigError, load_config
from legato.errors import DeadlineExceeded, Unavailable
from legato.routing import first_answer
from matching.queues import Key, QueryItem, Queued, TaskQueues

KEY: Key = ("default", "q", api.TaskKind.WORKFLOW)


def query(n: int, sticky: str | None = None) -> QueryItem:
    loop = asyncio.get_running_loop()
    task = api.WorkflowTask(f"q-{n}".encode(), "default", f"wf-{n}", f"run-{n}", "app:wf", "q", 0, 0, 0, [],
                            query=api.QueryTask(f"q-{n}", api.STACK_TRACE_QUERY))
    return QueryItem(task, loop.time(), sticky, loop.create_future())


async def record(task: api.TaskInfo, request_id: str) -> str:
    return f"task {task.workflow_id}"


def as_query(item: QueryItem) -> str:
    return f"query {item.workflow_task.workflow_id}"


def poll(identity: str, timeout_ms: int = 5000) -> api.PollRequest:
    return api.PollRequest(task_queue="q", identity=identity, timeout_ms=timeout_ms)


async def test_a_query_goes_before_the_tasks_and_a_sticky_one_to_its_worker_only() -> None:
    queues = TaskQueues(30_000)
    queues.offer(KEY, Queued(api.TaskInfo(api.TaskKind.WORKFLOW, "default", "q", "wf-0", "run-0", 1), 0.0))
    queues.offer_query(KEY, query(1, sticky="w1"))
    queues.offer_query(KEY, query(2))
    assert queues.backlog(KEY) == 1  # queries are not backlog
    assert await queues.poll(KEY, poll("w2"), record, as_query) == "query wf-2"
    assert await queues.poll(KEY, poll("w2"), record, as_query) == "task wf-0"  # wf-1 is held for w1
    assert await queues.poll(KEY, poll("w1"), record, as_query) == "query wf-1"
    assert queues.take_waiting_since(1e12) == []  # nothing to park


async def test_a_query_handed_to_a_cancelled_poll_goes_to_the_next_one() -> None:
    queues = TaskQueues(30_000)
    first = asyncio.ensure_future(queues.poll(KEY, poll("w1"), record, as_query))
    await asyncio.sleep(0)  # one turn of the loop: the poll runs up to its wait (nothing before it awaits)
    assert queues.pollers(KEY) == 1
    item = query(3)
    queues.offer_query(KEY, item)  # handed to the waiting poll at once ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await queues.poll(KEY, poll("w2"), record, as_query) == "query wf-3"


async def test_a_withdrawn_query_is_skipped_and_stop_fails_the_waiting_ones() -> None:
    queues = TaskQueues(30_000)
    gone = query(4)
    queues.offer_query(KEY, gone)
    gone.answer.cancel()  # its caller stopped waiting
    assert await queues.poll(KEY, poll("w1", timeout_ms=50), record, as_query) is None
    waiting = query(5, sticky="w9")
    queues.offer_query(KEY, waiting)
    queues.stop()
    with pytest.raises(Unavailable):
        await waiting.answer


async def test_the_first_answer_wins_and_the_others_are_cancelled() -> None:
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.Future()
        finally:
            cancelled.set()
        return "never"

    async def fails() -> str:
        raise Unavailable("node down", reason="ServerUnreachable")

    async def answers() -> str:
        return "answer"

    assert await first_answer([slow(), fails(), answers()]) == "answer"
    assert cancelled.is_set()

    async def late() -> str:
        raise DeadlineExceeded("no answer", reason="QueryTimeout")

    with pytest.raises(DeadlineExceeded):  # one node down, the other had no answer: a deadline
        await first_answer([fails(), late()])
    with pytest.raises(Unavailable):
        await first_answer([fails()])


def test_the_sticky_timeout_must_fit_in_the_query_timeout() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(env={"LEGATO_FRONTEND__QUERY_STICKY_TIMEOUT_MS": "5000",
                         "LEGATO_FRONTEND__QUERY_TIMEOUT_MS": "1000"})
    assert "query_sticky_timeout_ms" in str(e.value) and "query_timeout_ms" in str(e.value)
    cfg = load_config(env={"LEGATO_FRONTEND__QUERY_TIMEOUT_MS": "3000"}).frontend
    assert (cfg.query_sticky_timeout_ms, cfg.query_timeout_ms) == (1000, 3000)
