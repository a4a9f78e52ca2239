"""The workflow Lua API: scheduler, channels, signals, cancellation, sandbox, limits, options."""

from __future__ import annotations

from pathlib import Path

import pytest

from legato.config import Limits
from tests.unit.worker.helpers import Sim, make_app, types
from worker.replay import replay
from worker.runtime import TaskFailure


def run_once(tmp_path: Path, code: str, input: list | None = None, limits: Limits | None = None,
             modules: str = "[funcs, time, uuid, crypto, workflow, json, ctx]"):  # type: ignore[no-untyped-def]
    reg = make_app(tmp_path, {"w": code}, modules=modules)
    return Sim(reg, "app:w", input, limits=limits).step()


def result_of(tmp_path: Path, code: str, input: list | None = None) -> object:
    cmds = run_once(tmp_path, code, input)
    assert types(cmds) == ["CompleteWorkflowExecution"], cmds
    return cmds[0].attrs["result"]


def task_failure(tmp_path: Path, code: str, limits: Limits | None = None, **kw: object) -> TaskFailure:
    with pytest.raises(TaskFailure) as info:
        run_once(tmp_path, code, limits=limits, **kw)  # type: ignore[arg-type]
    return info.value


# ------------------------------------------------------------------ scheduler and channels

PIPELINE = """\
local function main(input)
    local work_queue = channel.new(10)
    local results = channel.new(10)
    local order = {}
    for w = 1, input.workers do
        coroutine.spawn(function()
            while true do
                local job, ok = work_queue:receive()
                if not ok then break end
                time.sleep(10 * time.MILLISECOND)
                table.insert(order, w .. ":" .. job)
                results:send({worker = w, job = job, result = job * 2})
            end
        end)
    end
    for j = 1, input.jobs do work_queue:send(j) end
    work_queue:close()
    local total = 0
    for _ = 1, input.jobs do
        local r = results:receive()
        total = total + r.result
    end
    return {total = total, order = order}
end
return main
"""


def drive_pipeline(tmp_path: Path) -> tuple[list, object]:
    reg = make_app(tmp_path, {"w": PIPELINE})
    sim = Sim(reg, "app:w", [{"workers": 3, "jobs": 6}])
    all_cmds = []
    cmds = sim.step()
    while types(cmds) != ["CompleteWorkflowExecution"]:
        all_cmds.append([c.to_dict() for c in cmds])
        sim.complete(cmds)
        for c in cmds:
            if c.command_type.value == "StartTimer":
                sim.h.timer_fired(c.attrs["timer_id"])
        sim.h.tick(10).next_task()
        cmds = sim.step()
    return all_cmds, cmds[0].attrs["result"]


def test_spawned_workers_and_channels_are_deterministic(tmp_path: Path) -> None:
    cmds1, r1 = drive_pipeline(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path)
    cmds2, r2 = drive_pipeline(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path)
    assert r1 == r2 and cmds1 == cmds2
    assert r1["total"] == 42  # type: ignore[index]
    assert r1["order"] == ["1:1", "2:2", "3:3", "1:4", "2:5", "3:6"]  # type: ignore[index]
    assert [len(c) for c in cmds1] == [3, 3]  # three timers at a time


def test_unbuffered_channel_rendezvous_and_close(tmp_path: Path) -> None:
    r = result_of(tmp_path, """\
        local function main()
            local ch = channel.new()
            local log = {}
            coroutine.spawn(function()
                for i = 1, 3 do ch:send(i) table.insert(log, "sent " .. i) end
                ch:close()
            end)
            while true do
                local v, ok = ch:receive()
                if not ok then break end
                table.insert(log, "got " .. v)
            end
            local v, ok = ch:receive()
            return {log = log, after_close = {v == nil, ok}}
        end
        return main
        """)
    # a send to a waiting receiver hands the value over and the sender goes on (the receiver runs next)
    assert r == {"log": ["sent 1", "got 1", "got 2", "sent 2", "sent 3", "got 3"], "after_close": [True, False]}


