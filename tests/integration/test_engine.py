"""The Lua API of issue 2, end to end through the real engine (history + matching + frontend on a
SQLite file) and a real worker, in one process: workflow info, durable timers, coroutines and
channels, replay-safe randomness across a restart, signals, cancel and terminate.

Activities, failures, replay of recorded histories and limits are in test_engine_failures.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from legato.api import CancelWorkflowRequest, ExecutionRef, TerminateWorkflowRequest, WorkflowStatus
from legato.errors import NotFound
from legato.events import EventType as E
from tests.integration.engine_harness import ENGINE_APP, Harness, engine_config, of_type, types
from worker.entries import load_registry
from worker.replay import replay

pytestmark = pytest.mark.usefixtures("transport")


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness(tmp_path) as harness:
        yield harness


# ---------------------------------------------------------------- workflow.info()

async def test_workflow_info_fields(h: Harness) -> None:
    wid = await h.start_workflow("eng:info", {"note": "crème brûlée ✓"}, workflow_id="info-1")
    out = await h.value(wid)
    events = await h.history(wid)
    d = await h.describe(wid)
    started = of_type(events, E.WorkflowTaskStarted)
    assert [e.event_id for e in started] == [3, 8]  # the task of each batch
    for info, task in ((out["first"], started[0]), (out["second"], started[1])):
        assert info["workflow_id"] == "info-1"
        assert info["run_id"] == d.info.run_id and info["run_id"]
        assert info["workflow_type"] == "eng:info"
        assert info["task_queue"] == "eng"
        assert info["namespace"] == "default"
        assert info["attempt"] == 1
        # the history as the code sees it: every event up to its task's WorkflowTaskStarted, and
        # the bytes of those before it (as the WorkflowTaskStarted says)
        assert info["history_length"] == task.event_id
        assert info["history_size"] == sum(len(e.encode().encode("utf-8")) for e in events[:task.event_id - 1])
        assert info["history_size"] == task.attrs["history_size_bytes"]
    assert out["length"] == 8 and out["size"] == out["second"]["history_size"]
    assert out["first"]["history_size"] < out["second"]["history_size"]


async def test_sticky_tasks_and_a_worker_that_lost_the_run(h: Harness) -> None:
    """The worker gets only the new events of a run it has cached; after it dropped the run, it
    reads the rest from the server; history_size is the same live and in a replay."""
    wid = await h.start_workflow("eng:sizes", {"n": 3}, workflow_id="sizes-1")
    run_id = (await h.describe(wid)).info.run_id
    assert h.worker is not None and h.spy is not None
    for i in range(3):
        await h.wait_idle(wid)
        if i == 2:
            h.worker.workflow_tasks.evict(run_id)  # as if the cache needed the room
        await h.signal(wid, "next", i)
    out = await h.value(wid)
    events = await h.history(wid)
    tasks = [c.result for c in h.spy.calls if c.name == "poll_workflow_task" and c.result is not None]
    assert [t.history[0].event_id > 1 for t in tasks] == [False, True, True, True]  # sticky after the first
    fetched = [c.request for c in h.spy.calls if c.name == "get_workflow_history"]
    assert len(fetched) >= 1 and fetched[0].ref.run_id == run_id  # the evicted run's history, read again
    started = of_type(events, E.WorkflowTaskStarted)
    assert out["lengths"] == [e.event_id for e in started[1:]]
    assert out["sizes"] == [e.attrs["history_size_bytes"] for e in started[1:]]
    assert out["sizes"] == [sum(len(x.encode().encode()) for x in events[:e.event_id - 1]) for e in started[1:]]
    replay(load_registry(h.app), events)  # raises on any difference


# ---------------------------------------------------------------- time

async def test_durable_sleeps_and_workflow_time(h: Harness) -> None:
    wid = await h.start_workflow("eng:sleepy")
    out = await h.value(wid)
    events = await h.history(wid)
    timers = of_type(events, E.TimerStarted)
    assert [t.attrs["start_to_fire_timeout_ms"] for t in timers] == [100, 150]  # 100 * time.MILLISECOND, "150ms"
    assert len(of_type(events, E.TimerFired)) == 2
    assert out["numeric"] >= 100 and out["text"] >= 150
    assert out["total"] >= 0.25
    assert out["start_unix"] == events[2].timestamp_ms // 1000  # time.now() is the task's start time
    # the workflow's clock is the history's: the wall-clock gap between the task starts
    tasks = of_type(events, E.WorkflowTaskStarted)
    assert out["numeric"] == tasks[1].timestamp_ms - tasks[0].timestamp_ms


async def test_time_after_loses_to_a_signal(h: Harness) -> None:
    wid = await h.start_workflow("eng:after", {"timeout": "1h"})
    await h.wait_type(wid, E.TimerStarted)  # blocked in channel.select
    await h.signal(wid, "go", {"n": 1})
    assert await h.value(wid) == {"winner": "signal", "value": {"n": 1}}
    assert not of_type(await h.history(wid), E.TimerFired)


async def test_time_after_wins_without_a_signal(h: Harness) -> None:
    wid = await h.start_workflow("eng:after", {"timeout": "50ms"})
    assert await h.value(wid) == {"winner": "timer"}
    events = await h.history(wid)
    assert len(of_type(events, E.TimerFired)) == 1
    assert not of_type(events, E.WorkflowExecutionSignaled)


async def test_a_timer_fires_after_the_engine_restarts(h: Harness) -> None:
    wid = await h.start_workflow("eng:after", {"timeout": "400ms"})
    await h.wait_idle(wid)  # blocked in channel.select, its timer pending
    await h.restart()  # the timer is a row in the database, not a task in memory
    assert await h.value(wid) == {"winner": "timer"}
    events = await h.history(wid)
    started, fired = of_type(events, E.TimerStarted)[0], of_type(events, E.TimerFired)[0]
    assert fired.timestamp_ms - started.timestamp_ms >= 400


async def test_stopped_timer_is_canceled_in_the_history(h: Harness) -> None:
    wid = await h.start_workflow("eng:stop_timer")
    assert await h.value(wid) == {"first": True, "second": False}
    events = await h.history(wid)
    started = of_type(events, E.TimerStarted)
    canceled = of_type(events, E.TimerCanceled)
    assert [t.attrs["timer_id"] for t in started] == ["1", "2"]  # the 1h timer, then the 1ms sleep
    assert [t.attrs["timer_id"] for t in canceled] == ["1"]
    assert canceled[0].attrs["started_event_id"] == started[0].event_id
    assert [t.attrs["timer_id"] for t in of_type(events, E.TimerFired)] == ["2"]
    d = await h.describe(wid)
    assert d.pending_timers == 0


# ---------------------------------------------------------------- coroutines and channels

POOL_INPUT = {"workers": 3, "jobs": 6}


def check_pool_result(out: dict) -> None:  # type: ignore[type-arg]
    assert out["total"] == 2 * sum(range(1, 7))
    assert sorted(r["job"] for r in out["processed"]) == [1, 2, 3, 4, 5, 6]
    assert all(r["result"] == 2 * r["job"] for r in out["processed"])
    assert {r["worker"] for r in out["processed"]} == {1, 2, 3}  # the work was shared


@pytest.mark.parametrize("cache_size", [1000, 0], ids=["cached", "replay-every-task"])
async def test_worker_pool_of_coroutines(tmp_path: Path, cache_size: int) -> None:
    config = engine_config()
    config.worker.workflow_cache_size = cache_size
    async with Harness(tmp_path, config=config) as h:
        wid = await h.start_workflow("eng:pool", POOL_INPUT)
        out = await h.value(wid)
        check_pool_result(out)
        events = await h.history(wid)
        assert not of_type(events, E.WorkflowTaskFailed), types(events)
        assert len(of_type(events, E.TimerStarted)) == 6
        # the recorded history replays with the same commands, and gives the same result
        assert replay(load_registry(ENGINE_APP), events) == []
        ex_result = events[-1].attrs["result"]
        assert ex_result == out
        # the job order each coroutine saw is fixed by the deterministic scheduler: first round 1, 2, 3
        assert [(r["worker"], r["job"]) for r in out["processed"][:3]] == [(1, 1), (2, 2), (3, 3)]


# ---------------------------------------------------------------- replay-safe randomness

def _hex_marker(events: list) -> list[str]:  # type: ignore[type-arg]
    return [e.attrs["details"] for e in of_type(events, E.MarkerRecorded)
            if e.attrs["marker_name"] == "crypto.random_bytes"]


async def test_uuid_and_random_bytes_survive_a_restart_with_an_empty_cache(h: Harness) -> None:
    wid = await h.start_workflow("eng:random")
    scheduled = await h.wait_type(wid, E.ActivityTaskScheduled)
    before = scheduled.attrs["input"][0]  # what the code saw, shown to an activity
    await h.wait_idle(wid)  # it waits for "go"
    assert len(before["uuid"]) == 36 and before["uuid"][14] == "4"
    assert len(before["bytes"]) == 32
    assert _hex_marker(await h.history(wid)) == [before["bytes"]]

    await h.restart()  # a new engine on the same database and a new worker: the run is replayed
    assert h.worker is not None and len(h.worker.cache) == 0
    await h.signal(wid, "go")
    out = await h.value(wid)
    assert out["before"] == before
    assert out["after"]["uuid"] != before["uuid"] and out["after"]["bytes"] != before["bytes"]
    events = await h.history(wid)
    assert _hex_marker(events) == [before["bytes"], out["after"]["bytes"]]
    assert not of_type(events, E.WorkflowTaskFailed)
    assert h.worker.cache.misses >= 1  # the new worker had to replay from the history


async def test_table_iteration_order_survives_a_restart(h: Harness) -> None:
    keys = ["zeta", "alpha", "mu", "beta", "omega", "kappa", "delta", "pi"]
    wid = await h.start_workflow("eng:iterate", {k: i for i, k in enumerate(keys)})
    await h.wait_idle(wid)  # every activity done: it waits for "go"
    await h.restart()  # a new Lua runtime, with another string hash seed, replays the run
    await h.signal(wid, "go")
    assert await h.value(wid) == sorted(keys) * 2  # pairs, then next: both in key order
    events = await h.history(wid)
    assert [e.attrs["input"][0] for e in of_type(events, E.ActivityTaskScheduled)] == sorted(keys) * 2
    assert not of_type(events, E.WorkflowTaskFailed)


# ---------------------------------------------------------------- signals

async def test_signals_sent_before_listen_are_delivered_in_order(h: Harness) -> None:
    wid = await h.start_workflow("eng:before_listen", {"n": 5})
    for i in range(1, 6):
        await h.signal(wid, "item", i)
    await h.signal(wid, "gate")
    assert await h.value(wid) == [1, 2, 3, 4, 5]


async def test_inbox_gets_what_no_listener_takes(h: Harness) -> None:
    wid = await h.start_workflow("eng:inbox_and_listen")
    await h.wait_type(wid, E.WorkflowTaskCompleted)  # it listens now
    await h.signal(wid, "first", {"a": 1})
    await h.signal(wid, "mine", "for the listener")
    await h.signal(wid, "second", [2])
    assert await h.value(wid) == {
        "inbox": [{"topic": "first", "data": {"a": 1}}, {"topic": "second", "data": [2]}],
        "mine": "for the listener",
    }


async def test_listen_with_message_gives_the_sender(h: Harness) -> None:
    wid = await h.start_workflow("eng:message")
    await h.signal(wid, "request", {"q": "status"}, sender="client-7")
    assert await h.value(wid) == {"topic": "request", "from": "client-7", "data": {"q": "status"}}


async def test_signals_arriving_during_a_workflow_task_are_all_delivered(h: Harness) -> None:
    assert h.spy is not None
    h.spy.hold("respond_workflow_task_completed")
    wid = await h.start_workflow("eng:collect", {"n": 40})
    await h.spy.entered["respond_workflow_task_completed"].wait()  # the first task is in flight
    d = await h.describe(wid)
    assert d.pending_workflow_task is not None and d.pending_workflow_task.state == "STARTED"
    for i in range(40):
        await h.signal(wid, "n", i)
    assert len(await h.history(wid)) == 3  # buffered, not written, while the task runs
    h.spy.release("respond_workflow_task_completed")
    assert await h.value(wid) == list(range(40))
    events = await h.history(wid)
    # the buffered signals follow the first task's completion, all of them, in order
    assert types(events[3:4 + 40]) == ["WorkflowTaskCompleted"] + ["WorkflowExecutionSignaled"] * 40
    assert [e.attrs["input"] for e in events[4:44]] == list(range(40))


async def test_a_signal_arriving_while_the_workflow_completes_is_seen(h: Harness) -> None:
    assert h.spy is not None
    wid = await h.start_workflow("eng:inbox_and_listen")
    await h.wait_type(wid, E.WorkflowTaskCompleted)
    await h.signal(wid, "first", 1)
    await h.signal(wid, "mine", "m")
    mine = await h.wait_event(wid, lambda e: e.attrs.get("signal_name") == "mine")
    # a task that saw both signals completed: the code waits for the inbox's second message
    await h.wait_event(wid, lambda e: e.event_type is E.WorkflowTaskCompleted and e.event_id > mine.event_id)
    h.spy.hold("respond_workflow_task_completed")
    await h.signal(wid, "second", 2)
    await h.spy.entered["respond_workflow_task_completed"].wait()  # the completing task is in flight
    await h.signal(wid, "late", 3)
    h.spy.release("respond_workflow_task_completed")
    out = await h.value(wid)
    assert out["inbox"] == [{"topic": "first", "data": 1}, {"topic": "second", "data": 2}]
    events = await h.history(wid)
    # history discarded the completion, wrote the late signal and gave the code a new task
    failed = of_type(events, E.WorkflowTaskFailed)
    assert [f.attrs["cause"] for f in failed] == ["UNHANDLED_COMMAND"]
    late = next(e for e in events if e.event_type is E.WorkflowExecutionSignaled and e.attrs["signal_name"] == "late")
    assert failed[0].event_id < late.event_id < events[-1].event_id
    assert events[-1].event_type is E.WorkflowExecutionCompleted
    assert (await h.describe(wid)).last_workflow_task_failure is None  # not a failure of the code
    assert replay(load_registry(ENGINE_APP), events) == []


# ---------------------------------------------------------------- cancel and terminate

async def test_cancel_is_an_event_for_code_that_asked_and_it_can_clean_up(h: Harness) -> None:
    wid = await h.start_workflow("eng:cancel_cleanup")
    await h.wait_type(wid, E.WorkflowTaskCompleted)
    await h.api.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef(wid), reason="customer changed mind"))
    r = await h.result(wid)
    assert r.status == WorkflowStatus.COMPLETED, r
    assert r.result == {"canceled": True, "compensation": "released order-1"}
    events = await h.history(wid)
    request = of_type(events, E.WorkflowExecutionCancelRequested)
    compensation = of_type(events, E.ActivityTaskScheduled)
    assert len(request) == 1 and request[0].attrs["reason"] == "customer changed mind"
    assert [a.attrs["activity_type"] for a in compensation] == ["eng:compensate"]
    assert request[0].event_id < compensation[0].event_id
    assert events[-1].event_type is E.WorkflowExecutionCompleted


async def test_cancel_before_the_first_task_still_reaches_code_that_asks(h: Harness) -> None:
    await h.stop_worker()  # no worker: the cancel request is in the history before the code first runs
    wid = await h.start_workflow("eng:cancel_cleanup")
    await h.api.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef(wid), reason="too soon"))
    await h.start_worker()
    r = await h.result(wid)
    assert r.status == WorkflowStatus.COMPLETED, (r.status, r.failure)
    assert r.result == {"canceled": True, "compensation": "released order-1"}
    assert types(await h.history(wid))[:3] == [
        "WorkflowExecutionStarted", "WorkflowTaskScheduled", "WorkflowExecutionCancelRequested"]

    await h.stop_worker()
    wid = await h.start_workflow("eng:cancel_plain")
    await h.api.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef(wid)))
    await h.start_worker()
    assert (await h.result(wid)).status == WorkflowStatus.CANCELED


async def test_cancel_without_events_cancels_the_run(h: Harness) -> None:
    wid = await h.start_workflow("eng:cancel_plain")
    await h.wait_type(wid, E.WorkflowTaskCompleted)
    await h.api.request_cancel_workflow(CancelWorkflowRequest(ExecutionRef(wid)))
    r = await h.result(wid)
    assert r.status == WorkflowStatus.CANCELED
    assert r.failure is not None and r.failure.kind == "Canceled"
    events = await h.history(wid)
    assert types(events)[-1] == "WorkflowExecutionCanceled"
    assert (await h.describe(wid)).info.status == WorkflowStatus.CANCELED


async def test_terminate_during_an_activity(h: Harness) -> None:
    assert h.spy is not None
    wid = await h.start_workflow("eng:call", {"activity": "eng:sleep", "args": [300]})
    # it is running: handed to the worker with its workflow task's response (eager execution)
    await h.spy.wait_call("respond_workflow_task_completed",
                          lambda c: c.result is not None and any(t.workflow_id == wid for t in c.result.activity_tasks))
    await h.api.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wid), reason="stop it"))
    r = await h.result(wid)
    assert r.status == WorkflowStatus.TERMINATED
    assert r.failure is not None and r.failure.kind == "Terminated" and r.failure.message == "stop it"
    # the activity finishes afterwards: its result is refused, the history stays closed
    late = await h.spy.wait_call("respond_activity_task_completed", timeout=5)
    assert isinstance(late.error, NotFound), late
    events = await h.history(wid)
    assert events[-1].event_type is E.WorkflowExecutionTerminated
    assert events[-1].attrs["reason"] == "stop it"
    assert not of_type(events, E.ActivityTaskCompleted)
    d = await h.describe(wid)
    assert d.info.status == WorkflowStatus.TERMINATED and not d.pending_activities


