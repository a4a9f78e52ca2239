"""The `process` API in workflow code (docs/processes.md): children, messages, monitors, links,
terminate, cancel, continue-as-new and spawner options, against hand-built histories. Every Sim
step also checks that a full replay gives the same commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from legato.commands import Command
from legato.events import EventType as E
from tests.unit.worker.helpers import Sim, make_app, types
from worker.entries import Registry, load_registry
from worker.runtime import TaskFailure


def sim(tmp_path: Path, code: str, input: list[Any] | None = None, **kw: Any) -> Sim:
    reg = make_app(tmp_path, {"main": code, "child": "return {main = function(x) return x end}"})
    return Sim(reg, "app:main", input, **kw)


def run(s: Sim) -> list[Command]:
    cmds = s.step()
    s.complete(cmds)
    return cmds


def result(cmds: list[Command]) -> Any:
    assert types(cmds) == ["CompleteWorkflowExecution"], cmds
    return cmds[0].attrs["result"]


def failure(cmds: list[Command]) -> dict[str, Any]:
    assert types(cmds) == ["FailWorkflowExecution"], cmds
    f: dict[str, Any] = cmds[0].attrs["failure"]
    return f


# ---------------------------------------------------------------- children


SPAWN = """\
local function main(x)
    local events = process.events()
    local pid, err = process.spawn("app:child", "app:worker", {n = x}, "two")
    if err then return {err = err:message()} end
    local ev = events:receive()
    local e = ev.result.error
    return {pid = pid, me = process.pid(), kind = ev.kind, from = ev.from, value = ev.result.value,
            err = e and {kind = e:kind(), retryable = e:retryable(), message = e:message()}}
end
return {main = main}
"""


def test_spawn_starts_a_child_and_its_exit_arrives_on_events(tmp_path: Path) -> None:
    s = sim(tmp_path, SPAWN, [3], context={"tenant": "t-1"})
    c1 = run(s)
    assert types(c1) == ["StartChildWorkflowExecution"]
    a = c1[0].attrs
    assert a["seq"] == 1 and a["workflow_type"] == "app:child" and a["task_queue"] == "q"
    assert a["input"] == [{"n": 3}, "two"] and a["namespace"] == "default"
    assert a["workflow_id"] == "wf-1/run-1/1"  # generated: unique per run and command
    o = a["options"]
    assert o["id_conflict_policy"] == "fail" and o["parent_close_policy"] == "terminate"
    assert o["context"] == {"tenant": "t-1"}  # children inherit the context
    assert o["start_messages"] == []
    s.h.op_done(1, run_id="child-run").next_task()
    assert run(s) == []  # spawn returned the pid; waiting for the EXIT
    s.h.child_closed(1, result={"n": 3}, run_id="child-run").next_task()
    assert result(run(s)) == {"pid": "wf-1/run-1/1", "me": "wf-1", "kind": "EXIT", "from": "wf-1/run-1/1",
                              "value": {"n": 3}}


def test_a_childs_error_reaches_the_parent_intact(tmp_path: Path) -> None:
    s = sim(tmp_path, SPAWN, [1])
    run(s)
    s.h.op_done(1).child_closed(1, E.ChildWorkflowExecutionFailed, failure={
        "message": "no such order", "kind": "NotFound", "retryable": False}).next_task()
    r = result(run(s))
    assert r["err"] == {"kind": "NotFound", "retryable": False, "message": "no such order"}
    assert "value" not in r


@pytest.mark.parametrize(("etype", "kind"), [
    (E.ChildWorkflowExecutionTerminated, "Terminated"), (E.ChildWorkflowExecutionCanceled, "Canceled"),
    (E.ChildWorkflowExecutionTimedOut, "Timeout")])
def test_abnormal_child_ends_give_errors(tmp_path: Path, etype: E, kind: str) -> None:
    s = sim(tmp_path, SPAWN, [1])
    run(s)
    s.h.op_done(1).child_closed(1, etype, failure=None).next_task()
    assert result(run(s))["err"]["kind"] == kind


def test_spawn_failure_returns_the_error(tmp_path: Path) -> None:
    s = sim(tmp_path, SPAWN, [1])
    run(s)
    s.h.op_failed(1, {"message": "already running", "kind": "AlreadyExists", "retryable": False}).next_task()
    assert result(run(s)) == {"err": "already running"}


def test_child_started_and_closed_in_one_batch(tmp_path: Path) -> None:
    s = sim(tmp_path, SPAWN, [1])
    run(s)
    s.h.op_done(1).child_closed(1, result=5).next_task()
    assert result(run(s))["value"] == 5


EXEC = """\
local workflow = require("workflow")
local function main()
    local a, e1 = process.exec("app:child", "app:worker", "x")
    local b, e2 = workflow.exec("app:child", {y = 1})
    return {a = a, b = b, e2 = e2 and {e2:kind(), e2:retryable(), e2:message()}}
