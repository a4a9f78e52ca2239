"""The Lua API of issue 2, end to end through the real engine and worker (see test_engine.py):
activity retries and timeouts, failed workflows and failing workflow tasks, replay of recorded
histories, and limits.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from legato.api import ExecutionRef, SignalWorkflowRequest, StartWorkflowRequest, WorkflowStatus
from legato.errors import InvalidArgument, NotFound, ResourceExhausted
from legato.events import EventType as E
from legato.events import HistoryEvent
from tests.integration.engine_harness import ENGINE_APP, TASK_QUEUE, Harness, engine_config, of_type, types
from worker.entries import load_registry
from worker.replay import replay
from worker.runtime import TaskFailure

pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness(tmp_path) as harness:
        yield harness


async def call(h: Harness, activity: str, *args: Any, **options: Any) -> tuple[dict[str, Any], list[HistoryEvent]]:
    """Run eng:call (activity under options); its report and its history."""
    spec: dict[str, Any] = {"activity": activity, "args": list(args)}
    if options:
        spec["options"] = {f"activity.{k}": v for k, v in options.items()}
    wid = await h.start_workflow("eng:call", spec)
    out = await h.value(wid)
    return out, await h.history(wid)


def last_attempt(events: list[HistoryEvent]) -> int:
    started = of_type(events, E.ActivityTaskStarted)
    assert len(started) == 1, types(events)  # written once, when the activity closed
    return int(started[0].attrs["attempt"])


# ---------------------------------------------------------------- activity retries

async def test_retry_until_success_shows_the_attempt(h: Harness) -> None:
    out, events = await call(h, "eng:flaky", 3, retry_policy={"initial_interval": "10ms", "maximum_attempts": 5})
    assert out["ok"] and out["value"]["attempt"] == 3
    assert last_attempt(events) == 3
    started = of_type(events, E.ActivityTaskStarted)[0]
    assert "flaky attempt 2" in started.attrs["last_failure"]["message"]
    assert len(of_type(events, E.ActivityTaskScheduled)) == 1  # retries do not touch the history


async def test_retries_stop_at_maximum_attempts(h: Harness) -> None:
    out, events = await call(h, "eng:flaky", 10, retry_policy={"initial_interval": "10ms", "maximum_attempts": 2})
    assert not out["ok"]
    err = out["error"]
    assert err["kind"] == "Internal" and "flaky attempt 2" in err["message"], err
    assert last_attempt(events) == 2
    assert of_type(events, E.ActivityTaskFailed)


async def test_non_retryable_error_types_stop_retries(h: Harness) -> None:
    policy = {"initial_interval": "10ms", "maximum_attempts": 3, "non_retryable_error_types": ["INVALID"]}
    out, events = await call(h, "eng:raise_kind", "Invalid", retry_policy=policy)
    assert out["error"]["kind"] == "Invalid" and out["error"]["message"] == "raised Invalid on attempt 1"
    assert out["error"]["text"] == "Invalid: raised Invalid on attempt 1"  # tostring(err)
    assert last_attempt(events) == 1
    # the same policy retries a kind it does not name
    out, events = await call(h, "eng:raise_kind", "Conflict", retry_policy=policy)
    assert out["error"]["kind"] == "Conflict" and out["error"]["message"] == "raised Conflict on attempt 3"
    assert last_attempt(events) == 3


async def test_retry_backoff_is_a_durable_timer(h: Harness) -> None:
    assert h.spy is not None
    wid = await h.start_workflow("eng:call", {"activity": "eng:flaky", "args": [2], "options": {
        "activity.retry_policy": {"initial_interval": "700ms", "maximum_attempts": 3}}})
    await h.spy.wait_call("respond_activity_task_failed", lambda c: c.error is None)
    d = await h.describe(wid)
    assert [(a.state, a.attempt) for a in d.pending_activities] == [("BACKOFF", 2)]
    await h.restart()  # the backoff survives: it is a timer task in the database
    out = await h.value(wid)
    assert out["ok"] and out["value"]["attempt"] == 2
    started = of_type(await h.history(wid), E.ActivityTaskStarted)[0]
    m = re.search(r"flaky attempt 1 at (\d+)", started.attrs["last_failure"]["message"])
    assert m, started.attrs
    assert out["value"]["at"] - int(m.group(1)) >= 700


# ---------------------------------------------------------------- activity timeouts

async def test_start_to_close_timeout(h: Harness) -> None:
    # sleeps far past the timeout (the worker cuts it at the deadline and a grace): a timer that
    # fires late on a loaded machine still comes before the attempt's end
    out, events = await call(h, "eng:sleep", 5000, start_to_close_timeout="150ms",
                             retry_policy={"maximum_attempts": 1})
    assert out["error"]["kind"] == "Timeout", out
    assert "start-to-close" in out["error"]["message"]
    timed_out = of_type(events, E.ActivityTaskTimedOut)
    assert [e.attrs["timeout_type"] for e in timed_out] == ["START_TO_CLOSE"]


async def test_schedule_to_close_timeout_covers_all_attempts(h: Harness) -> None:
    # attempt 1 fails at once, attempt 2 sleeps past the deadline of the whole activity
    out, events = await call(h, "eng:sleep", 5000, 2, schedule_to_close_timeout="400ms",
                             retry_policy={"initial_interval": "10ms"})
    assert out["error"]["kind"] == "Timeout", out
    assert "schedule-to-close" in out["error"]["message"]
    assert [e.attrs["timeout_type"] for e in of_type(events, E.ActivityTaskTimedOut)] == ["SCHEDULE_TO_CLOSE"]
    assert last_attempt(events) == 2


async def test_schedule_to_start_timeout(h: Harness) -> None:
    # no worker polls the task queue "nobody": the activity never starts
    out, events = await call(h, "eng:echo", 1, task_queue="nobody", schedule_to_start_timeout="150ms",
                             retry_policy={"maximum_attempts": 1})
    assert out["error"]["kind"] == "Timeout", out
    assert [e.attrs["timeout_type"] for e in of_type(events, E.ActivityTaskTimedOut)] == ["SCHEDULE_TO_START"]
    assert of_type(events, E.ActivityTaskScheduled)[0].attrs["task_queue"] == "nobody"


async def test_heartbeat_timeout(h: Harness) -> None:
    # sleeps far past the heartbeat timeout: the outcome does not depend on how late the timer fires
    out, events = await call(h, "eng:sleep", 5000, heartbeat_timeout="150ms", retry_policy={"maximum_attempts": 1})
    assert out["error"]["kind"] == "Timeout", out
    assert [e.attrs["timeout_type"] for e in of_type(events, E.ActivityTaskTimedOut)] == ["HEARTBEAT"]
    # an activity that heartbeats keeps going past the heartbeat timeout
    out, events = await call(h, "eng:heartbeating", 700, 20, heartbeat_timeout="350ms",
                             retry_policy={"maximum_attempts": 1})
    assert out["ok"] and out["value"] >= 10, out
    assert last_attempt(events) == 1


async def test_missing_activity_is_not_found_and_retryable(h: Harness) -> None:
    """As Wippy and Temporal: it may be registered later, so it is retried by the policy, and the
    error says retryable even when the policy allowed a single attempt."""
    out, events = await call(h, "eng:no_such_activity", retry_policy={"maximum_attempts": 2,
                                                                      "initial_interval": "10ms"})
    assert out["error"]["kind"] == "NotFound" and out["error"]["retryable"] is True
    assert last_attempt(events) == 2
    out, _ = await call(h, "eng:no_such_activity", retry_policy={"maximum_attempts": 1})
    assert out["error"]["kind"] == "NotFound" and out["error"]["retryable"] is True


# ---------------------------------------------------------------- failing workflows

async def test_return_nil_err_fails_the_workflow(h: Harness) -> None:
    wid = await h.start_workflow("eng:fail_error", {"order": "7"})
    r = await h.result(wid)
    assert r.status == WorkflowStatus.FAILED
    assert r.failure is not None and (r.failure.kind, r.failure.message) == ("Invalid", "order 7 is refused")
    assert types(await h.history(wid))[-1] == "WorkflowExecutionFailed"

    wid = await h.start_workflow("eng:fail_string")
    r = await h.result(wid)
    assert r.status == WorkflowStatus.FAILED
    assert r.failure is not None and r.failure.message == "plain text failure"
    assert (await h.describe(wid)).failure == r.failure


BUGGY = """\
local funcs = require("funcs")
local function main(input)
    local greeting = funcs.call("fix:echo", input)
    local t = nil
    return greeting .. t.field
