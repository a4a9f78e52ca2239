"""The Worker against a small in-test WorkflowService."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from legato.api import (
    ActivityTask,
    PollRequest,
    RecordActivityHeartbeatRequest,
    RecordActivityHeartbeatResponse,
    RespondActivityTaskCompletedRequest,
    RespondActivityTaskFailedRequest,
    RespondWorkflowTaskCompletedRequest,
    RespondWorkflowTaskCompletedResponse,
    RespondWorkflowTaskFailedRequest,
    WorkflowTask,
)
from legato.config import Config
from legato.errors import NotFound, Unavailable
from tests.unit.worker.helpers import History, make_app, types
from worker.worker import Backoff, Worker, respond_with_retry


class FakeService:
    """Hands out queued tasks; records every respond call; can fail the first polls."""

    def __init__(self, fail_polls: int = 0) -> None:
        self.wf_tasks: asyncio.Queue[WorkflowTask] = asyncio.Queue()
        self.act_tasks: asyncio.Queue[ActivityTask] = asyncio.Queue()
        self.responses: asyncio.Queue[Any] = asyncio.Queue()
        self.polls: list[PollRequest] = []
        self.fail_polls = fail_polls
        self.heartbeats: list[RecordActivityHeartbeatRequest] = []

    async def poll_workflow_task(self, req: PollRequest) -> WorkflowTask | None:
        self.polls.append(req)
        if self.fail_polls > 0:
            self.fail_polls -= 1
            raise Unavailable("server gone")
        return await self.wf_tasks.get()

    async def poll_activity_task(self, req: PollRequest) -> ActivityTask | None:
        return await self.act_tasks.get()

    async def respond_workflow_task_completed(
            self, req: RespondWorkflowTaskCompletedRequest) -> RespondWorkflowTaskCompletedResponse:
        await self.responses.put(req)
        return RespondWorkflowTaskCompletedResponse()  # no eager activity: they come from act_tasks

    async def respond_workflow_task_failed(self, req: RespondWorkflowTaskFailedRequest) -> None:
        await self.responses.put(req)

    async def respond_activity_task_completed(self, req: RespondActivityTaskCompletedRequest) -> None:
        await self.responses.put(req)

    async def respond_activity_task_failed(self, req: RespondActivityTaskFailedRequest) -> None:
        await self.responses.put(req)

    async def record_activity_heartbeat(self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse:
        self.heartbeats.append(req)
        return RecordActivityHeartbeatResponse(cancel_requested=False)


def wf_task(h: History, token: bytes, prev: int = 0) -> WorkflowTask:
    return WorkflowTask(token, "default", "wf-1", "run-1", "app:w", "q", 1, h.started_id, prev, list(h.events))


def config() -> Config:
    c = Config()
    c.worker.workflow_pollers = 1
    c.worker.activity_pollers = 1
    return c


async def next_response(svc: FakeService) -> Any:
    return await asyncio.wait_for(svc.responses.get(), 10)


async def test_worker_runs_workflow_tasks_and_keeps_the_run_cached(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        return function(name)
            local r = funcs.call("app:greet", name)
            return r
        end
        """}, {"greet": 'return function(n) return "hello, " .. n end'})
    svc = FakeService()
    w = Worker(svc, reg, config(), identity="test-worker")  # type: ignore[arg-type]
    await w.start()
    try:
        h = History("app:w", ["Ada"])
        await svc.wf_tasks.put(wf_task(h, b"t1"))
        resp = await next_response(svc)
        assert isinstance(resp, RespondWorkflowTaskCompletedRequest)
        assert resp.task_token == b"t1" and resp.identity == "test-worker"
        assert types(resp.commands) == ["ScheduleActivityTask"]
        assert "run-1" in w.cache

        attrs = resp.commands[0].attrs
        await svc.act_tasks.put(ActivityTask(b"a1", "default", "wf-1", "run-1", "app:w", attrs["activity_id"],
                                             attrs["activity_type"], "q", attrs["input"], 1, 0, 0, 0))
        act = await next_response(svc)
        assert isinstance(act, RespondActivityTaskCompletedRequest) and act.result == "hello, Ada"

        prev = h.started_id
        h.complete_task(resp.commands).activity_completed("1", act.result).next_task()
        await svc.wf_tasks.put(wf_task(h, b"t2", prev))
        resp = await next_response(svc)
        assert types(resp.commands) == ["CompleteWorkflowExecution"]
        assert resp.commands[0].attrs["result"] == "hello, Ada"
        assert w.cache.hits == 1
        assert "run-1" not in w.cache  # closed runs leave the cache
        assert {p.task_queue for p in svc.polls} == {"q"}
    finally:
        await w.stop()


