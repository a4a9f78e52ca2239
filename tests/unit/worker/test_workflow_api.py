"""workflow.version / attrs / history_length / history_size, ctx, and funcs.async futures in
workflow code, against hand-built histories (every Sim step also checks a full replay)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from legato.commands import Command, CommandType
from legato.events import EventType as E
from tests.unit.worker.helpers import Sim, make_app, types
from worker.replay import replay
from worker.runtime import TaskFailure

C = CommandType


def sim(tmp_path: Path, code: str, input: list[Any] | None = None, **kw: Any) -> Sim:
    return Sim(make_app(tmp_path, {"main": code}, {"act": "return function(x) return x end"}), "app:main", input, **kw)


def run(s: Sim) -> list[Command]:
    cmds = s.step()
    s.complete(cmds)
    return cmds


def result(cmds: list[Command]) -> Any:
    assert types(cmds) == ["CompleteWorkflowExecution"], cmds
    return cmds[0].attrs["result"]


# ---------------------------------------------------------------- workflow.version

V2 = """\
local workflow = require("workflow")
local funcs = require("funcs")
return {main = function()
    local v = workflow.version("payment-v2", 1, 2)
    local again = workflow.version("payment-v2", 1, 2)
    local r = funcs.call(v == 1 and "app:old" or "app:new")
    return {v = v, again = again}
end}
"""

V1 = """\
local funcs = require("funcs")
return {main = function()
    local r = funcs.call("app:old")
    return {v = 0}
end}
"""


def test_a_new_run_records_max(tmp_path: Path) -> None:
    s = sim(tmp_path, V2)
    c1 = run(s)
    assert types(c1) == ["RecordMarker", "ScheduleActivityTask"]  # one marker for both calls
    assert c1[0].attrs == {"marker_name": "version", "details": {"change_id": "payment-v2", "version": 2}}
    assert c1[1].attrs["activity_type"] == "app:new"
    s.h.activity_completed("1", None).next_task()
    assert result(run(s)) == {"v": 2, "again": 2}


def test_a_running_workflow_keeps_its_recorded_version(tmp_path: Path) -> None:
    s = sim(tmp_path, V2.replace("1, 2)", "1, 1)"))  # old code: max 1
    run(s)
    s.h.activity_completed("1", None).next_task()
    # new code (max 2) replays the history recorded with version 1, and finishes the run
    reg = make_app(tmp_path, {"main": V2})
    cmds = replay(reg, s.h.events)
    assert result(cmds) == {"v": 1, "again": 1}


def test_a_run_that_passed_the_point_before_the_call_existed_gets_min(tmp_path: Path) -> None:
    s = sim(tmp_path, V1)
    run(s)
    s.h.activity_completed("1", None).next_task()
    reg = make_app(tmp_path, {"main": V2})
    assert result(replay(reg, s.h.events)) == {"v": 1, "again": 1}


def test_a_recorded_version_outside_the_range_is_non_determinism(tmp_path: Path) -> None:
    s = sim(tmp_path, V2)
    run(s)
    s.h.activity_completed("1", None).next_task()
    reg = make_app(tmp_path, {"main": V2.replace("1, 2)", "3, 4)")})
    with pytest.raises(TaskFailure) as info:
        replay(reg, s.h.events)
    assert info.value.cause == "NON_DETERMINISTIC"
    f = info.value.failure
    assert f.kind == "NonDeterministic" and "payment-v2" in f.message and "version 2" in f.message
    assert f.source == "main.lua:4"


def test_a_removed_version_call_replays(tmp_path: Path) -> None:
    s = sim(tmp_path, V2)
    run(s)
    s.h.activity_completed("1", None).next_task()
    reg = make_app(tmp_path, {"main": V1.replace('"app:old"', '"app:new"')})
    assert result(replay(reg, s.h.events)) == {"v": 0}


def test_a_version_keeps_its_value_across_tasks(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local workflow = require("workflow")
local time = require("time")
return {main = function()
    local a = workflow.version("c", 1, 3)
    time.sleep("1s")
    local b = workflow.version("c", 1, 5)
    local ok, err = pcall(workflow.version, "c", 4, 5)
    return {a, b}
end}
""")
    c1 = run(s)
    assert types(c1) == ["RecordMarker", "StartTimer"]
    s.h.timer_fired("1").next_task()
    with pytest.raises(TaskFailure) as info:  # version 3 is outside [4, 5]: a fatal task failure
        s.step()
    assert info.value.cause == "NON_DETERMINISTIC" and "'c'" in info.value.failure.message


@pytest.mark.parametrize("call", ['workflow.version("", 1, 2)', 'workflow.version("x", 2, 1)',
                                  'workflow.version("x", 1.5, 2)', "workflow.version(nil, 1, 2)"])