def test_select_picks_ready_case_and_default(tmp_path: Path) -> None:
    r = result_of(tmp_path, """\
        local function main()
            local a, b = channel.new(1), channel.new(1)
            local d = channel.select{a:case_receive(), b:case_receive(), default = true}
            b:send("B")
            local r = channel.select{a:case_receive(), b:case_receive()}
            local s = channel.select{a:case_send("x"), default = true}
            local full = channel.select{a:case_send("y"), default = true}
            return {default = d.default, which = r.channel == b, value = r.value, ok = r.ok,
                    sent = s.channel == a, full = full.default, left = a:receive()}
        end
        return main
        """)
    assert r == {"default": True, "which": True, "value": "B", "ok": True, "sent": True, "full": True, "left": "x"}


def test_select_blocks_until_a_coroutine_sends(tmp_path: Path) -> None:
    r = result_of(tmp_path, """\
        local function main()
            local a, b = channel.new(), channel.new()
            coroutine.spawn(function() b:send(2) end)
            coroutine.spawn(function() a:send(1) end)
            local first = channel.select{a:case_receive(), b:case_receive()}
            local second = channel.select{a:case_receive(), b:case_receive()}
            return {first.value, second.value}
        end
        return main
        """)
    assert r == [2, 1]


def test_time_after_in_select_and_timer_stop(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local inbox = process.listen("reply")
            local timeout = time.after("5s")
            local t = time.timer("1h")
            local r = channel.select{inbox:case_receive(), timeout:case_receive()}
            local stopped = t:stop()
            return {timed_out = r.channel == timeout, stopped = stopped, when = r.value:unix_milli()}
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    cmds = sim.step()
    assert types(cmds) == ["StartTimer", "StartTimer"]
    assert [c.attrs["start_to_fire_timeout_ms"] for c in cmds] == [5000, 3_600_000]
    sim.complete(cmds)
    sim.h.tick(5000).timer_fired("1").next_task()
    cmds = sim.step()
    assert types(cmds) == ["CancelTimer", "CompleteWorkflowExecution"]
    assert cmds[0].attrs == {"timer_id": "2"}
    assert cmds[1].attrs["result"] == {"timed_out": True, "stopped": True, "when": sim.h.now}


def test_main_returning_completes_even_with_blocked_coroutines(tmp_path: Path) -> None:
    r = result_of(tmp_path, """\
        local function main()
            coroutine.spawn(function() channel.new():receive() end)
            return "done"
        end
        return main
        """)
    assert r == "done"


def test_blocking_inside_a_plain_lua_coroutine_passes_through(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local gen = coroutine.wrap(function()
                coroutine.yield(1)
                time.sleep("1s")
                coroutine.yield(2)
            end)
            return {gen(), gen()}
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    cmds = sim.step()
    assert types(cmds) == ["StartTimer"]
    sim.complete(cmds)
    sim.h.timer_fired("1").next_task()
    assert sim.step()[0].attrs["result"] == [1, 2]


# ------------------------------------------------------------------ signals and cancellation

def test_signals_go_to_listeners_or_inbox_in_order(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local jobs = process.listen("job")
            local req = process.listen("req", {message = true})
            local inbox = process.inbox()
            local out = {}
            for i = 1, 2 do table.insert(out, (jobs:receive())) end
            local m = req:receive()
            table.insert(out, {topic = m:topic(), data = m:payload():data(), from = m:from()})
            local other = inbox:receive()
            table.insert(out, {topic = other:topic(), data = other:payload():data()})
            return out
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    assert sim.step() == []
    sim.complete([])
    sim.h.signal("other", {"x": 1}).signal("job", {"id": 1}).signal("req", "ping", sender="caller-7")
    sim.h.signal("job", {"id": 2}).next_task()
    r = sim.step()[0].attrs["result"]
    assert r == [{"id": 1}, {"id": 2}, {"topic": "req", "data": "ping", "from": "caller-7"},
                 {"topic": "other", "data": {"x": 1}}]


def test_signals_before_any_listener_are_kept(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            time.sleep("1s")
            local a = process.listen("a")
            local first = a:receive()
            local inbox = process.inbox()
            local m1 = inbox:receive()
            local m2 = inbox:receive()
            return {first, m1:topic(), m2:topic(), m2:payload():data()}
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    sim.complete(sim.step())
    sim.h.signal("b", 1).signal("a", "A").signal("c", 3).next_task()
    assert sim.step() == []
    sim.complete([])
    sim.h.timer_fired("1").next_task()
    assert sim.step()[0].attrs["result"] == ["A", "b", "c", 3]


def test_cancel_request_without_events_channel_cancels(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": "return function() process.inbox():receive() end"})
    sim = Sim(reg, "app:w")
    sim.complete(sim.step())
    sim.h.cancel_requested("user asked").next_task()
    cmds = sim.step()
    assert types(cmds) == ["CancelWorkflowExecution"]
    assert sim.ex is not None and sim.ex.closed


def test_cancel_request_is_an_event_when_listened(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        local function main()
            local events = process.events()
            local e = events:receive()
            funcs.call("app:cleanup")
            return {kind = e.kind, is_cancel = e.kind == process.event.CANCEL}
        end
        return main
        """})
    sim = Sim(reg, "app:w")
    sim.complete(sim.step())
    sim.h.cancel_requested().next_task()
    cmds = sim.step()
    assert types(cmds) == ["ScheduleActivityTask"]
    sim.complete(cmds)
    sim.h.activity_completed("1", None).next_task()
    assert sim.step()[0].attrs["result"] == {"kind": "CANCEL", "is_cancel": True}


CANCEL_FIRST = """\
local function main(input)
    if input.events then
        local e = process.events():receive()
        funcs.call("app:cleanup", e.reason)
        return "cleaned up"
    end
    if input.returns then return "done at once" end
    process.inbox():receive()
end
return main
"""


@pytest.mark.parametrize(("flags", "expected"), [
    ({"events": True}, ["ScheduleActivityTask"]),  # the code asks for events in this task: it gets the cancel
    ({}, ["CancelWorkflowExecution"]),  # it never asks: the run is canceled
    ({"returns": True}, ["CompleteWorkflowExecution"]),  # it finished in this very task
])
def test_cancel_requested_before_the_first_task(tmp_path: Path, flags: dict, expected: list[str]) -> None:  # type: ignore[type-arg]
    reg = make_app(tmp_path, {"w": CANCEL_FIRST})
    sim = Sim(reg, "app:w", [flags])
    sim.h.events.pop()  # the first WorkflowTaskStarted: the cancel request arrives before it
    sim.h.cancel_requested("early").start_task()
    cmds = sim.step()
    assert types(cmds) == expected
    if expected == ["ScheduleActivityTask"]:
        assert cmds[0].attrs["input"] == ["early"]


# ------------------------------------------------------------------ results and errors

def test_return_nil_err_fails_the_workflow(tmp_path: Path) -> None:
    cmds = run_once(tmp_path, """\
        return function(input)
            return nil, errors.new({message = "refused: " .. input.why, kind = errors.INVALID, details = {a = 1}})
        end
        """, [{"why": "no stock"}])
    assert types(cmds) == ["FailWorkflowExecution"]
    assert cmds[0].attrs["failure"] == {"message": "refused: no stock", "kind": "Invalid", "retryable": False,
                                        "details": {"a": 1}}


def test_return_nil_string_fails_the_workflow(tmp_path: Path) -> None:
    cmds = run_once(tmp_path, 'return function() return nil, "plain" end')
    assert cmds[0].attrs["failure"]["message"] == "plain"


def test_uncaught_error_fails_the_task_with_file_and_line(tmp_path: Path) -> None:
    f = task_failure(tmp_path, """\
        local function main()
            local t = nil
            return t.x
        end
        return main
        """)
    assert f.cause == "WORKFLOW_ERROR"
    assert f.failure.source == "w.lua:3"
    assert "attempt to index" in f.failure.message


def test_error_in_spawned_coroutine_fails_the_task(tmp_path: Path) -> None:
    f = task_failure(tmp_path, """\
        return function()
            coroutine.spawn(function()
                error(errors.new({message = "boom", kind = errors.CONFLICT}))
            end)
            channel.new():receive()
        end
        """)
    assert f.cause == "WORKFLOW_ERROR"
    assert f.failure.kind == "Conflict" and f.failure.message == "boom"
    assert f.failure.source == "w.lua:3"


def test_error_objects(tmp_path: Path) -> None:
    r = result_of(tmp_path, """\
        return function()
            local e = errors.new({message = "nope", kind = errors.NOT_FOUND, retryable = true})
            local ok, caught = pcall(error, e)
            return {tostring(e), e:kind(), e:retryable(), e:message(), caught == e, errors.is(e, errors.NOT_FOUND),
                    errors.TIMEOUT, errors.RATE_LIMITED}
        end
        """)
    assert r == ["NotFound: nope", "NotFound", True, "nope", True, True, "Timeout", "RateLimited"]


def test_values_round_trip(tmp_path: Path) -> None:
    value = {"list": [1, 2.5, "x", True], "nested": {"a": [{"b": None}]}, "big": 2**62, "empty": {}}
    r = result_of(tmp_path, "return function(v) return v end", [value])
    assert r == {"list": [1, 2.5, "x", True], "nested": {"a": [{}]}, "big": 2**62, "empty": {}}
    r = result_of(tmp_path, 'return function() return {json.decode(json.encode({a = {1, 2}})), json.encode("x")} end')
    assert r == [{"a": [1, 2]}, '"x"']


def test_workflow_info(tmp_path: Path) -> None:
    r = result_of(tmp_path, "return function() return workflow.info() end")
    assert r["workflow_id"] == "wf-1" and r["run_id"] == "run-1"  # type: ignore[index]
    assert r["workflow_type"] == "app:w" and r["task_queue"] == "q" and r["attempt"] == 1  # type: ignore[index]
    assert r["history_length"] == 3 and r["history_size"] > 0  # type: ignore[index]


# ------------------------------------------------------------------ funcs options

def test_activity_options_are_sent(tmp_path: Path) -> None:
    cmds = run_once(tmp_path, """\
        return function()
            local ex = funcs.new():with_options({
                ["activity.retry_policy"] = {maximum_attempts = 3, initial_interval = "2s",
                                             non_retryable_error_types = {"Invalid"}},
                ["activity.start_to_close_timeout"] = "30s",
                ["activity.schedule_to_close_timeout"] = 60 * time.SECOND,
                ["activity.heartbeat_timeout"] = 5000000000,  -- nanoseconds, as Go's durations
                ["activity.task_queue"] = "special",
            })
            ex:call("app:x", 1, nil, 3)
        end
        """)
    a = cmds[0].attrs
    assert a["task_queue"] == "special" and a["input"] == [1, None, 3]
    assert a["start_to_close_timeout_ms"] == 30_000 and a["schedule_to_close_timeout_ms"] == 60_000
    assert a["heartbeat_timeout_ms"] == 5000
    assert a["retry_policy"]["maximum_attempts"] == 3 and a["retry_policy"]["initial_interval_ms"] == 2000
    assert a["retry_policy"]["non_retryable_error_types"] == ["Invalid"]


def test_unknown_option_is_an_invalid_error_naming_the_key(tmp_path: Path) -> None:
    f = task_failure(tmp_path, """\
        return function()
            funcs.new():with_options({["activity.start_to_close"] = "1s"})
        end
        """)
    assert f.failure.kind == "Invalid" and "activity.start_to_close" in f.failure.message
    assert f.failure.source == "w.lua:2"
    f = task_failure(tmp_path, """\
        return function()
            funcs.new():with_options({["activity.retry_policy"] = {maximum_attempts = "x"}})
        end
        """)
    assert f.failure.kind == "Invalid" and "maximum_attempts" in f.failure.message


# ------------------------------------------------------------------ sandbox

@pytest.mark.parametrize(("call", "alternative"), [
    ("os.time()", "time.now()"),
    ("os.clock()", "time.now()"),
    ("os.date()", "time.now():format"),
    ("math.random()", "uuid.v4()"),
    ("math.randomseed(1)", "uuid.v4()"),
    ('io.open("x")', "activity"),
    ("io.write('x')", "activity"),
    ('os.execute("ls")', "activity"),
    ("os.exit()", "return from the main function"),
    ('os.getenv("HOME")', "workflow input"),
    ('os.remove("x")', "activity"),
    ("string.dump(print)", "bytecode"),
    ('("x").dump(print)', "bytecode"),
    ("debug.getinfo(1)", "debug library"),
    ('dofile("x.lua")', "require"),
    ('loadfile("x.lua")', "require"),
    ('load("return 1", "x", "b")', 'mode "t"'),
    ('load("\\27Lua")', "bytecode"),
    ("setmetatable({}, {__gc = print})", "__gc"),
])
def test_forbidden_calls_name_the_alternative(tmp_path: Path, call: str, alternative: str) -> None:
    f = task_failure(tmp_path, f"return function()\n  local ok = pcall(function() return {call} end)\n  "
                               "return ok\nend\n")
    assert f.cause == "FORBIDDEN_CALL", f
    assert f.failure.kind == "Forbidden"
    assert alternative in f.failure.message, f.failure.message
    assert f.failure.source == "w.lua:2"


def test_text_load_is_allowed(tmp_path: Path) -> None:
    assert result_of(tmp_path, 'return function() return load("return 1 + 1")() end') == 2


def test_require_of_an_unlisted_module_names_entry_and_modules(tmp_path: Path) -> None:
    f = task_failure(tmp_path, 'local t = require("time")\nreturn function() end\n', modules="[funcs, json]")
    assert f.cause == "FORBIDDEN_CALL"
    assert "app:w" in f.failure.message and "[funcs, json]" in f.failure.message and '"time"' in f.failure.message
    assert f.failure.source == "w.lua:1"


def test_listed_modules_are_globals_and_requireable(tmp_path: Path) -> None:
    r = result_of(tmp_path, """\
        local f = require("funcs")
        local c = require("channel")
        return function() return {f == funcs, c == channel, type(process), type(coroutine.spawn), os ~= nil} end
        """)
    assert r == [True, True, "table", "function", True]


def test_memory_limit_fails_the_task_not_the_worker(tmp_path: Path) -> None:
    code = """\
        return function()
            local t = {}
            for i = 1, 1e8 do t[i] = string.rep("x", 100) .. i end
        end
        """
    f = task_failure(tmp_path, code, limits=Limits(lua_memory_bytes=4 * 1024 * 1024))
    assert f.cause == "LIMIT_EXCEEDED" and "memory" in f.failure.message
    # pcall cannot swallow it either
    f = task_failure(tmp_path, """\
        return function()
            local ok = pcall(function()
                local t = {}
                for i = 1, 1e8 do t[i] = string.rep("x", 100) .. i end
            end)
            return ok
        end
        """, limits=Limits(lua_memory_bytes=4 * 1024 * 1024))
    assert f.cause == "LIMIT_EXCEEDED"


def test_instruction_limit_fails_the_task(tmp_path: Path) -> None:
    f = task_failure(tmp_path, """\
        return function()
            while true do
                pcall(function() while true do end end)
            end
        end
        """, limits=Limits(lua_instructions_per_task=200_000))
    assert f.cause == "LIMIT_EXCEEDED" and "instructions" in f.failure.message
    assert f.failure.source is not None and f.failure.source.startswith("w.lua:")


def test_instruction_budget_is_per_task(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        return function()
            for i = 1, 3 do
                local x = 0
                for j = 1, 60000 do x = x + j end
                time.sleep("1s")
            end
            return "ok"
        end
        """})
    sim = Sim(reg, "app:w", limits=Limits(lua_instructions_per_task=300_000))
    for i in range(3):
        cmds = sim.step()
        sim.complete(cmds)
        sim.h.timer_fired(str(i + 1)).next_task()
    assert sim.step()[0].attrs["result"] == "ok"
    final = replay(reg, sim.h.events, Limits(lua_instructions_per_task=300_000))
    assert types(final) == ["CompleteWorkflowExecution"]


def test_command_limit(tmp_path: Path) -> None:
    f = task_failure(tmp_path, "return function() for i = 1, 20 do time.after('1s') end end",
                     limits=Limits(max_commands_per_task=10))
    assert f.cause == "LIMIT_EXCEEDED" and "commands" in f.failure.message


def test_method_lookup_variants(tmp_path: Path) -> None:
    assert result_of(tmp_path, "function main() return 'global' end") == "global"
    assert result_of(tmp_path, "return {main = function() return 'table' end}") == "table"
    f = task_failure(tmp_path, "local x = 1")
    assert "method \"main\" not found" in f.failure.message


def test_pairs_order_is_the_same_in_every_runtime(tmp_path: Path) -> None:
    # Lua seeds string hashing per state: plain `pairs` would differ between runtimes (and replays)
    reg = make_app(tmp_path, {"w": """\
        return function(items)
            local t = {}
            for _, k in ipairs({"zeta", "alpha", "mu", "beta", "omega", "kappa", "delta", "pi"}) do t[k] = true end
            t[2], t[1] = "two", "one"
            for k in pairs(t) do coroutine.spawn(function() funcs.call("app:" .. tostring(k)) end) end
            for k, v in pairs(items) do coroutine.spawn(function() funcs.call("app:item_" .. k, v) end) end
            channel.new():receive()
        end
        """})
    seen = set()
    for _ in range(12):
        cmds = Sim(reg, "app:w", [{"x": 1, "y": 2, "a": 3}], check_replay=False).step()
        seen.add(tuple(c.attrs["activity_type"] for c in cmds))
    assert seen == {("app:1", "app:2", "app:alpha", "app:beta", "app:delta", "app:kappa", "app:mu", "app:omega",
                     "app:pi", "app:zeta", "app:item_a", "app:item_x", "app:item_y")}
    assert result_of(tmp_path, "return function() return json.encode({b = 1, a = {d = 1, c = 2}}) end") == \
        '{"a":{"c":2,"d":1},"b":1}'


def test_next_order_is_the_same_in_every_runtime(tmp_path: Path) -> None:
    # `for k, v in next, t` and `next(t)` must not depend on the runtime's string hash seed either
    code = """\
        return function()
            local t = {}
            for _, k in ipairs({"zeta", "alpha", "mu", "beta", "omega", "kappa", "delta", "pi"}) do t[k] = k end
            t[2], t[1] = "two", "one"
            local seen = {}
            for k, v in next, t do seen[#seen + 1] = tostring(k) .. "=" .. v end
            t.beta = nil  -- a field may be cleared during a traversal
            local first = next(t)
            local after_alpha = next(t, "alpha")
            local plain = {}
            for k in next, {10, 20, 30} do plain[#plain + 1] = k end
            return {seen = seen, first = first, after_alpha = after_alpha, plain = plain, empty = next({}) == nil}
        end
        """
    expected = {"seen": ["1=one", "2=two", "alpha=alpha", "beta=beta", "delta=delta", "kappa=kappa", "mu=mu",
                         "omega=omega", "pi=pi", "zeta=zeta"],
                "first": 1, "after_alpha": "delta", "plain": [1, 2, 3], "empty": True}
    for _ in range(12):  # a new runtime (and hash seed) each time
        assert result_of(tmp_path, code) == expected
