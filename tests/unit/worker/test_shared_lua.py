"""Runs sharing one Lua state (worker.runtime.LuaVM, issue 13): isolation, memory, eviction."""

from __future__ import annotations

from pathlib import Path

import pytest

from legato.commands import CommandType
from legato.config import Limits
from tests.unit.worker.helpers import History, make_app, types
from worker.cache import WorkflowCache
from worker.replay import WorkflowExecution, new_execution
from worker.runtime import LuaVM, TaskFailure

C = CommandType

# Run "a" changes everything it can reach; run "b" reports what it sees. Both wait for a signal in
# between, so that "b" starts after "a" changed things and "a" goes on after "b" looked.
MEDDLER = """\
local captured = 0
local function bump() captured = captured + 1 return captured end
return function(role)
    if role == "a" then
        leaked = "from a"
        _G.also_leaked = true
        function string.shout(s) return s:upper() .. "!" end
        string.upper = function() return "hijacked" end
        math.pi = 3
        table.insert = nil
        rawset(os, "leak", 1)
        getmetatable(io).__index = function() return "hijacked" end
        process.send = nil
        errors.NOT_FOUND = "hijacked"
        coroutine.spawn = nil
        channel.new = nil
        time.now = function() return "hijacked" end
        funcs.call = nil
        setmetatable(_G, {__index = function(_, k) return "hijacked " .. k end})
        bump()
        bump()
    end
    local v = process.listen("go"):receive()
    return {
        role = role,
        leaked = rawget(_G, "leaked"),
        also = rawget(_G, "also_leaked"),
        shout = pcall(function() return ("x"):shout() end),
        upper = ("abc"):upper(),
        pi = math.pi == 3,
        insert = table.insert ~= nil,
        os_leak = rawget(os, "leak"),
        io_open = type(io.open),
        send = process.send ~= nil,
        not_found = errors.NOT_FOUND,
        spawn = coroutine.spawn ~= nil,
        chan = channel.new ~= nil,
        now = type(time.now()),
        call = funcs.call ~= nil,
        captured = bump(),
        signal = v,
    }
end
"""


def start(reg, workflow_id: str, role: str, limits: Limits | None = None) -> tuple[WorkflowExecution, History]:  # type: ignore[no-untyped-def]
    h = History("app:w", [role])
    ex = new_execution(reg, "app:w", limits or Limits(), workflow_id=workflow_id, run_id=f"run-{workflow_id}",
                       task_queue="q")
    assert ex.process(h.events) == []
    return ex, h


def resume(ex: WorkflowExecution, h: History, signal: object = "go") -> list:  # type: ignore[type-arg]
    h.complete_task([])
    h.signal("go", signal).next_task()
    assert ex.can_continue(h.events, h.last_completed_started)
    return ex.process(h.events)


