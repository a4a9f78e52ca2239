"""What the runs of one Lua state share (worker.runtime.LuaVM): nothing code can change.

The runs of a worker thread share one Lua state, the kernel's metatables and its library
functions; each run has its own globals and its own copies of every library table. These tests
look for a way from workflow code to a table another run also reaches (a kernel metatable through
`v.__index` or getmetatable, a library table), try to change it from one run, and check that
another run does not see the change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from legato.commands import CommandType
from legato.config import Limits
from tests.unit.worker.helpers import History, make_app
from worker.activity import ActivityRunner
from worker.entries import Registry
from worker.replay import WorkflowExecution, new_execution
from worker.runtime import LuaVM, TaskFailure

# Every kind of value the kernel hands to workflow code, made after the signal "go" arrived (a message).
OBJECTS = """\
local function objects(msg)
    return {
        error = errors.new("x"), channel = channel.new(1), time = time.now(), duration = time.parse_duration("1s"),
        location = time.utc, timer = time.timer("1h"), ticker = time.ticker("1h"), after = time.after("1h"),
        future = funcs.async("app:f"), executor = funcs.new(), message = msg, payload = payload.new(1),
        message_payload = msg:payload(), spawner = process.with_name("x"), regexp = text.regexp.compile("a"),
        differ = text.diff.new(), splitter = text.splitter.recursive(),
    }