def test_version_checks_its_arguments(tmp_path: Path, call: str) -> None:
    s = sim(tmp_path, f"""\
local workflow = require("workflow")
return {{main = function()
    local ok, err = pcall(function() return {call} end)
    return {{ok, err:kind()}}
end}}
""")
    assert result(s.step()) == [False, "Invalid"]


# ---------------------------------------------------------------- workflow.attrs, history_length/size

def test_attrs_issue_upsert_and_memo_commands(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local workflow = require("workflow")
return {main = function()
    workflow.attrs({search = {status = "processing", order_total = 42, tags = {"a"}}, memo = {notes = "vip"}})
    workflow.attrs({memo = {source = "web"}})
    workflow.attrs({search = {}})
    local _, e1 = pcall(workflow.attrs, {serch = {}})
    local _, e2 = pcall(workflow.attrs, {search = {x = {nested = 1}}})
    local _, e3 = pcall(workflow.attrs, {memo = "text"})
    return {e1:kind(), e1:message(), e2:message(), e3:message()}
end}
""")
    cmds = s.step()
    assert types(cmds) == ["UpsertWorkflowSearchAttributes", "ModifyWorkflowProperties", "ModifyWorkflowProperties",
                           "CompleteWorkflowExecution"]
    assert cmds[0].attrs == {"search_attributes": {"status": "processing", "order_total": 42, "tags": ["a"]}}
    assert cmds[1].attrs == {"memo": {"notes": "vip"}} and cmds[2].attrs == {"memo": {"source": "web"}}
    kind, m1, m2, m3 = cmds[3].attrs["result"]
    assert kind == "Invalid" and "unknown key 'serch'" in m1
    assert "search.x" in m2 and "memo must be a table" in m3


def test_history_length_and_size(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local workflow = require("workflow")
local time = require("time")
return {main = function()
    local a = {workflow.history_length(), workflow.history_size()}
    time.sleep("1s")
    local info = workflow.info()
    return {a, {workflow.history_length(), workflow.history_size()}, {info.history_length, info.history_size}}
end}
""")
    run(s)
    s.h.timer_fired("1").next_task()
    first, second, info = result(run(s))

    def size(upto: int) -> int:
        return sum(len(e.encode().encode()) for e in s.h.events[:upto])

    assert first == [3, size(3)]
    started = s.h.started_id
    assert second == [started, size(started)] and info == second


# ---------------------------------------------------------------- ctx

def test_ctx_reads_the_started_context_and_flows_to_activities(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local ctx = require("ctx")
local funcs = require("funcs")
return {main = function()
    local all = ctx.all()
    all.user_id = "changed"
    funcs.call("app:act", 1)
    funcs.new():with_context({request_id = "r-2"}):with_options({["activity.start_to_close_timeout"] = "5s"})
        :call("app:act", 2)
    return {user = ctx.get("user_id"), missing = ctx.get("nope"), all = ctx.all()}
end}
""", context={"user_id": "u-1", "tenant": "t-1"})
    c1 = run(s)
    assert c1[0].attrs["context"] == {"user_id": "u-1", "tenant": "t-1"}
    s.h.activity_completed("1", 1).next_task()
    c2 = run(s)
    assert c2[0].attrs["context"] == {"user_id": "u-1", "tenant": "t-1", "request_id": "r-2"}
    assert c2[0].attrs["start_to_close_timeout_ms"] == 5000
    s.h.activity_completed("2", 2).next_task()
    assert result(run(s)) == {"user": "u-1", "all": {"user_id": "u-1", "tenant": "t-1"}}


def test_with_context_checks_its_argument(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local funcs = require("funcs")
return {main = function()
    local _, err = pcall(function() return funcs.new():with_context("x") end)
    return err:kind()
end}
""")
    assert result(s.step()) == "Invalid"


# ---------------------------------------------------------------- funcs.async

ASYNC = """\
local funcs = require("funcs")
return {main = function()
    local f1 = funcs.async("app:act", 1)
    local f2 = funcs.new():with_options({["activity.heartbeat_timeout"] = "10s"}):async("app:act", 2)
    local r0, e0 = f1:result()
    local before = {f1:is_complete(), f1:is_canceled(), select("#", f1:error()), (select(2, f1:error())),
                    r0 == nil and e0 == nil}
    local payload, ok = f1:response():receive()
    local again = {f1:response():receive()}
    local r1, e1 = f1:result()
    local e2, failed = f2:response():receive()  -- f2 failed first: its channel has the error
    local r2, e2b = f2:result()
    local ne, nf = f1:error()
    return {before = before, data = payload:data(), ok = ok, again_ok = again[2] == false,
            r1 = r1:data(), e1 = e1, e2 = e2:kind(), failed_ok = failed, r2 = r2, e2b = e2b:kind(),
            done = f2:is_complete(), err = f2:error():kind(), errflag = select(2, f2:error()),
            f1_error = {ne == nil, nf}}
end}
"""