async def test_bad_workflow_task_fails_the_task_not_the_worker(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        return function(n)
            if n == "bad" then return os.time() end
            return 1
        end
        """})
    svc = FakeService()
    w = Worker(svc, reg, config())  # type: ignore[arg-type]
    await w.start()
    try:
        await svc.wf_tasks.put(wf_task(History("app:w", ["bad"]), b"bad"))
        resp = await next_response(svc)
        assert isinstance(resp, RespondWorkflowTaskFailedRequest)
        assert resp.cause == "FORBIDDEN_CALL" and "time.now()" in resp.failure.message
        assert "run-1" not in w.cache
        # unknown type
        h = History("app:unknown")
        t = wf_task(h, b"unknown")
        t.workflow_type = "app:unknown"
        await svc.wf_tasks.put(t)
        resp = await next_response(svc)
        assert isinstance(resp, RespondWorkflowTaskFailedRequest) and resp.failure.kind == "NotFound"
        # and it still works
        await svc.wf_tasks.put(wf_task(History("app:w", ["ok"]), b"ok"))
        resp = await next_response(svc)
        assert isinstance(resp, RespondWorkflowTaskCompletedRequest)
    finally:
        await w.stop()


async def test_poll_errors_back_off_and_recover(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": "return function() return 1 end"})
    svc = FakeService(fail_polls=2)
    w = Worker(svc, reg, config())  # type: ignore[arg-type]
    await w.start()
    try:
        await svc.wf_tasks.put(wf_task(History("app:w"), b"t"))
        resp = await next_response(svc)
        assert isinstance(resp, RespondWorkflowTaskCompletedRequest)
        assert svc.fail_polls == 0 and len(svc.polls) >= 3
    finally:
        await w.stop()


async def test_activity_failure_is_reported(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {}, {"boom": 'return function() error("kaput") end'})
    svc = FakeService()
    w = Worker(svc, reg, config())  # type: ignore[arg-type]
    async with w:
        await svc.act_tasks.put(ActivityTask(b"a", "default", "wf", "run", "app:w", "1", "app:boom", "q", [], 1, 0,
                                             0, 0))
        resp = await next_response(svc)
        assert isinstance(resp, RespondActivityTaskFailedRequest)
        assert resp.failure.kind == "Internal" and "kaput" in resp.failure.message and resp.failure.retryable


class FlakyResponses(FakeService):
    """Activity results find the server unavailable `fail` times (a history node restarting)."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail
        self.attempts = 0

    async def respond_activity_task_completed(self, req: RespondActivityTaskCompletedRequest) -> None:
        self.attempts += 1
        if self.attempts <= self.fail:
            raise Unavailable("cannot reach the Legato history service", reason="ServerUnreachable")
        await super().respond_activity_task_completed(req)


def _greet_task() -> ActivityTask:
    return ActivityTask(b"a", "default", "wf", "run", "app:w", "1", "app:greet", "q", ["Ada"], 1, 0, 0, 0)


async def test_a_response_is_sent_again_while_the_server_is_unavailable(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {}, {"greet": 'return function(n) return "hello, " .. n end'})
    svc = FlakyResponses(fail=3)
    async with Worker(svc, reg, config()):  # type: ignore[arg-type]
        await svc.act_tasks.put(_greet_task())
        resp = await next_response(svc)
    assert isinstance(resp, RespondActivityTaskCompletedRequest) and resp.result == "hello, Ada"
    assert svc.attempts == 4


async def test_a_response_is_given_up_after_the_retry_budget() -> None:
    attempts = 0

    async def unreachable() -> None:
        nonlocal attempts
        attempts += 1
        raise Unavailable("cannot reach the Legato history service", reason="ServerUnreachable")

    t0 = time.monotonic()
    with pytest.raises(Unavailable):
        await respond_with_retry(unreachable, 0.3, "test")
    assert attempts >= 2 and time.monotonic() - t0 <= 0.3 + 0.1  # never sleeps past the budget


async def test_only_unavailable_is_retried() -> None:
    attempts = 0

    async def stale() -> None:
        nonlocal attempts
        attempts += 1
        raise NotFound("activity 1 is no longer pending")

    with pytest.raises(NotFound):
        await respond_with_retry(stale, 10.0, "test")
    assert attempts == 1


async def test_stop_without_tasks_is_prompt(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": "return function() end"})
    w = Worker(FakeService(), reg, config())  # type: ignore[arg-type]
    await w.start()
    await asyncio.wait_for(w.stop(), 5)


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(initial=0.1, maximum=2.0)
    delays = [b.next_delay() for _ in range(10)]
    assert 0.05 <= delays[0] <= 0.1
    assert all(d <= 2.0 for d in delays) and delays[-1] >= 1.0
    b.reset()
    assert b.next_delay() <= 0.1


def test_log_throttle_allows_one_line_per_interval_and_counts_the_rest() -> None:
    from worker.worker import LogThrottle

    t = LogThrottle(interval_s=3600)
    assert t.allow() and t.suppressed_note() == ""
    assert not t.allow() and not t.allow()
    t.interval_s = 0  # the interval has passed
    assert t.allow()
    assert t.suppressed_note() == " (2 more such failures not logged)"
    assert t.suppressed_note() == ""
