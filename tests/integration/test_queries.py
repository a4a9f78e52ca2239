"""Queries (issue 14): the Lua stack of a run, asked of the worker that has it cached, else of one
that replays its history, in the one-process engine with a real worker (reached directly and over
gRPC). The app: tests/apps/queries (two.lua: the main coroutine waits for the signal "go" at line
7, a spawned one on a channel at line 5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from legato import api
from legato.config import Config
from legato.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound
from legato.stack import workflow_stack
from tests.integration.engine_harness import APPS, engine_config, engine_with_worker
from worker.entries import Registry, load_registry
from worker.queries import stack_replay
from worker.worker import Worker

APP = APPS / "queries"
QUEUE = "qs"
FIRST = "query-worker-1"
STICKY_MS = 400


class Env:
    def __init__(self, service: api.WorkflowService, worker: Worker, registry: Registry, config: Config) -> None:
        self.service = service
        self.worker = worker
        self.registry = registry
        self.config = config
        self.workers: list[Worker] = []

    async def start(self, wid: str) -> None:
        await self.service.start_workflow(api.StartWorkflowRequest(wid, "qs:two", QUEUE))
        await self.idle(wid)

    async def history(self, wid: str) -> list[Any]:
        resp = await self.service.get_workflow_history(api.GetHistoryRequest(api.ExecutionRef(wid), page_size=1000))
        return resp.events

    async def idle(self, wid: str) -> None:
        """Until the run's code waits (no workflow task pending): long-polls on its history."""
        while True:
            events = await self.history(wid)
            if (await self.service.describe_workflow(api.ExecutionRef(wid))).pending_workflow_task is None and \
                    events[-1].event_type.value == "WorkflowTaskCompleted":
                return
            await self.service.get_workflow_history(api.GetHistoryRequest(
                api.ExecutionRef(wid), first_event_id=len(events) + 1, wait_new_event=True, timeout_ms=5000))

    async def stack(self, wid: str, **kw: Any) -> api.QueryWorkflowResponse:
        return await self.service.query_workflow(api.QueryWorkflowRequest(api.ExecutionRef(wid), **kw))

    async def new_worker(self, identity: str) -> Worker:
        w = Worker(self.service, self.registry, self.config, identity=identity)
        await w.start()
        self.workers.append(w)
        return w

    async def finish(self, wid: str) -> api.GetResultResponse:
        await self.service.signal_workflow(api.SignalWorkflowRequest(api.ExecutionRef(wid), "go", 1))
        return await self.service.get_workflow_result(api.GetResultRequest(api.ExecutionRef(wid), timeout_ms=10_000))


def query_config() -> Config:
    c = engine_config()
    c.frontend.query_sticky_timeout_ms = STICKY_MS
    c.frontend.query_timeout_ms = 2_000
    return c


@pytest.fixture(params=["in-process", "grpc", "in-process/inline"])
async def env(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Env]:
    """The worker reaches the engine directly or over gRPC; its workflow code runs in a Lua host
    process (the default) or, with /inline, on its event loop (worker.lua_isolation)."""
    via, _, isolation = str(request.param).partition("/")
    config = query_config()
    config.worker.lua_isolation = "inline" if isolation else "process"
    registry = load_registry(APP)
    async with engine_with_worker(config, registry, str(tmp_path / "db.sqlite"), via,
                                  FIRST) as (service, _, worker):
        e = Env(service, worker, registry, config)
        try:
            yield e
        finally:
            for w in e.workers:
                await w.stop()


def where(result: dict[str, Any]) -> list[tuple[int, bool, str, str, int]]:
    """Each coroutine: id, main, status and the file:line it waits at."""
    return [(c["id"], c["main"], c["status"], c["frames"][0]["source"], c["frames"][0]["line"])
            for c in result["coroutines"]]


WAITING = [(1, True, "suspended", "two.lua", 7), (2, False, "suspended", "two.lua", 5)]


async def test_the_sticky_worker_answers_from_its_cache_and_the_run_goes_on(env: Env) -> None:
    await env.start("q1")
    before = await env.history("q1")
    run_id = (await env.service.describe_workflow(api.ExecutionRef("q1"))).info.run_id
    hits = env.worker.cache.hits
    for _ in range(2):  # asked twice: the same answer, nothing changes
        resp = await env.stack("q1")
        assert (resp.source, resp.worker, resp.task_queue, resp.status) == (
            "worker-cache", FIRST, QUEUE, api.WorkflowStatus.RUNNING)
        assert resp.run_id == run_id and where(resp.result) == WAITING, resp.result
        assert resp.result["replayed_events"] == before[-2].event_id  # as of the last WorkflowTaskStarted
    after = await env.history("q1")
    assert [(e.event_id, e.event_type) for e in after] == [(e.event_id, e.event_type) for e in before]
    assert (await env.service.describe_workflow(api.ExecutionRef("q1"))).pending_workflow_task is None
    assert env.worker.cache.hits == hits  # a query is not a cache hit: it takes nothing out
    done = await env.finish("q1")
    assert (done.status, done.result) == (api.WorkflowStatus.COMPLETED, "done")
    assert env.worker.cache.hits == hits + 1  # the next workflow task continued the cached run