def test_async_futures_resolve_through_response_and_result(tmp_path: Path) -> None:
    s = sim(tmp_path, ASYNC)
    c1 = run(s)
    assert types(c1) == ["ScheduleActivityTask", "ScheduleActivityTask"]  # both scheduled at once
    assert c1[1].attrs["heartbeat_timeout_ms"] == 10_000
    s.h.activity_failed("2", {"message": "no", "kind": "NotFound", "retryable": False}).next_task()
    assert run(s) == []  # f1 still pending
    s.h.activity_completed("1", {"v": 1}).next_task()
    r = result(run(s))
    assert r == {"before": [False, False, 2, False, True], "data": {"v": 1}, "ok": True, "again_ok": True,
                 "r1": {"v": 1}, "e2": "NotFound", "failed_ok": True, "e2b": "NotFound", "done": True,
                 "err": "NotFound", "errflag": True, "f1_error": [True, False]}


def test_a_failed_future_delivers_its_error_on_the_response_channel(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local funcs = require("funcs")
return {main = function()
    local f = funcs.async("app:act", 1)
    local e, ok = f:response():receive()
    local _, closed_ok = f:response():receive()
    return {e:message(), ok, closed_ok, f:error():message()}
end}
""")
    run(s)
    s.h.activity_failed("1", {"message": "boom", "kind": "Internal"}).next_task()
    assert result(run(s)) == ["boom", True, False, "boom"]


CANCEL = """\
local funcs = require("funcs")
local time = require("time")
return {main = function()
    local f = funcs.async("app:act", 1)
    time.sleep("1s")
    local first = f:cancel()
    local second = f:cancel()
    f:response():receive()
    local p, err = f:result()
    return {first = first, second = second, canceled = f:is_canceled(), r = p and p:data(), kind = err and err:kind(),
            after = f:cancel()}
end}
"""


def test_cancel_requests_the_activity_cancellation(tmp_path: Path) -> None:
    s = sim(tmp_path, CANCEL)
    c1 = run(s)
    sched = next(e.event_id for e in s.h.events if e.event_type is E.ActivityTaskScheduled)
    assert types(c1) == ["ScheduleActivityTask", "StartTimer"]
    s.h.timer_fired("1").next_task()
    c2 = run(s)
    assert types(c2) == ["RequestCancelActivityTask"] and c2[0].attrs == {"scheduled_event_id": sched}
    s.h.activity_canceled("1", details="bye").next_task()
    assert result(run(s)) == {"first": True, "second": True, "canceled": True, "kind": "Canceled", "after": False}


def test_an_activity_that_completes_despite_the_cancel_gives_its_result(tmp_path: Path) -> None:
    s = sim(tmp_path, CANCEL)
    run(s)
    s.h.timer_fired("1").next_task()
    run(s)
    s.h.activity_completed("1", "done anyway").next_task()
    r = result(run(s))
    assert r["r"] == "done anyway" and "kind" not in r and r["canceled"] is True


def test_cancel_before_the_activity_was_sent_drops_it(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local funcs = require("funcs")
return {main = function()
    local f = funcs.async("app:act", 1)
    local g = funcs.async("app:act", 2)
    f:cancel()
    local _, err = f:result()  -- failed at once: nothing was sent
    return {err:kind(), f:is_complete()}
end}
""")
    cmds = s.step()
    assert types(cmds) == ["ScheduleActivityTask", "CompleteWorkflowExecution"]
    assert cmds[0].attrs["activity_id"] == "2"
    assert cmds[1].attrs["result"] == ["Canceled", True]


def test_futures_check_their_receiver(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local funcs = require("funcs")
return {main = function()
    local f = funcs.async("app:act")
    local ok, err = pcall(f.result, {})
    local ok2, err2 = pcall(funcs.async, 5)
    return {ok, tostring(err), ok2}
end}
""")
    ok, msg, ok2 = s.step()[-1].attrs["result"]
    assert ok is False and "future:result" in msg and ok2 is False


def test_replay_of_a_history_with_every_kind_of_future_event(tmp_path: Path) -> None:
    s = sim(tmp_path, CANCEL)
    run(s)
    s.h.timer_fired("1").next_task()
    run(s)
    s.h.activity_canceled("1").next_task()
    run(s)
    reg = make_app(tmp_path, {"main": CANCEL}, {"act": "return function(x) return x end"})
    assert replay(reg, s.h.events) == []


def test_a_history_recorded_with_the_old_kind_spellings_replays_with_wippys(tmp_path: Path) -> None:
    """Histories from before the kinds took Wippy's values ("NOT_FOUND") replay and read as now
    ("NotFound"): a kind is mapped when it is read."""
    s = sim(tmp_path, """\
local funcs = require("funcs")
return {main = function()
    local _, err = funcs.call("app:act", 1)
    return {err:kind(), err:kind() == errors.NOT_FOUND}
end}
""")
    run(s)
    s.h.activity_failed("1", {"message": "gone", "kind": "NOT_FOUND", "retryable": False}).next_task()
    assert result(run(s)) == ["NotFound", True]