end
"""

# Walks everything code can reach from its globals and those values: table contents, metatables
# (getmetatable), and v.__index / v.__newindex / v.__metatable of tables, userdata and strings (where
# a metatable whose __index is itself hands itself out). Returns address -> path of every table and
# userdata reached.
SCAN = OBJECTS + """\
local PROBES = {"__index", "__newindex", "__metatable", "__name"}
return function()
    local msg = process.listen("go", {message = true}):receive()
    local found, n, userdata = {}, 0, {}
    local function walk(v, path, depth)
        local tv = type(v)
        if tv ~= "table" and tv ~= "userdata" and tv ~= "string" then return end
        if tv ~= "string" then
            local addr = string.format("%p", v)
            if found[addr] or depth > 8 then return end
            found[addr] = path
            n = n + 1
            if tv == "userdata" then userdata[#userdata + 1] = path end
        end
        for _, p in ipairs(PROBES) do
            local ok, x = pcall(function() return v[p] end)
            if ok and x ~= nil then walk(x, path .. "." .. p, depth + 1) end
        end
        if tv == "table" then
            for k, x in next, v do
                walk(k, path .. "[key]", depth + 1)
                walk(x, path .. "." .. tostring(k), depth + 1)
            end
            walk(getmetatable(v), "getmetatable(" .. path .. ")", depth + 1)
        end
    end
    walk(_G, "_G", 0)
    walk(objects(msg), "objects", 0)
    walk("", '("")', 0)
    return {found = found, n = n, userdata = userdata}
end
"""

F = {"f": "return function() return 1 end"}


def start(reg: Registry, workflow_id: str, args: list[Any]) -> tuple[WorkflowExecution, History]:
    h = History("app:w", args)
    ex = new_execution(reg, "app:w", Limits(), workflow_id=workflow_id, run_id=f"run-{workflow_id}", task_queue="q")
    assert ex.process(h.events) == []  # waiting for the signal
    return ex, h


def result(ex: WorkflowExecution, h: History) -> Any:
    """Send the signal "go", run the task that follows, and return the workflow's result."""
    h.complete_task([])
    h.signal("go", "go").next_task()
    cmds = ex.process(h.events)
    assert cmds and cmds[-1].command_type == CommandType.CompleteWorkflowExecution, cmds
    return cmds[-1].attrs["result"]


def test_no_table_reachable_from_workflow_code_is_shared_between_runs(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": SCAN}, F, modules="[funcs, time, uuid, crypto, workflow, json, ctx, errors, "
                   "hash, base64, text]")
    (a, ha), (b, hb) = start(reg, "a", []), start(reg, "b", [])
    assert a.vm is b.vm
    seen_a, seen_b = result(a, ha), result(b, hb)
    assert seen_a["n"] > 50 and seen_b["n"] == seen_a["n"]  # the same walk
    assert seen_a["userdata"] == {}  # no Python object (all share one metatable, lupa's)
    shared = {seen_a["found"][addr] for addr in set(seen_a["found"]) & set(seen_b["found"])}
    assert shared == set()


# Run "a" changes a method of every kind of kernel value through whatever it reaches of the
# value's metatable; run "b" then calls that method on a value of its own. "a" also tries
# setmetatable on the value and rawset on getmetatable's answer.
TAMPER = OBJECTS + """\
local METHODS = {
    error = "message", channel = "is_closed", time = "unix", duration = "seconds", location = "string",
    timer = "channel", ticker = "channel", after = "len", future = "is_complete", executor = "with_options",
    message = "topic", payload = "get_format", message_payload = "get_format", spawner = "with_name",
    regexp = "string", differ = "summarize", splitter = "split_text",
}
local function hijacked() return "hijacked" end
return function(role)
    local msg = process.listen("go", {message = true}):receive()
    local out = {}
    for kind, o in pairs(objects(msg)) do
        local method = METHODS[kind]
        if role == "a" then
            local reached = {}
            local mt = o.__index
            if type(mt) == "table" then
                rawset(mt, method, hijacked)
                reached[#reached + 1] = "__index"
            end
            local gm = getmetatable(o)
            if type(gm) == "table" then
                rawset(gm, "__index", function() return hijacked end)
                reached[#reached + 1] = "getmetatable"
            end
            if pcall(setmetatable, o, {__index = function() return hijacked end}) then
                reached[#reached + 1] = "setmetatable"
            end
            out[kind] = {reached = table.concat(reached, ","), mt = type(gm)}
        else
            local ok, v = pcall(o[method], o)
            out[kind] = ok and v == "hijacked" and "hijacked" or "own"
        end
    end
    return out
end
"""

KINDS = ["error", "channel", "time", "duration", "location", "timer", "ticker", "after", "future", "executor",
         "message", "payload", "message_payload", "spawner", "regexp", "differ", "splitter"]


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    reg = make_app(tmp_path_factory.mktemp("tamper"), {"w": TAMPER}, F,
                   modules="[funcs, time, uuid, crypto, workflow, json, ctx, text]")
    (a, ha), (b, hb) = start(reg, "a", ["a"]), start(reg, "b", ["b"])
    assert a.vm is b.vm
    seen_a = result(a, ha)
    return seen_a, result(b, hb)


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_cannot_change_the_methods_of_another_runs_values(
        kind: str, tampered: tuple[dict[str, Any], dict[str, Any]]) -> None:
    by_a, seen_by_b = tampered
    assert sorted(by_a) == sorted(seen_by_b) == sorted(KINDS)
    # neither v.__index nor getmetatable(v) reaches the metatable (getmetatable gives the type's name), and
    # setmetatable(v, ...) is refused
    assert by_a[kind] == {"reached": "", "mt": "string"}
    assert seen_by_b[kind] == "own"


# The library tables: each run has its own copy (string also through ("").method).
LIBRARIES = """\
local LIBS = {"string", "table", "math", "utf8", "coroutine", "os", "io", "debug", "errors", "channel", "process",
              "payload", "funcs", "time", "uuid", "crypto", "workflow", "json", "ctx", "hash", "base64", "text"}
local function hijacked() return "hijacked" end
return function(role)
    process.listen("go"):receive()
    local out = {}
    for _, name in ipairs(LIBS) do
        local lib = _G[name]
        if role == "a" then
            rawset(lib, "injected", hijacked)
            for k, v in next, lib do
                if type(v) == "function" then rawset(lib, k, hijacked) end
            end
        else
            out[name] = rawget(lib, "injected") == nil and lib.format ~= hijacked and lib.now ~= hijacked
                and lib.new ~= hijacked and lib.insert ~= hijacked
        end
    end
    if role == "a" then return {upper = ("x"):upper()} end
    out.method = ("x"):upper()
    return out
end
"""


def test_a_run_cannot_change_another_runs_libraries(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": LIBRARIES}, F, modules="[funcs, time, uuid, crypto, workflow, json, ctx, errors, "
                   "hash, base64, text]")
    (a, ha), (b, hb) = start(reg, "a", ["a"]), start(reg, "b", ["b"])
    assert result(a, ha) == {"upper": "hijacked"}  # its own copy changed
    seen_by_b = result(b, hb)
    assert seen_by_b.pop("method") == "X"
    assert seen_by_b == dict.fromkeys(seen_by_b, True) and len(seen_by_b) == 22


# Activities: one runtime per function entry and thread, fresh globals for every call; the module
# tables and the kernel's metatables must not carry a change from one call to the next.
ACT_TAMPER = """\
local function hijacked() return "hijacked" end
return function(tamper)
    if tamper then
        for _, lib in ipairs({errors, time, json, uuid, crypto, hash, base64, text, ctx, funcs, payload,
                              payload.format, time.utc}) do
            for k, v in next, lib do
                if type(v) == "function" then rawset(lib, k, hijacked) end
            end
            rawset(lib, "injected", true)
        end
        local e = errors.new("x")
        local mt = e.__index
        if type(mt) == "table" then rawset(mt, "message", hijacked) end
        return "tampered"
    end
    return {
        message = errors.new("y"):message(), kind = errors.NOT_FOUND, new = errors.injected == nil,
        now = type(time.now()), utc = time.utc:string(), json = json.encode({1}), format = payload.format.JSON,
        injected = time.injected == nil and json.injected == nil and payload.format.injected == nil,
    }
end
"""


def test_an_activity_call_cannot_change_the_next_calls_modules(tmp_path: Path) -> None:
    reg = make_app(tmp_path, functions={"t": ACT_TAMPER},
                   function_modules="[time, json, uuid, crypto, errors, funcs, ctx, hash, base64, text]")
    runner = ActivityRunner(reg)
    first = runner.call("app:t", [True])
    assert first.ok and first.result == "tampered", first
    second = runner.call("app:t", [False])
    assert second.ok, second
    assert second.result == {"message": "y", "kind": "NotFound", "new": True, "now": "table", "utc": "UTC",
                            "json": "[1]", "format": "json/plain", "injected": True}


def test_an_activity_cannot_dump_bytecode_through_a_strings_methods(tmp_path: Path) -> None:
    reg = make_app(tmp_path, functions={"d": """\
        return function()
            local ok, err = pcall(function() return ("").dump(function() end) end)
            return {ok = ok, err = tostring(err):match("string.dump is not available") ~= nil,
                    copy = pcall(string.dump, function() end)}
        end
        """})
    out = ActivityRunner(reg).call("app:d", [])
    assert out.ok and out.result == {"ok": False, "err": True, "copy": False}, out


def test_python_objects_metatable_is_out_of_reach() -> None:
    # lupa gives every Python object (the host's functions among them) one metatable: were code to get
    # a Python object, getmetatable must not hand it that metatable
    vm = LuaVM()
    assert vm.lua.eval("function(o) return getmetatable(o) end")(len) == "POBJECT"


# The error that aborts a task (a forbidden call here) reaches code in a __close handler, which can
# write into it: it must be the run's own.
ABORTING = """\
return function(role)
    pcall(function()
        local x <close> = setmetatable({}, {__close = function(_, err)
            print(role, tostring(err), type(err) == "table" and tostring(rawget(err, "written")))
            if type(err) == "table" then rawset(err, "written", role) end
        end})
        os.time()
    end)
end
"""


def test_the_error_that_aborts_a_task_is_the_runs_own(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    reg = make_app(tmp_path, {"w": ABORTING})
    caplog.set_level(logging.INFO, logger="legato.worker.lua")
    for role in ("a", "b"):
        ex = new_execution(reg, "app:w", Limits(), workflow_id=role, run_id=f"run-{role}", task_queue="q")
        with pytest.raises(TaskFailure, match="FORBIDDEN_CALL"):
            ex.process(History("app:w", [role]).events)
    lines = [r.getMessage() for r in caplog.records if r.name == "legato.worker.lua"]
    assert [line.split("] ", 1)[1] for line in lines] == ["a\tworkflow task aborted\tnil",
                                                          "b\tworkflow task aborted\tnil"]
