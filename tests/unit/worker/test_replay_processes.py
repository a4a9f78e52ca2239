"""Replay safety of every issue-3 command: a recorded history replays with the same code, and
changing the order of a command (or what tells it apart) is detected as non-determinism."""

from __future__ import annotations

from pathlib import Path

import pytest

from legato.events import EventType as E
from tests.unit.worker.helpers import Sim, make_app, types
from worker.entries import Registry
from worker.replay import replay
from worker.runtime import TaskFailure

TEMPLATE = """\
local funcs = require("funcs")
local time = require("time")
local workflow = require("workflow")
return {{main = function()
    {setup}
    {before}
    {op}
    channel.new():receive()
end}}
"""

# before the op, in the same workflow task: a timer (A: started first) ...
TIMER_FIRST = 'local t = time.after("1h")'
# ... or (B) a coroutine that starts the timer once the op has blocked or returned
TIMER_AFTER = 'coroutine.spawn(function() local t = time.after("1h") end)'

# op -> (setup that needs a task of its own, the command the op issues)
OPS: dict[str, tuple[str, str]] = {
    'process.spawn("app:child", "app:worker", 1)': ("", "StartChildWorkflowExecution"),
    'process.with_name("n"):with_message("go", 1):spawn_monitored("app:child", "app:worker")':
        ("", "StartChildWorkflowExecution"),
    'process.exec("app:child", "app:worker")': ("", "StartChildWorkflowExecution"),
    'workflow.exec("app:child", {x = 1})': ("", "StartChildWorkflowExecution"),
    'process.send("wf-9", "ping", {n = 1})': ("", "SignalExternalWorkflowExecution"),
    'process.monitor("wf-9")': ("", "MonitorExternalWorkflowExecution"),
    'process.unmonitor("wf-9")': ("", "MonitorExternalWorkflowExecution"),
    'process.link("wf-9")': ("", "MonitorExternalWorkflowExecution"),
    'process.unlink("wf-9")': ("", "MonitorExternalWorkflowExecution"),
    'process.terminate("wf-9")': ("", "TerminateExternalWorkflowExecution"),
    'process.cancel("wf-9", "5s")': ("", "RequestCancelExternalWorkflowExecution"),
    'process.upgrade(nil, 1, 2)': ("", "ContinueAsNewWorkflowExecution"),
    'workflow.version("change-1", 1, 2)': ("", "RecordMarker"),
    'workflow.attrs({search = {status = "x"}})': ("", "UpsertWorkflowSearchAttributes"),
    'workflow.attrs({memo = {note = "x"}})': ("", "ModifyWorkflowProperties"),
    'funcs.async("app:act", 1)': ("", "ScheduleActivityTask"),
    "f:cancel()": ('local f = funcs.async("app:act") time.sleep("1s")', "RequestCancelActivityTask"),
}


def registry(tmp_path: Path, op: str, before: str, name: str) -> Registry:
    setup = OPS.get(op, ("", ""))[0]
    code = TEMPLATE.format(setup=setup, before=before, op=op)
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    return make_app(d, {"main": code, "child": "return {main = function(x) return x end}"},
                    {"act": "return function(x) return x end"})


def record(tmp_path: Path, op: str) -> Sim:
    """A history in which the op's task completed (the op's command is recorded), then a new task."""
    setup = OPS[op][0]
    s = Sim(registry(tmp_path, op, TIMER_FIRST, "a"), "app:main")
    cmds = s.step()
    if setup:
        s.complete(cmds)
        s.h.timer_fired("1").next_task()
        cmds = s.step()
    assert types(cmds)[-1] == OPS[op][1] and "StartTimer" in types(cmds), types(cmds)
    s.complete(cmds)
    s.h.next_task()
    return s


@pytest.mark.parametrize("op", list(OPS))
def test_each_command_replays(tmp_path: Path, op: str) -> None:
    s = record(tmp_path, op)
    # blocked (or closed, after continue-as-new): nothing new to do
    assert replay(registry(tmp_path, op, TIMER_FIRST, "a2"), s.h.events) == []


@pytest.mark.parametrize("op", list(OPS))
def test_changing_the_order_of_each_command_is_non_determinism(tmp_path: Path, op: str) -> None:
    s = record(tmp_path, op)
    with pytest.raises(TaskFailure) as info:
        replay(registry(tmp_path, op, TIMER_AFTER, "b"), s.h.events)
    f = info.value.failure
    assert info.value.cause == "NON_DETERMINISTIC" and f.kind == "NonDeterministic"
    assert "TimerStarted" in f.message and f.source is not None and f.source.startswith("main.lua:")