def test_runs_in_one_lua_state_cannot_see_or_change_each_other(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": MEDDLER})
    a, ha = start(reg, "a", "a")
    b, hb = start(reg, "b", "b")
    assert a.vm is b.vm  # one Lua state for the thread's runs
    b_cmds = resume(b, hb, "for b")
    a_cmds = resume(a, ha, "for a")
    assert types(a_cmds) == types(b_cmds) == ["CompleteWorkflowExecution"]
    seen_by_a = a_cmds[0].attrs["result"]
    seen_by_b = b_cmds[0].attrs["result"]
    # a sees its own changes (its globals, its string, math, os, io, module tables, its upvalues)
    assert seen_by_a == {
        "role": "a", "leaked": "from a", "also": True, "shout": True, "upper": "hijacked", "pi": True,
        "insert": False, "os_leak": 1, "io_open": "string", "send": False, "not_found": "hijacked", "spawn": False,
        "chan": False, "now": "string", "call": False, "captured": 3, "signal": "for a",
    }
    # b sees none of them, and its own copy of the chunk's upvalue
    assert seen_by_b == {
        "role": "b", "shout": False, "upper": "ABC", "pi": False, "insert": True, "io_open": "function", "send": True,
        "not_found": "NotFound", "spawn": True, "chan": True, "now": "table", "call": True, "captured": 1,
        "signal": "for b",
    }


def test_timers_and_activities_of_one_run_never_wake_another(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        return function(name)
            local v = funcs.call("app:f", name)
            time.sleep("1s")
            return name .. ":" .. tostring(v)
        end
        """})
    runs = []
    for name in ("a", "b"):
        h = History("app:w", [name])
        ex = new_execution(reg, "app:w", Limits(), workflow_id=name, run_id=f"run-{name}", task_queue="q")
        cmds = ex.process(h.events)
        assert types(cmds) == ["ScheduleActivityTask"] and cmds[0].attrs["activity_id"] == "1"  # the same ids
        h.complete_task(cmds)
        runs.append((ex, h))
    (a, ha), (b, hb) = runs
    ha.activity_completed("1", "A").next_task()
    cmds = a.process(ha.events)
    assert types(cmds) == ["StartTimer"] and cmds[0].attrs["timer_id"] == "1"
    ha.complete_task(cmds)
    ha.timer_fired("1").next_task()
    assert a.process(ha.events)[0].attrs["result"] == "a:A"
    # b's activity "1" and timer "1" are its own: still pending
    hb.activity_completed("1", "B").next_task()
    cmds = b.process(hb.events)
    assert types(cmds) == ["StartTimer"]
    hb.complete_task(cmds)
    hb.timer_fired("1").next_task()
    assert b.process(hb.events)[0].attrs["result"] == "b:B"


HOG = """\
return function(mb)
    local keep = {}
    while true do
        local n = process.listen("grow"):receive()
        if n == 0 then return #keep end
        for i = 1, n * 1024 do keep[#keep + 1] = string.rep("x", 1000) .. i end
    end
end
"""


def test_a_run_over_its_memory_limit_fails_alone(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": HOG})
    limits = Limits(lua_memory_bytes=8 * 1024 * 1024)
    vm = LuaVM()
    runs = []
    for name in ("hog", "calm"):
        h = History("app:w", [0])
        ex = WorkflowExecution(reg.workflow_for_type("app:w"), reg, limits, workflow_id=name, run_id=f"run-{name}",  # type: ignore[arg-type]
                               task_queue="q", vm=vm)
        assert ex.process(h.events) == []
        h.complete_task([])
        runs.append((ex, h))
    (hog, hh), (calm, hc) = runs
    hc.signal("grow", 1).next_task()
    assert calm.process(hc.events) == []  # about 1 MB kept
    hc.complete_task([])
    hh.signal("grow", 64).next_task()  # 64 MB in one task
    with pytest.raises(TaskFailure) as info:
        hog.process(hh.events)
    assert info.value.cause == "LIMIT_EXCEEDED" and "lua_memory_bytes" in info.value.failure.message
    hog.dispose()
    # the other run of the same Lua state is intact and goes on
    hc.signal("grow", 1).signal("grow", 0).next_task()
    assert calm.can_continue(hc.events, hc.last_completed_started)
    cmds = calm.process(hc.events)
    assert types(cmds) == ["CompleteWorkflowExecution"] and cmds[0].attrs["result"] == 2048
    # and the state has no limit left over from the failed task
    assert vm.lua.get_max_memory() > 1 << 40


def test_a_run_holding_more_than_its_limit_is_not_kept_and_fails_on_replay(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": HOG})
    limits = Limits(lua_memory_bytes=8 * 1024 * 1024)
    h = History("app:w", [0])
    # a Lua state of its own: what it measures around the run's tasks is the run's alone (in a shared
    # state, the collection of other runs' garbage during its tasks lowers the estimate)
    ex = WorkflowExecution(reg.workflow_for_type("app:w"), reg, limits, workflow_id="w", run_id="r",  # type: ignore[arg-type]
                           task_queue="q", vm=LuaVM())
    ex.process(h.events)
    h.complete_task([])
    for _ in range(2):  # 5 MB per task: each task within the limit
        h.signal("grow", 5).next_task()
        assert ex.process(h.events) == []
        h.complete_task([])
    assert ex.memory_used() > limits.lua_memory_bytes and ex.broken  # too big to keep
    cache = WorkflowCache(10)
    cache.put("r", ex)
    assert "r" not in cache and ex.run is None
    h.signal("grow", 0).next_task()
    # replayed (here in a Lua state of its own: garbage that other runs leave in a shared state gives a
    # task room until it is collected), the run holds it all in one task: over the limit
    replayed = WorkflowExecution(ex.entry, reg, limits, workflow_id="w", run_id="r", task_queue="q", vm=LuaVM())
    with pytest.raises(TaskFailure) as info:
        replayed.process(h.events)
    assert info.value.cause == "LIMIT_EXCEEDED"


def test_evicted_runs_free_their_memory(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": MEDDLER})
    vm = LuaVM()

    def used() -> int:
        vm.lua.execute("collectgarbage() collectgarbage()")
        return vm.memory_used()

    entry = reg.workflow_for_type("app:w")
    assert entry is not None
    cache = WorkflowCache(max_entries=50)
    start_mem = None
    for i in range(300):
        ex = WorkflowExecution(entry, reg, Limits(), workflow_id=f"w{i}", run_id=f"r{i}", task_queue="q", vm=vm)
        ex.process(History("app:w", ["b"]).events)
        cache.put(f"r{i}", ex)
        if i == 0:
            start_mem = used()
    assert start_mem is not None
    full = used()
    assert len(cache) == 50 and full > start_mem + 40 * 1000  # 50 runs held
    per_run = (full - start_mem) / 49
    cache.clear()
    empty = used()
    assert empty < start_mem, (start_mem, empty)  # 250 runs evicted, then the rest: nothing of them left
    assert empty - vm.baseline < 4 * per_run, (vm.baseline, empty, per_run)


def test_bench_cache_a_cached_run_costs_little_lua_memory() -> None:
    from legato.bench_cache import measure_cache

    report = measure_cache(200)
    assert report.cached == 200
    # about 13 KB measured (a runtime of its own per run cost about 230 KB): well below 20 KB
    assert report.lua_bytes_per_run < 20 * 1024, report.text()


def test_a_run_over_its_instruction_limit_fails_alone(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """\
        return function(spin)
            local n = process.listen("go"):receive()
            if spin then while true do end end
            local s = 0
            for i = 1, n do s = s + i end
            return s
        end
        """})
    limits = Limits(lua_instructions_per_task=2_000_000)
    vm = LuaVM()
    entry = reg.workflow_for_type("app:w")
    assert entry is not None
    runs = []
    for name, spin in (("spin", True), ("sum", False)):
        h = History("app:w", [spin])
        ex = WorkflowExecution(entry, reg, limits, workflow_id=name, run_id=f"run-{name}", task_queue="q", vm=vm)
        assert ex.process(h.events) == []
        h.complete_task([])
        h.signal("go", 300_000).next_task()
        runs.append((ex, h))
    (spin, hs), (calm, hc) = runs
    with pytest.raises(TaskFailure) as info:
        spin.process(hs.events)
    assert info.value.cause == "LIMIT_EXCEEDED" and "lua_instructions_per_task" in info.value.failure.message
    spin.dispose()
    # the other run counts its own instructions (300,000 loop turns fit in 2,000,000)
    cmds = calm.process(hc.events)
    assert types(cmds) == ["CompleteWorkflowExecution"] and cmds[0].attrs["result"] == 300_000 * 300_001 // 2