end
return main
"""
FIXED = BUGGY.replace("t.field", '" (fixed)"')
FIX_APP = """\
version: "1.0"
namespace: fix
entries:
  - {name: w, kind: temporal.worker, task_queue: eng}
  - {name: flow, kind: workflow.lua, source: file://flow.lua, modules: [funcs],
     meta: {temporal: {workflow: {worker: fix:w}}}}
  - {name: echo, kind: function.lua, source: file://echo.lua, meta: {temporal: {activity: {worker: fix:w}}}}
"""


async def test_lua_error_fails_the_task_and_fixed_code_completes_the_workflow(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "app.yaml").write_text(FIX_APP)
    (app / "echo.lua").write_text("return function(v) return v end\n")
    (app / "flow.lua").write_text(BUGGY)
    async with Harness(tmp_path, app) as h:
        wid = await h.start_workflow("fix:flow", "hello")
        failed = await h.wait_type(wid, E.WorkflowTaskFailed)
        assert failed.attrs["cause"] == "WORKFLOW_ERROR"
        d = await h.describe(wid)
        assert d.info.status == WorkflowStatus.RUNNING
        f = d.last_workflow_task_failure
        assert f is not None and f.source == "flow.lua:5", f
        assert f.kind == "Internal" and "attempt to index a nil value" in f.message
        assert str(f).startswith("Internal: flow.lua:5: attempt to index a nil value") and "(at " not in str(f)
        assert len(of_type(await h.history(wid), E.ActivityTaskCompleted)) == 1  # the work before the bug is kept

        await h.stop_worker()
        (app / "flow.lua").write_text(FIXED)
        await h.start_worker(load_registry(app))
        assert await h.value(wid) == "hello (fixed)"
        d = await h.describe(wid)
        assert d.last_workflow_task_failure is None and d.info.status == WorkflowStatus.COMPLETED
        events = await h.history(wid)
        assert len(of_type(events, E.ActivityTaskScheduled)) == 1  # replayed, not run again
        # the recorded history, failed tasks included, replays with the fixed code
        assert of_type(events, E.WorkflowTaskFailed)
        assert replay(load_registry(app), events) == []


# ---------------------------------------------------------------- replay of recorded histories

def swap_calls(src: Path, dst: Path) -> None:
    """A copy of the app whose eng:two_calls calls its two activities the other way round."""
    shutil.copytree(src, dst)
    code = (dst / "call.lua").read_text()
    a = '    local a = funcs.call("eng:echo", input.a)\n'
    b = '    local b = funcs.call("eng:upper", input.b)\n'
    assert a + b in code
    (dst / "call.lua").write_text(code.replace(a + b, b + a))


async def test_recorded_histories_replay_and_changed_code_is_caught(h: Harness, tmp_path: Path) -> None:
    runs = {
        "two_calls": await h.start_workflow("eng:two_calls", {"a": "x", "b": "y"}),
        "pool": await h.start_workflow("eng:pool", {"workers": 2, "jobs": 5}),
        "sleepy": await h.start_workflow("eng:sleepy"),
        "retry": await h.start_workflow("eng:call", {"activity": "eng:flaky", "args": [2], "options": {
            "activity.retry_policy": {"initial_interval": "10ms"}}}),
        "signals": await h.start_workflow("eng:before_listen", {"n": 2}),
        "stop_timer": await h.start_workflow("eng:stop_timer"),
    }
    for i in (1, 2):
        await h.signal(runs["signals"], "item", i)
    await h.signal(runs["signals"], "gate")
    histories = {}
    for name, wid in runs.items():
        await h.value(wid)
        histories[name] = await h.history(wid)

    registry = load_registry(ENGINE_APP)
    for name, events in histories.items():
        assert replay(registry, events) == [], name
        # a history cut after any completed task replays too, and gives the next task's commands
        cut = max(e.event_id for e in events if e.event_type is E.WorkflowTaskStarted)
        commands = replay(registry, events[:cut])
        assert [c.command_type.value for c in commands][-1:] == ["CompleteWorkflowExecution"], name

    swapped = tmp_path / "swapped"
    swap_calls(ENGINE_APP, swapped)
    with pytest.raises(TaskFailure) as exc:
        replay(load_registry(swapped), histories["two_calls"])
    f = exc.value
    assert f.cause == "NON_DETERMINISTIC"
    assert "event 5 ActivityTaskScheduled(activity_type=eng:echo)" in f.failure.message
    assert "ScheduleActivityTask(activity_type=eng:upper)" in f.failure.message
    assert f.failure.source == "call.lua:18"
    # the unchanged workflows of the changed file still replay
    assert replay(load_registry(swapped), histories["pool"]) == []


# ---------------------------------------------------------------- limits

async def test_oversized_input_and_signal_are_refused(tmp_path: Path) -> None:
    config = engine_config()
    config.limits.max_payload_bytes = 4096
    async with Harness(tmp_path, config=config) as h:
        with pytest.raises(InvalidArgument) as exc:
            await h.api.start_workflow(StartWorkflowRequest("big-1", "eng:message", TASK_QUEUE, ["x" * 5000]))
        assert exc.value.reason == "PayloadTooLarge"
        assert "input" in exc.value.message and "the limit is 4096 bytes" in exc.value.message
        with pytest.raises(NotFound):
            await h.describe("big-1")  # nothing was started

        wid = await h.start_workflow("eng:message")
        with pytest.raises(InvalidArgument) as exc:
            await h.api.signal_workflow(SignalWorkflowRequest(ExecutionRef(wid), "request", {"blob": "y" * 5000}))
        assert exc.value.reason == "PayloadTooLarge" and "the limit is 4096 bytes" in exc.value.message
        assert not of_type(await h.history(wid), E.WorkflowExecutionSignaled)
        await h.signal(wid, "request", "small")  # the workflow is unharmed
        assert (await h.value(wid))["data"] == "small"


async def test_lua_limits_fail_the_task_and_the_worker_keeps_serving(tmp_path: Path) -> None:
    config = engine_config()
    config.limits.lua_memory_bytes = 4 * 1024 * 1024
    config.limits.lua_instructions_per_task = 2_000_000
    config.limits.max_pending_activities = 3
    async with Harness(tmp_path, config=config) as h:
        hog = await h.start_workflow("eng:hog_memory")
        spin = await h.start_workflow("eng:spin")
        fan = await h.start_workflow("eng:fan_out", {"n": 5})
        expected = {
            hog: "limits.lua_memory_bytes",
            spin: "limits.lua_instructions_per_task",
            fan: "the workflow would have 5 pending activities; the limit is 3 (limits.max_pending_activities)",
        }
        for wid, text in expected.items():
            failed = await h.wait_type(wid, E.WorkflowTaskFailed)
            assert failed.attrs["cause"] == "LIMIT_EXCEEDED", (wid, failed.attrs)
            assert text in failed.attrs["failure"]["message"], (wid, failed.attrs)
            d = await h.describe(wid)
            assert d.info.status == WorkflowStatus.RUNNING
            assert d.last_workflow_task_failure is not None and text in d.last_workflow_task_failure.message
        spin_failure = (await h.describe(spin)).last_workflow_task_failure
        assert spin_failure is not None and spin_failure.source == "limits.lua:13", spin_failure
        assert not of_type(await h.history(fan), E.ActivityTaskScheduled)  # the task's commands were refused

        # the same worker goes on serving other workflows
        assert await h.value(await h.start_workflow("eng:echo_flow", "still here")) == "still here"
        assert await h.value(await h.start_workflow("eng:fan_out", {"n": 3})) == 6
        assert h.worker is not None


async def test_too_many_buffered_signals_are_refused(tmp_path: Path) -> None:
    config = engine_config()
    config.limits.max_buffered_signals = 3
    async with Harness(tmp_path, config=config) as h:
        assert h.spy is not None
        h.spy.hold("respond_workflow_task_completed")
        wid = await h.start_workflow("eng:collect", {"n": 3})
        await h.spy.entered["respond_workflow_task_completed"].wait()
        for i in range(3):
            await h.signal(wid, "n", i)
        with pytest.raises(ResourceExhausted, match=r"limits\.max_buffered_signals"):
            await h.signal(wid, "n", 99)
        h.spy.release("respond_workflow_task_completed")
        assert await h.value(wid) == [0, 1, 2]
