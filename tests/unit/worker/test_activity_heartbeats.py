"""Activities: heartbeats (details kept for the next attempt, throttling), cancellation reaching a
running activity, and context given to nested calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from legato.api import (
    ActivityTask,
    RecordActivityHeartbeatRequest,
    RecordActivityHeartbeatResponse,
    RespondActivityTaskCanceledRequest,
)
from legato.config import Config
from legato.errors import NotFound
from tests.unit.worker.helpers import make_app
from tests.unit.worker.test_worker import FakeService, config, next_response
from worker.activity import ActivityRunner, CallContext
from worker.worker import Worker

FUNCS = {
    "beats": """\
        return function(n)
            local first = activity.heartbeat_details()
            for i = 1, n do activity.heartbeat({i = i}) end
            return {first = first, last = activity.heartbeat_details(), info = activity.info().heartbeat_details}
        end
        """,
    "resume": """\
        return function()
            local from = (activity.heartbeat_details() or {i = 0}).i
            for i = from + 1, from + 3 do activity.heartbeat({i = i}) end
            error("crash after " .. (from + 3))
        end
        """,
    "long": """\
        return function()
            for i = 1, 1000 do activity.heartbeat(i) end
            return "finished"
        end
        """,
    "cleans_up": """\
        return function()
            local ok, err = pcall(activity.heartbeat, "x")
            return {ok = ok, kind = err:kind(), canceled = activity.is_canceled()}
        end
        """,
    "returns_cancel": """\
        return function()
            local ok, err = pcall(activity.heartbeat, "x")
            return nil, err
        end
        """,
    "slow_beats": """\
        return function()
            for i = 1, 3 do
                activity.heartbeat(i)
                time.sleep(3 * time.MILLISECOND)
            end
            return true
        end
        """,
    "ctx_outer": """\
        return function()
            local inner = funcs.new():with_context({extra = "e"}):call("app:ctx_inner")
            return {inner = inner, outer = ctx.all()}
        end
        """,
    "ctx_inner": "return function() return ctx.all() end",
}


class Beats:
    """A heartbeat function: records each call; cancels from call number `cancel_at` on."""

    def __init__(self, cancel_at: int = 0, raise_not_found: bool = False) -> None:
        self.calls: list[Any] = []
        self.cancel_at = cancel_at
        self.raise_not_found = raise_not_found

    def __call__(self, ctx: CallContext, details: Any) -> bool:
        self.calls.append(details)
        if self.raise_not_found:
            raise NotFound("the activity is no longer pending")
        return bool(self.cancel_at) and len(self.calls) >= self.cancel_at


def task(activity_type: str, details: Any = None, heartbeat_timeout_ms: int = 0, args: list[Any] | None = None,
         context: dict[str, Any] | None = None) -> ActivityTask:
    return ActivityTask(b"tok", "default", "wf", "run", "app:w", "1", activity_type, "q", args or [], 2, 0, 0, 0,
                        heartbeat_timeout_ms=heartbeat_timeout_ms, heartbeat_details=details, context=context or {})


def runner(tmp_path: Path, beats: Beats, throttle_ms: int = 0) -> ActivityRunner:
    return ActivityRunner(make_app(tmp_path, functions=FUNCS), beats, throttle_ms)


def test_heartbeat_details_start_from_the_previous_attempt(tmp_path: Path) -> None:
    beats = Beats()
    out = runner(tmp_path, beats).execute(task("app:beats", {"i": 7}, args=[3]))
    assert out.ok, out.failure
    assert out.result == {"first": {"i": 7}, "last": {"i": 3}, "info": {"i": 7}}
    assert beats.calls == [{"i": 1}, {"i": 2}, {"i": 3}]


def test_throttled_heartbeats_send_the_latest_details_before_a_failure(tmp_path: Path) -> None:
    beats = Beats()
    out = runner(tmp_path, beats, throttle_ms=60_000).execute(task("app:resume", {"i": 4}))
    assert not out.ok and out.failure is not None and "crash after 7" in out.failure.message
    # the first heartbeat goes out, the next two are throttled; the latest is flushed with the failure
    assert beats.calls == [{"i": 5}, {"i": 7}]


def test_heartbeat_timeout_bounds_the_throttle(tmp_path: Path) -> None:
    beats = Beats()
    # 80% of a 1 ms heartbeat timeout is less than the 3 ms the activity waits between heartbeats
    out = runner(tmp_path, beats, throttle_ms=60_000).execute(task("app:slow_beats", heartbeat_timeout_ms=1))
    assert out.ok and beats.calls == [1, 2, 3]


def test_cancellation_reaches_the_activity_and_is_reported_as_canceled(tmp_path: Path) -> None:
    beats = Beats(cancel_at=3)
    out = runner(tmp_path, beats).execute(task("app:long"))
    assert not out.ok and out.canceled
    assert out.failure is not None and out.failure.kind == "Canceled"
    assert beats.calls == [1, 2, 3]  # it stopped at the heartbeat that saw the request


def test_an_activity_may_catch_its_cancellation_and_complete(tmp_path: Path) -> None:
    out = runner(tmp_path, Beats(cancel_at=1)).execute(task("app:cleans_up"))
    assert out.ok and out.result == {"ok": False, "kind": "Canceled", "canceled": True}


def test_returning_the_cancel_error_is_canceled(tmp_path: Path) -> None:
    out = runner(tmp_path, Beats(cancel_at=1)).execute(task("app:returns_cancel"))
    assert not out.ok and out.canceled


def test_a_canceled_error_without_a_cancel_request_is_a_failure(tmp_path: Path) -> None:
    out = runner(tmp_path, Beats()).execute(task("app:returns_cancel"))
    assert out.ok  # no cancellation: the heartbeat did not raise, err is nil -> completed with nil
    out = ActivityRunner(make_app(tmp_path, functions={
        "own_cancel": 'return function() return nil, errors.new({message = "x", kind = errors.CANCELED}) end'}),
        Beats()).execute(task("app:own_cancel"))
    assert not out.ok and not out.canceled


def test_an_activity_that_is_no_longer_pending_is_canceled(tmp_path: Path) -> None:
    out = runner(tmp_path, Beats(raise_not_found=True)).execute(task("app:long"))
    assert out.canceled


def test_with_context_reaches_nested_calls(tmp_path: Path) -> None:
    out = runner(tmp_path, Beats()).execute(task("app:ctx_outer", context={"tenant": "t"}))
    assert out.ok and out.result == {"inner": {"tenant": "t", "extra": "e"}, "outer": {"tenant": "t"}}


class CancelingService(FakeService):
    def __init__(self) -> None:
        super().__init__()
        self.canceled: list[RespondActivityTaskCanceledRequest] = []

    async def record_activity_heartbeat(self, req: RecordActivityHeartbeatRequest) -> RecordActivityHeartbeatResponse:
        self.heartbeats.append(req)
        return RecordActivityHeartbeatResponse(cancel_requested=len(self.heartbeats) >= 2)

    async def respond_activity_task_canceled(self, req: RespondActivityTaskCanceledRequest) -> None:
        await self.responses.put(req)


async def test_worker_reports_a_canceled_activity(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {}, FUNCS)
    svc = CancelingService()
    cfg: Config = config()
    cfg.worker.heartbeat_throttle_ms = 0
    async with Worker(svc, reg, cfg):  # type: ignore[arg-type]
        await svc.act_tasks.put(task("app:long"))
        resp = await next_response(svc)
        assert isinstance(resp, RespondActivityTaskCanceledRequest) and resp.task_token == b"tok"
        assert [h.details for h in svc.heartbeats] == [1, 2]