end
return {main = main}
"""


def test_exec_waits_for_the_result_and_errors_keep_their_kind(tmp_path: Path) -> None:
    s = sim(tmp_path, EXEC)
    c1 = run(s)
    assert types(c1) == ["StartChildWorkflowExecution"] and c1[0].attrs["input"] == ["x"]
    s.h.op_done(1).next_task()
    assert run(s) == []  # started: exec still waits
    s.h.child_closed(1, result="X").next_task()
    c3 = run(s)
    assert types(c3) == ["StartChildWorkflowExecution"]
    assert c3[0].attrs["task_queue"] == "q" and c3[0].attrs["input"] == [{"y": 1}]
    s.h.op_done(2).child_closed(2, E.ChildWorkflowExecutionFailed, failure={
        "message": "bad input", "kind": "Invalid", "retryable": True}).next_task()
    assert result(run(s)) == {"a": "X", "e2": ["Invalid", True, "bad input"]}


def test_exec_start_failure(tmp_path: Path) -> None:
    s = sim(tmp_path, EXEC)
    run(s)
    s.h.op_failed(1).next_task()
    c = run(s)  # a is nil; workflow.exec is next
    assert types(c) == ["StartChildWorkflowExecution"]


def two_queue_registry(tmp_path: Path, main: str) -> Registry:
    (tmp_path / "main.lua").write_text(main)
    (tmp_path / "other.lua").write_text("return {main = function(x) return x end}")
    (tmp_path / "app.yaml").write_text("""\