@pytest.mark.parametrize(("op", "changed", "named"), [
    ('process.spawn("app:child", "app:worker", 1)', 'process.spawn("app:child2", "app:worker", 1)',
     "workflow_type=app:child"),
    ('process.send("wf-9", "ping", {n = 1})', 'process.send("wf-9", "pong", {n = 1})', "signal_name=ping"),
    ('process.monitor("wf-9")', 'process.monitor("wf-8")', "workflow_id=wf-9"),
    ('process.terminate("wf-9")', 'process.cancel("wf-9")', "TerminateExternalWorkflowExecutionInitiated"),
    ('process.link("wf-9")', 'process.send("wf-9", "x")', "MonitorExternalWorkflowExecutionInitiated"),
    ('workflow.attrs({search = {status = "x"}})', 'workflow.attrs({memo = {status = "x"}})',
     "UpsertWorkflowSearchAttributes"),
])
def test_changing_what_a_command_does_is_non_determinism(tmp_path: Path, op: str, changed: str, named: str) -> None:
    s = record(tmp_path, op)
    with pytest.raises(TaskFailure) as info:
        replay(registry(tmp_path, changed, TIMER_FIRST, "c"), s.h.events)
    assert info.value.cause == "NON_DETERMINISTIC" and named in info.value.failure.message


def test_swapping_two_process_commands_is_non_determinism(tmp_path: Path) -> None:
    code = """\
return {{main = function()
    coroutine.spawn(function() {first} end)
    {second}
end}}
"""
    a = make_app(tmp_path, {"main": code.format(first='process.monitor("x")', second='process.send("y", "t")')})
    s = Sim(a, "app:main")
    cmds = s.step()
    assert types(cmds) == ["SignalExternalWorkflowExecution", "MonitorExternalWorkflowExecution"]
    s.complete(cmds)
    s.h.next_task()
    (tmp_path / "b").mkdir()
    b = make_app(tmp_path / "b", {"main": code.format(first='process.send("y", "t")', second='process.monitor("x")')})
    with pytest.raises(TaskFailure) as info:
        replay(b, s.h.events)
    m = info.value.failure.message
    assert "SignalExternalWorkflowExecutionInitiated(signal_name=t) was recorded" in m
    assert "MonitorExternalWorkflowExecution(workflow_id=x)" in m


def test_outcome_events_of_a_full_run_replay(tmp_path: Path) -> None:
    """Children, messages, monitors and links with every outcome, replayed from scratch at each task."""
    code = """\
local workflow = require("workflow")
return {main = function()
    process.set_options({trap_links = true})
    local events = process.events()
    local pid = process.spawn("app:child", "app:worker", 1)
    local r = workflow.exec("app:child", 2)
    local ok, err = process.send(pid, "hi")
    process.monitor("m")
    process.link("l")
    local seen = {}
    for i = 1, 3 do
        local ev = events:receive()
        seen[i] = ev.kind .. ":" .. ev.from
    end
    return {r = r, send = err and err:kind(), seen = seen}
end}
"""
    s = Sim(make_app(tmp_path, {"main": code}), "app:main")
    steps = [
        lambda h: h.op_done(1, run_id="c1"),
        lambda h: h.op_done(2).child_closed(2, result=20),
        lambda h: h.op_failed(3),
        lambda h: h.op_done(4),
        lambda h: h.op_done(5).child_closed(1, result=10, run_id="c1"),
        lambda h: h.monitored_closed("m", "COMPLETED"),
        lambda h: h.monitored_closed("l", "FAILED", failure={"message": "x", "kind": "Internal"}, link=True),
    ]
    for step in steps:
        cmds = s.step()
        s.complete(cmds)
        step(s.h)
        s.h.next_task()
    final = s.step()
    assert final[-1].attrs["result"] == {"r": 20, "send": "NotFound",
                                         "seen": ["EXIT:wf-1/run-1/1", "EXIT:m", "LINK_DOWN:l"]}
    s.complete(final)
    assert replay(make_app(tmp_path, {"main": code}), s.h.events) == []
    assert s.h.events[-1].event_type is E.WorkflowExecutionCompleted
