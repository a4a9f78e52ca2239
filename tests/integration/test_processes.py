"""Issue 3's process API in workflows, end to end through the real engine (history + matching +
frontend on a SQLite file) and a real worker in one process: child workflows (spawn, exec,
workflow.exec, errors, context, start messages, use_existing), messages between workflows,
monitors, links, terminate, cancel, continue-as-new, versioning and attributes, and activity
cancellation through funcs.async. Each test also replays the recorded history, and runs twice: the
worker and the test call the engine in-process, then over its gRPC API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from legato.api import WorkflowStatus
from legato.config import Config
from legato.events import EventType as E
from tests.integration.engine_harness import APPS, Harness, engine_config, of_type
from worker.entries import load_registry
from worker.replay import replay

APP = APPS / "processes"

pytestmark = pytest.mark.usefixtures("transport")  # in-process, then over gRPC


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    config: Config = engine_config()
    config.worker.heartbeat_throttle_ms = 20
    async with Harness(tmp_path, APP, config) as harness:
        yield harness


async def replays(h: Harness, wid: str) -> None:
    """The recorded history of `wid` replays with the app's code (no non-determinism)."""
    assert replay(load_registry(APP), await h.history(wid)) == []


async def test_children_spawn_exec_and_errors(h: Harness) -> None:
    wid = await h.start_workflow("pr:parent", 1, workflow_id="parent-1")
    out: Any = await h.value(wid)
    child = out["pid"]
    assert out["exit"] == {"kind": "EXIT", "from": child,
                           "value": {"x": 1, "ctx": {"request_id": "r-1"}, "act_ctx": {"request_id": "r-1"}}}
    assert out["exec"] == {"x": 2, "ctx": {}, "act_ctx": {}}
    assert out["err"] == {"kind": "NotFound", "retryable": False, "message": "no such order"}
    assert (await h.result(child)).status is WorkflowStatus.COMPLETED  # a pid is a workflow id
    await replays(h, wid)


async def test_start_messages_come_first_and_use_existing_still_delivers_them(h: Harness) -> None:
    wid = await h.start_workflow("pr:spawn_counter", "counter-x")
    out: Any = await h.value(wid)
    assert out["same"] is True and out.get("err2") is None
    seen = out["result"]["seen"]
    assert seen[:2] == [2, 1] and sorted(seen[2:]) == [4, 10]
    assert out["result"]["total"] == 17  # the second start's input (initial = 999) is ignored
    await replays(h, wid)


async def test_send_between_workflows_and_to_an_unknown_one(h: Harness) -> None:
    pong = await h.start_workflow("pr:ponger", workflow_id="ponger-1")
    ping = await h.start_workflow("pr:sender", pong, workflow_id="sender-1")
    assert await h.value(ping) == {"pong": {"got": 1}}
    assert await h.value(pong) == "sender-1"  # msg:from() is the sending workflow's pid
    lost = await h.start_workflow("pr:sender", "nobody-here")
    assert await h.value(lost) == {"err": "NotFound", "retryable": False}
    await replays(h, ping)


async def test_monitor_then_terminate_gives_exit_with_an_error(h: Harness) -> None:
    target = await h.start_workflow("pr:sleeper")
    wid = await h.start_workflow("pr:watcher", target)
    assert await h.value(wid) == {"kind": "EXIT", "from": target, "err": "Terminated"}
    assert (await h.result(target)).status is WorkflowStatus.TERMINATED
    missing = await h.start_workflow("pr:watcher", "ghost")
    assert await h.value(missing) == {"err": "NotFound"}
    await replays(h, wid)


async def test_link_down_is_trapped_or_ends_the_workflow(h: Harness) -> None:
    target = await h.start_workflow("pr:sleeper")
    trapped = await h.start_workflow("pr:linker", target, True)
    assert await h.value(trapped) == {"kind": "LINK_DOWN", "from": target}
    target2 = await h.start_workflow("pr:sleeper")
    untrapped = await h.start_workflow("pr:linker", target2, False)
    r = await h.result(untrapped)
    assert r.status is WorkflowStatus.FAILED and r.failure is not None
    assert f"linked process {target2} ended abnormally" in r.failure.message
    await replays(h, trapped)


async def test_cancel_reaches_the_workflow_which_handles_it(h: Harness) -> None:
    target = await h.start_workflow("pr:cancelable")
    wid = await h.start_workflow("pr:canceler", target)
    out: Any = await h.value(wid)
    assert out == {"ok": True, "kind": "EXIT", "value": {"kind": "CANCEL", "note": "cleaned up"}}
    await replays(h, wid)


@pytest.mark.parametrize("wait", [True, False])
async def test_cancel_of_a_child_waits_for_its_close_with_wait_for_cancellation(h: Harness, wait: bool) -> None:
    wid = await h.start_workflow("pr:cancel_waiter", wait)
    out: Any = await h.value(wid)
    value = {"kind": "CANCEL", "note": "cleaned up"}  # the child handled the cancellation, then ended
    assert out == {"ok": True, "closed_when_cancel_returned": wait, "kind": "EXIT", "from_child": True,
                   "value": value}
    events = await h.history(wid)
    requested = of_type(events, E.ExternalWorkflowExecutionCancelRequested)[0]
    closed = of_type(events, E.ChildWorkflowExecutionCompleted)[0]
    assert requested.event_id < closed.event_id
    await replays(h, wid)


async def test_continue_as_new_starts_fresh_runs(h: Harness) -> None:
    wid = await h.start_workflow("pr:looper", 1, workflow_id="looper-1")
    out: Any = await h.value(wid)  # follows the chain of runs
    assert out["n"] == 3
    assert out["seen"] == [3, 3, 3]  # every run starts with an empty history
    events = await h.history(wid)  # the latest run
    assert events[0].event_type is E.WorkflowExecutionStarted


async def test_version_and_attributes(h: Harness) -> None:
    wid = await h.start_workflow("pr:versioned")
    assert await h.value(wid) == {"v": 2}
    events = await h.history(wid)
    markers = of_type(events, E.MarkerRecorded)
    assert markers[0].attrs["details"] == {"change_id": "payment-v2", "version": 2}
    d = await h.describe(wid)
    assert d.info.memo == {"note": "from lua"}
    assert d.info.search_attributes == {"stage": "versioned", "v": 2}
    await replays(h, wid)


async def test_async_activity_cancellation_reaches_the_activity(h: Harness) -> None:
    wid = await h.start_workflow("pr:async_cancel")
    out: Any = await h.value(wid, timeout=30)
    assert out == {"kind": "Canceled", "canceled": True}
    events = await h.history(wid)
    assert of_type(events, E.ActivityTaskCancelRequested) and of_type(events, E.ActivityTaskCanceled)
    await replays(h, wid)