version: '1.0'
namespace: app
entries:
  - {name: worker, kind: temporal.worker, task_queue: q}
  - {name: billing, kind: temporal.worker, task_queue: billing-q, client: app:client}
  - {name: client, kind: temporal.client, namespace: finance}
  - {name: main, kind: workflow.lua, source: file://main.lua, modules: [workflow],
     meta: {temporal: {workflow: {worker: app:worker}}}}
  - {name: other, kind: workflow.lua, source: file://other.lua, meta: {temporal: {workflow: {worker: app:billing}}}}
  - {name: fn, kind: function.lua, source: file://other.lua}
""")
    return load_registry(tmp_path / "app.yaml")


def test_host_gives_the_task_queue_and_workflow_exec_follows_the_binding(tmp_path: Path) -> None:
    reg = two_queue_registry(tmp_path, """\
local workflow = require("workflow")
return {main = function()
    coroutine.spawn(function() process.spawn("app:anything", "app:billing") end)
    coroutine.spawn(function() workflow.exec("app:other") end)
    coroutine.spawn(function() workflow.exec("app:unbound") end)
    channel.new():receive()
end}
""")
    cmds = Sim(reg, "app:main").step()
    assert types(cmds) == ["StartChildWorkflowExecution"] * 3
    assert [(c.attrs["task_queue"], c.attrs["namespace"]) for c in cmds] == [
        ("billing-q", "finance"), ("billing-q", "finance"), ("q", "default")]


def test_a_host_of_another_kind_is_an_invalid_error_and_no_command(tmp_path: Path) -> None:
    reg = two_queue_registry(tmp_path, """\
return {main = function()
    local pid, err = process.spawn("app:x", "app:fn")
    return {err:kind(), err:message(), pid == nil}
end}
""")
    cmds = Sim(reg, "app:main").step()
    kind, m1, no_pid = result(cmds)
    assert kind == "Invalid" and no_pid
    assert "process.spawn: host 'app:fn' is a function.lua entry" in m1 and "task queue name" in m1


def test_a_host_that_names_no_entry_is_the_task_queue(tmp_path: Path) -> None:
    """Wippy passes the host through as the child's task queue."""
    reg = two_queue_registry(tmp_path, """\
return {main = function()
    process.spawn_monitored("app:x", "plain-queue")
end}
""")
    cmds = Sim(reg, "app:main").step()
    assert types(cmds) == ["StartChildWorkflowExecution"]
    assert (cmds[0].attrs["task_queue"], cmds[0].attrs["namespace"]) == ("plain-queue", "default")


# ---------------------------------------------------------------- spawner options

OPTIONS = """\
return {main = function()
    local base = process.with_options({
        ["temporal.workflow.execution_timeout"] = "24h",
        ["temporal.workflow.run_timeout"] = 3600000 * time.MILLISECOND,
        ["temporal.workflow.task_timeout"] = "30s",
        ["temporal.workflow.id_reuse_policy"] = "reject_duplicate",
        ["temporal.workflow.retry_policy"] = {initial_interval = time.SECOND, backoff_coefficient = 2.0,
                                              maximum_interval = 300000000000, maximum_attempts = 3},
        ["temporal.workflow.cron_schedule"] = "0 */6 * * *",
        ["temporal.workflow.search_attributes"] = {customer_id = "cust-123", tags = {"a", "b"}},
        ["temporal.workflow.memo"] = {source = "api"},
        ["temporal.workflow.start_delay"] = "5m",
        ["temporal.workflow.parent_close_policy"] = "abandon",
        ["temporal.workflow.wait_for_cancellation"] = true,
        ["temporal.workflow.enable_eager_start"] = true,
        ["temporal.workflow.namespace"] = "other-ns",
        ["temporal.workflow.task_queue"] = "special",
    })
    local named = base:with_name("counter-1")
        :with_message("increment", {amount = 2})
        :with_message("increment", {amount = 1})
        :with_context({user_id = "u-1"})
    coroutine.spawn(function() named:spawn_monitored("app:child", "app:worker", {initial = 0}) end)
    coroutine.spawn(function() base:spawn("app:child", "app:worker") end)
    coroutine.spawn(function()
        process.with_context({request_id = "r-1"})
            :with_options({["temporal.workflow.id"] = "order-1", ["temporal.workflow.id_conflict_policy"] = "fail"})
            :spawn("app:child", "app:worker")
    end)
    coroutine.spawn(function()
        process.with_options({["temporal.workflow.id"] = "order-2",
                              ["temporal.workflow.execution_error_when_already_started"] = true})
            :spawn("app:child", "app:worker")
    end)
    process.with_name("n-3"):with_options({["temporal.workflow.id_conflict_policy"] = "terminate_existing"})
        :spawn("app:child", "app:worker")
end}
"""


def test_every_spawner_option_reaches_the_command(tmp_path: Path) -> None:
    s = sim(tmp_path, OPTIONS, context={"tenant": "t"})
    cmds = s.step()
    assert types(cmds) == ["StartChildWorkflowExecution"] * 5
    # main runs first, until it blocks; then the spawned coroutines in order
    terminate, named, base, ctx_first, error_when = (c.attrs for c in cmds)
    assert named["workflow_id"] == "counter-1" and named["task_queue"] == "special"
    assert named["namespace"] == "other-ns" and named["input"] == [{"initial": 0}]
    o = named["options"]
    assert o == {
        "execution_timeout_ms": 86_400_000, "run_timeout_ms": 3_600_000, "task_timeout_ms": 30_000,
        "id_reuse_policy": "reject_duplicate", "id_conflict_policy": "use_existing",
        "execution_error_when_already_started": False,
        "retry_policy": {"initial_interval_ms": 1000, "backoff_coefficient": 2.0, "maximum_interval_ms": 300_000,
                         "maximum_attempts": 3, "non_retryable_error_types": []},
        "cron_schedule": "0 */6 * * *", "memo": {"source": "api"},
        "search_attributes": {"customer_id": "cust-123", "tags": ["a", "b"]}, "start_delay_ms": 300_000,
        "context": {"tenant": "t", "user_id": "u-1"},
        "start_messages": [{"topic": "increment", "payload": {"amount": 2}},
                           {"topic": "increment", "payload": {"amount": 1}}],
        "parent_close_policy": "abandon", "wait_for_cancellation": True, "enable_eager_start": True,
    }
    # the base spawner is unchanged by what was chained onto it
    assert base["workflow_id"] == "wf-1/run-1/3" and base["options"]["id_conflict_policy"] == "fail"
    assert base["options"]["start_messages"] == [] and base["options"]["context"] == {"tenant": "t"}
    assert ctx_first["workflow_id"] == "order-1" and ctx_first["options"]["id_conflict_policy"] == "fail"
    assert ctx_first["options"]["context"] == {"tenant": "t", "request_id": "r-1"}
    assert ctx_first["task_queue"] == "q" and ctx_first["namespace"] == "default"
    assert error_when["options"]["id_conflict_policy"] == "fail"
    assert error_when["options"]["execution_error_when_already_started"] is True
    assert terminate["workflow_id"] == "n-3" and terminate["options"]["id_conflict_policy"] == "terminate_existing"


@pytest.mark.parametrize(("call", "needle"), [
    ('process.with_options({["temporal.workflow.idd"] = "x"})', "unknown start option 'temporal.workflow.idd'"),
    ('process.with_options({["temporal.workflow.run_timeout"] = "soon"})', "temporal.workflow.run_timeout"),
    ('process.with_options({["temporal.workflow.id_conflict_policy"] = "maybe"})',
     "temporal.workflow.id_conflict_policy: expected one of"),
    ('process.with_options({["temporal.workflow.cron_schedule"] = "every day"})', "temporal.workflow.cron_schedule"),
    ('process.with_options({["temporal.workflow.retry_policy"] = {tries = 3}})', "unknown retry policy key 'tries'"),
    ('process.with_options({["temporal.workflow.enable_eager_start"] = "yes"})',
     "temporal.workflow.enable_eager_start: expected true or false"),
    ('process.with_options({["temporal.workflow.search_attributes"] = {x = {y = 1}}})',
     "temporal.workflow.search_attributes.x"),
    ('process.with_options({["temporal.workflow.id"] = "@caller"})', "cannot start with '@'"),
    ('process.with_name("")', "with_name: expected a non-empty string"),
    ('process.with_message(7, {})', "with_message: the topic: expected a non-empty string"),
    ('process.with_context("x")', "with_context: expected a table"),
    ('process.with_options({}):with_options({["activity.retry_policy"] = {}})', "unknown start option"),
    ('process:with_options({})', "call it as process.with_options(...) (a dot)"),
])
def test_bad_options_are_invalid_errors_naming_the_key(tmp_path: Path, call: str, needle: str) -> None:
    s = sim(tmp_path, f"""\
return {{main = function()
    local ok, err = pcall(function() return {call} end)
    return {{ok = ok, kind = err:kind(), message = err:message()}}
end}}
""")
    r = result(s.step())
    assert r["ok"] is False and r["kind"] == "Invalid"
    assert needle in r["message"], r["message"]


def test_an_uncaught_bad_option_fails_the_task_naming_the_key(tmp_path: Path) -> None:
    s = sim(tmp_path, 'return {main = function() process.with_options({nope = 1}) end}')
    with pytest.raises(TaskFailure) as info:
        s.step()
    assert info.value.cause == "WORKFLOW_ERROR" and info.value.failure.kind == "Invalid"
    assert "unknown start option 'nope'" in info.value.failure.message
    assert info.value.failure.source == "main.lua:1"


# ---------------------------------------------------------------- messages

SEND = """\
return {main = function(target)
    local ok, err = process.send(target, "ping", {data = "hello"})
    local ok2, err2 = process.send("@caller-1", "pong")
    return {ok = ok, ok2 = ok2, err2 = err2 and {err2:kind(), err2:retryable()}}
end}
"""


def test_send_signals_another_workflow_and_reports_not_found(tmp_path: Path) -> None:
    s = sim(tmp_path, SEND, ["wf-9"])
    c1 = run(s)
    assert types(c1) == ["SignalExternalWorkflowExecution"]
    assert c1[0].attrs == {"seq": 1, "namespace": "default", "workflow_id": "wf-9", "run_id": "",
                           "signal_name": "ping", "input": {"data": "hello"}, "sender": "wf-1"}
    s.h.op_done(1).next_task()
    c2 = run(s)
    # a send to a non-durable process (a caller) does not wait for its outcome: the workflow goes on
    # in the same task (Wippy), and the outcome, when it comes, changes nothing
    assert types(c2) == ["SignalExternalWorkflowExecution", "CompleteWorkflowExecution"]
    assert c2[0].attrs["workflow_id"] == "@caller-1" and c2[0].attrs["input"] is None
    assert result(c2[1:]) == {"ok": True, "ok2": True}


def test_sends_to_a_caller_all_go_in_one_task_and_replay(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
return {main = function()
    for i = 1, 3 do process.send("@caller-1", "item", i) end
    return "sent"
end}
""")
    c = run(s)
    assert types(c) == ["SignalExternalWorkflowExecution"] * 3 + ["CompleteWorkflowExecution"]
    assert [x.attrs["input"] for x in c[:3]] == [1, 2, 3]


def test_send_checks_its_arguments(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
return {main = function()
    local _, e1 = pcall(process.send, nil, "t")
    local _, e2 = pcall(process.send, "wf", "")
    return {e1:kind(), e1:message(), e2:message()}
end}
""")
    kind, m1, m2 = result(s.step())
    assert kind == "Invalid" and "process.send: expected a pid" in m1 and "topic" in m2


def test_replies_to_the_sender_of_a_message(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
return {main = function()
    local msg = process.listen("get_status", {message = true}):receive()
    local ok = process.send(msg:from(), "status_response", {progress = 75})
    return ok
end}
""")
    assert run(s) == []
    s.h.signal("get_status", {}, sender="@caller-7").next_task()
    c = run(s)
    assert c[0].attrs["workflow_id"] == "@caller-7" and c[0].attrs["signal_name"] == "status_response"
    assert result(c[1:]) is True  # in the same task: a send to a caller does not wait


# ---------------------------------------------------------------- monitors and links

MONITOR = """\
return {main = function(pid)
    local events = process.events()
    local ok, err = process.monitor(pid)
    if not ok then return {err = err:kind()} end
    local ev = events:receive()
    local e = ev.result.error
    return {kind = ev.kind, from = ev.from, value = ev.result.value, err = e and e:kind()}
end}
"""


def test_monitor_gets_exit_when_the_workflow_completes(tmp_path: Path) -> None:
    s = sim(tmp_path, MONITOR, ["other"])
    c1 = run(s)
    assert types(c1) == ["MonitorExternalWorkflowExecution"]
    assert c1[0].attrs == {"seq": 1, "namespace": "default", "workflow_id": "other", "link": False, "remove": False}
    s.h.op_done(1).next_task()
    assert run(s) == []
    s.h.monitored_closed("other", "COMPLETED", result={"done": 1}).next_task()
    assert result(run(s)) == {"kind": "EXIT", "from": "other", "value": {"done": 1}}


def test_monitor_of_a_closed_run_and_of_a_terminated_one(tmp_path: Path) -> None:
    s = sim(tmp_path, MONITOR, ["other"])
    run(s)
    s.h.op_done(1).monitored_closed("other", "TERMINATED", failure={
        "message": "terminated by x", "kind": "Terminated", "retryable": False}).next_task()
    assert result(run(s)) == {"kind": "EXIT", "from": "other", "err": "Terminated"}


def test_monitor_of_an_unknown_workflow_fails(tmp_path: Path) -> None:
    s = sim(tmp_path, MONITOR, ["ghost"])
    run(s)
    s.h.op_failed(1).next_task()
    assert result(run(s)) == {"err": "NotFound"}


UNMONITOR = """\
local time = require("time")
return {main = function(pid)
    local events = process.events()
    process.monitor(pid)
    process.unmonitor(pid)
    process.monitor("b")
    local ev = events:receive()
    return ev.from
end}
"""


def test_a_close_after_unmonitor_is_dropped(tmp_path: Path) -> None:
    s = sim(tmp_path, UNMONITOR, ["a"])
    run(s)
    s.h.op_done(1).next_task()
    c = run(s)
    assert c[0].attrs["remove"] is True and c[0].attrs["workflow_id"] == "a"
    # "a" closes after the unmonitor was issued (whatever history did with it): dropped
    s.h.monitored_closed("a").op_done(2).next_task()
    run(s)
    s.h.op_done(3).monitored_closed("b").next_task()
    assert result(run(s)) == "b"


LINK = """\
return {main = function(pid, trap)
    if trap then process.set_options({trap_links = true}) end
    local events = process.events()
    local ok = process.link(pid)
    local ev = events:receive()
    return {kind = ev.kind, from = ev.from, err = ev.result.error:kind(), trap = process.get_options().trap_links}
end}
"""


def test_link_down_is_an_event_when_links_are_trapped(tmp_path: Path) -> None:
    s = sim(tmp_path, LINK, ["other", True])
    c = run(s)
    assert c[0].attrs["link"] is True and c[0].attrs["remove"] is False
    s.h.op_done(1).monitored_closed("other", "FAILED", failure={"message": "boom", "kind": "Internal"},
                                    link=True).next_task()
    assert result(run(s)) == {"kind": "LINK_DOWN", "from": "other", "err": "Internal", "trap": True}


def test_link_down_without_trap_ends_the_workflow_naming_the_pid(tmp_path: Path) -> None:
    s = sim(tmp_path, LINK, ["other", False])
    run(s)
    s.h.op_done(1).monitored_closed("other", "TERMINATED", failure={"message": "killed", "kind": "Terminated"},
                                    link=True).next_task()
    f = failure(run(s))
    assert "linked process other ended abnormally" in f["message"] and "killed" in f["message"]
    assert f["kind"] == "Terminated" and f["retryable"] is False


def test_unlink_drops_a_later_link_down(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local time = require("time")
return {main = function()
    process.link("a")
    process.unlink("a")
    time.sleep("1h")
    return "alive"
end}
""")
    run(s)
    s.h.op_done(1).next_task()
    c = run(s)
    assert c[0].attrs == {"seq": 2, "namespace": "default", "workflow_id": "a", "link": True, "remove": True}
    s.h.op_done(2).monitored_closed("a", "FAILED", link=True).next_task()
    assert types(run(s)) == ["StartTimer"]
    s.h.timer_fired("1").next_task()
    assert result(run(s)) == "alive"


def test_set_options_checks_keys_and_values(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
return {main = function()
    local _, e1 = pcall(process.set_options, {trap_link = true})
    local _, e2 = pcall(process.set_options, {trap_links = "yes"})
    return {e1:kind(), e1:message(), e2:message(), process.set_options({trap_links = false})}
end}
""")
    kind, m1, m2, ok = result(s.step())
    assert kind == "Invalid" and 'unknown option "trap_link"' in m1 and "trap_links must be a boolean" in m2
    assert ok is True


# ---------------------------------------------------------------- terminate, cancel

def test_terminate_and_cancel_with_deadline(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
return {main = function()
    local ok1 = process.terminate("a")
    local ok2, err2 = process.cancel("b", "5s")
    local ok3 = process.cancel("c")
    return {ok1, err2:kind(), ok3}
end}
""")
    c1 = run(s)
    assert types(c1) == ["TerminateExternalWorkflowExecution"]
    assert c1[0].attrs == {"seq": 1, "namespace": "default", "workflow_id": "a",
                           "reason": "terminated by workflow wf-1"}
    s.h.op_done(1).next_task()
    c2 = run(s)
    assert types(c2) == ["RequestCancelExternalWorkflowExecution"]
    assert c2[0].attrs["deadline_ms"] == 5000 and c2[0].attrs["workflow_id"] == "b"
    s.h.op_failed(2).next_task()
    c3 = run(s)
    assert c3[0].attrs["deadline_ms"] == 0
    s.h.op_done(3).next_task()
    assert result(run(s)) == [True, "NotFound", True]


WAIT_CANCEL = """\
return {main = function(wait)
    local events = process.events()
    local pid = process.with_options({["temporal.workflow.wait_for_cancellation"] = wait})
        :spawn("app:child", "app:worker")
    local ok = process.cancel(pid, "5s")
    local r = channel.select({events:case_receive(), default = true})
    return {ok = ok, closed = not r.default, kind = r.value and r.value.kind}
end}
"""


def _cancel_child(tmp_path: Path, wait: bool) -> Sim:
    s = sim(tmp_path, WAIT_CANCEL, [wait])
    assert types(run(s)) == ["StartChildWorkflowExecution"]
    s.h.op_done(1).next_task()
    assert types(run(s)) == ["RequestCancelExternalWorkflowExecution"]
    return s


def test_cancel_of_a_child_without_wait_for_cancellation_returns_once_delivered(tmp_path: Path) -> None:
    s = _cancel_child(tmp_path, False)
    s.h.op_done(2).next_task()
    assert result(run(s)) == {"ok": True, "closed": False}


def test_cancel_with_wait_for_cancellation_returns_once_the_child_closed(tmp_path: Path) -> None:
    s = _cancel_child(tmp_path, True)
    s.h.op_done(2).next_task()
    assert run(s) == []  # delivered, but the child is still open: process.cancel still waits
    s.h.child_closed(1, result="bye").next_task()
    assert result(run(s)) == {"ok": True, "closed": True, "kind": "EXIT"}  # and EXIT is on events()


def test_cancel_with_wait_for_cancellation_of_a_child_closed_meanwhile(tmp_path: Path) -> None:
    s = _cancel_child(tmp_path, True)
    s.h.op_done(2).child_closed(1, result="bye").next_task()
    assert result(run(s)) == {"ok": True, "closed": True, "kind": "EXIT"}


# ---------------------------------------------------------------- events ordering, dedupe

def test_exit_of_a_child_that_is_also_monitored_is_delivered_once(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local time = require("time")
return {main = function()
    local events = process.events()
    local pid = process.spawn("app:child", "app:worker")
    process.monitor(pid)
    local first = events:receive()
    time.sleep("1h")
    return {first.from, events:len()}
end}
""")
    run(s)
    s.h.op_done(1, run_id="r-c").next_task()
    run(s)
    s.h.op_done(2).child_closed(1, result=1, run_id="r-c").monitored_closed("wf-1/run-1/1", run_id="r-c").next_task()
    assert types(run(s)) == ["StartTimer"]
    s.h.timer_fired("1").next_task()
    assert result(run(s)) == ["wf-1/run-1/1", 0]


def test_events_before_process_events_is_called_are_kept(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local time = require("time")
return {main = function()
    process.spawn("app:child", "app:worker")
    time.sleep("1h")
    local ev = process.events():receive()
    return ev.kind
end}
""")
    run(s)
    s.h.op_done(1).next_task()
    run(s)
    s.h.child_closed(1, result=1).next_task()
    assert run(s) == []
    s.h.timer_fired("1").next_task()
    assert result(run(s)) == "EXIT"


# ---------------------------------------------------------------- continue-as-new

def test_upgrade_continues_as_new(tmp_path: Path) -> None:
    s = sim(tmp_path, """\
local time = require("time")
return {main = function(n)
    local t = time.after("1h")
    if n < 3 then process.upgrade(nil, n + 1, "more") end
    error("not reached")
end}
""", [1])
    c = s.step()
    assert types(c) == ["StartTimer", "ContinueAsNewWorkflowExecution"]
    assert c[1].attrs == {"workflow_type": "app:main", "input": [2, "more"]}


def test_upgrade_to_another_workflow(tmp_path: Path) -> None:
    reg = two_queue_registry(tmp_path, 'return {main = function() process.upgrade("app:other", {x = 1}) end}')
    c = Sim(reg, "app:main").step()
    assert c[0].attrs == {"workflow_type": "app:other", "input": [{"x": 1}], "task_queue": "billing-q"}


def test_upgrade_checks_its_source(tmp_path: Path) -> None:
    s = sim(tmp_path, 'return {main = function() local _, e = pcall(process.upgrade, 5) return e:message() end}')
    assert "process.upgrade: the first argument must be nil" in result(s.step())