async def test_a_restarted_worker_replays_the_history(env: Env) -> None:
    await env.start("q2")
    before = len(await env.history("q2"))
    await env.worker.stop()
    # another worker: the sticky one (gone) does not answer within query_sticky_timeout_ms, then
    # the query goes to the task queue, where the new worker replays the history
    second = await env.new_worker("query-worker-2")
    resp = await env.stack("q2")
    assert (resp.source, resp.worker) == ("worker-replay", "query-worker-2") and where(resp.result) == WAITING
    assert resp.run_id not in second.cache  # the replay did not enter the cache
    await second.stop()
    # the sticky worker itself, restarted with an empty cache: it says so, and replays on the queue
    again = await env.new_worker(FIRST)
    resp = await env.stack("q2")
    assert (resp.source, resp.worker) == ("worker-replay", FIRST) and where(resp.result) == WAITING
    assert len(await env.history("q2")) == before
    done = await env.finish("q2")
    assert (done.status, done.result) == (api.WorkflowStatus.COMPLETED, "done")
    assert again.cache.misses >= 1  # its first workflow task of the run replayed it


async def test_a_closed_run_is_answered_by_replay(env: Env) -> None:
    await env.start("q3")
    await env.finish("q3")
    resp = await env.stack("q3")
    assert (resp.source, resp.status) == ("worker-replay", api.WorkflowStatus.COMPLETED)
    assert resp.result["coroutines"] == [] and "WorkflowExecutionCompleted" in resp.result["note"]
    report = await workflow_stack(env.service, api.ExecutionRef("q3"))
    assert report["status"] == "COMPLETED" and report["source"] == "worker-replay" and report["coroutines"] == []


async def test_no_worker_polling_is_a_deadline_naming_the_queue(env: Env) -> None:
    await env.start("q4")
    await env.worker.stop()
    with pytest.raises(DeadlineExceeded) as e:
        await env.stack("q4", timeout_ms=300)
    assert e.value.reason == "QueryTimeout" and "default/qs" in e.value.message and "300 ms" in e.value.message
    with pytest.raises(DeadlineExceeded) as e:
        await env.stack("q4")  # the configured frontend.query_timeout_ms
    assert "frontend.query_timeout_ms" in e.value.message and "2000 ms" in e.value.message
    # the stack of a caller that has the code: replayed by the caller itself
    report = await workflow_stack(env.service, api.ExecutionRef("q4"), stack_replay(str(APP)), timeout_ms=200)
    assert report["source"] == "frontend-replay" and where(report) == WAITING
    await env.new_worker("query-worker-3")
    assert (await env.finish("q4")).status is api.WorkflowStatus.COMPLETED


async def test_bad_queries_are_refused_with_the_field_named(env: Env) -> None:
    await env.start("q5")
    with pytest.raises(InvalidArgument) as e:
        await env.stack("q5", query_type="balance")
    assert e.value.reason == "UnknownQueryType" and "__stack_trace" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        await env.stack("q5", args="x" * (env.config.limits.max_payload_bytes + 1))
    assert "args" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        await env.stack("q5", timeout_ms=-1)
    assert "timeout_ms" in e.value.message
    with pytest.raises(NotFound):
        await env.stack("no-such-workflow")


async def test_an_answer_over_the_payload_limit_is_a_clear_failure(tmp_path: Path) -> None:
    config = query_config()
    config.limits.max_payload_bytes = 200  # a stack of two coroutines is 271 bytes of JSON
    registry = load_registry(APP)
    async with engine_with_worker(config, registry, str(tmp_path / "db.sqlite"), "in-process",
                                  FIRST) as (service, _, worker):
        e = Env(service, worker, registry, config)
        await e.start("big")
        with pytest.raises(FailedPrecondition) as err:
            await e.stack("big")
        assert err.value.reason == "QueryFailed" and "max_payload_bytes" in err.value.message, err.value.message
        await asyncio.wait_for(e.finish("big"), 10)
