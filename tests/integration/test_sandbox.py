"""The sandbox-escape and resource suites (issue 10): hostile and careless Lua, in workflows and in
activities, run by a real worker (Lua host process, watchdog) against an engine on SQLite.

Every case ends in a clear outcome (a workflow task failure naming what is wrong, an activity
failure, or a value that shows the door is shut), and after every case a normal workflow must
still complete on the same worker: no case may take the worker down or hold it up.
"""

from __future__ import annotations

import textwrap
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from legato.api import ExecutionRef, TerminateWorkflowRequest, WorkflowStatus
from legato.config import Config, StoreConfig
from legato.events import EventType as E
from tests.integration.engine_harness import TASK_QUEUE, Harness, engine_config
from worker.entries import Registry, load_registry

PAYLOAD_LIMIT = 64 * 1024
NORMAL_TIMEOUT_S = 10.0  # a normal workflow after a case: "promptly", with room for a loaded CI machine

ALL_MODULES = "[funcs, time, uuid, crypto, workflow, json, ctx, errors]"
ACT_MODULES = "[time, json, uuid, crypto, errors, funcs, ctx, activity]"


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    # one of: ("task", cause, text) - a workflow task fails with that cause, its message containing text;
    #         ("value", expected) - the workflow completes with that value;
    #         ("failed", text) - the workflow fails, its failure message containing text
    expect: tuple[Any, ...]


def wf(name: str, body: str, expect: tuple[Any, ...]) -> Case:
    return Case(name, "return function()\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\nend\n", expect)


# Walks what workflow or activity code can reach from its globals (and a few kernel objects, through
# their metatables) and lists any key that only the kernel's shared internals (worker/kernel.lua's S)
# or its host table H have.
KERNEL_SCAN = """\
local SECRET = {NO_GLOBALS = true, set_run = true, on_run = true, kernel_modules = true, own_source = true,
                build_env = true, time_constants = true, make_error = true, patterns = true}
local seen, found = {}, {}
local function walk(t, depth)
    if seen[t] or depth > 5 then return end
    seen[t] = true
    for k, v in pairs(t) do
        if SECRET[k] then found[#found + 1] = tostring(k) end
        if type(v) == "table" then walk(v, depth + 1) end
    end
    local mt = getmetatable(t)
    if type(mt) == "table" then walk(mt, depth + 1) end
end
walk(_G, 0)
walk({time.now(), time.parse_duration("1s"), errors.new("x"), payload.new(1)}, 0)
if channel then walk({channel.new()}, 0) end
return {found = table.concat(found, ","), globals = S == nil and K == nil and H == nil and MODE == nil}"""


LOOP = "while true do end"

WORKFLOW_CASES = [
    # the operating system, files, debug, Python, bytecode
    wf("os_execute", 'os.execute("touch /tmp/legato-escaped")', ("task", "FORBIDDEN_CALL", "os.execute")),
    wf("os_exit", "os.exit(1)", ("task", "FORBIDDEN_CALL", "os.exit")),
    wf("os_getenv", 'return os.getenv("HOME")', ("task", "FORBIDDEN_CALL", "os.getenv")),
    wf("io_open", 'return io.open("/etc/passwd")', ("task", "FORBIDDEN_CALL", "io.open")),
    wf("io_popen", 'return io.popen("id")', ("task", "FORBIDDEN_CALL", "io.popen")),
    wf("debug_registry", "return debug.getregistry()", ("task", "FORBIDDEN_CALL", "debug.getregistry")),
    wf("debug_sethook", "debug.sethook()", ("task", "FORBIDDEN_CALL", "debug.sethook")),
    wf("require_python", 'return require("python")', ("task", "FORBIDDEN_CALL", "python")),
    wf("require_io", 'return require("io")', ("task", "FORBIDDEN_CALL", "io")),
    wf("no_python_package_or_registry", "return {python = python == nil, package = package == nil}",
       ("value", {"python": True, "package": True})),
    wf("string_dump", "return string.dump(function() end)", ("task", "FORBIDDEN_CALL", "string.dump")),
    wf("string_dump_method", 'return ("").dump(function() end)', ("task", "FORBIDDEN_CALL", "string.dump")),
    wf("load_binary_mode", 'return load("return 1", "x", "b")', ("task", "FORBIDDEN_CALL", "mode")),
    wf("load_bytecode", 'return load("\\27Lua")', ("task", "FORBIDDEN_CALL", "bytecode")),
    wf("loadfile", 'return loadfile("/etc/passwd")', ("task", "FORBIDDEN_CALL", "loadfile")),
    wf("dofile", 'return dofile("/etc/passwd")', ("task", "FORBIDDEN_CALL", "dofile")),
    # the kernel's own modules (worker/kernel/*.lua) and what they share: neither requirable nor reachable
    wf("require_kernel_module", 'return require("legato/kernel/time")',
       ("task", "FORBIDDEN_CALL", "legato/kernel/time")),
    wf("kernel_internals_unreachable", KERNEL_SCAN, ("value", {"found": "", "globals": True})),
    wf("load_text_sees_sandbox", 'return load("return os.execute")() ~= nil and "sandboxed"',
       ("value", "sandboxed")),
    # determinism: finalizers, weak tables, memory, randomness, time
    wf("gc_metamethod", "setmetatable({}, {__gc = function() end})", ("task", "FORBIDDEN_CALL", "__gc")),
    wf("gc_on_kernel_metatable", """\
        local ok, err = pcall(rawset, getmetatable(errors.new("x")), "__gc", function() end)
        return {ok = ok, mt = getmetatable(errors.new("x")), err = tostring(err):match("table expected") ~= nil}""",
       ("value", {"ok": False, "mt": "error", "err": True})),
    wf("replace_kernel_metatable", """\
        local ok = pcall(setmetatable, errors.new("x"), {})
        return ok""", ("value", False)),
    wf("string_metatable_hidden", 'return getmetatable("")', ("value", "protected")),
    wf("weak_table", 'setmetatable({}, {__mode = "k"})', ("task", "FORBIDDEN_CALL", "__mode")),
    wf("collectgarbage_count", 'return collectgarbage("count")', ("value", 0)),
    wf("collectgarbage_setpause", 'collectgarbage("setpause", 1)',
       ("task", "WORKFLOW_ERROR", "collectgarbage(setpause)")),
    wf("math_random", "return math.random()", ("task", "FORBIDDEN_CALL", "math.random")),
    wf("os_time", "return os.time()", ("task", "FORBIDDEN_CALL", "os.time")),
    # instructions: every path, not only the workflow's coroutines
    wf("infinite_loop", LOOP, ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_pcall", "while true do pcall(function() " + LOOP + " end) end",
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_error_handler", "xpcall(error, function() " + LOOP + " end)",
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_user_coroutine", "coroutine.resume(coroutine.create(function() " + LOOP + " end))",
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_coroutine_wrap", "coroutine.wrap(function() " + LOOP + " end)()",
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_raised_tostring", "error(setmetatable({}, {__tostring = function() " + LOOP + " end}))",
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_error_message_tostring", """\
        error(errors.new({message = setmetatable({}, {__tostring = function() """ + LOOP + """ end}), kind = "X"}))""",
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("loop_in_returned_error_index", """\
        return nil, setmetatable({}, {__index = function() """ + LOOP + """ end})""",
       ("failed", "")),
    wf("loop_in_global_index", """\
        setmetatable(_G, {__index = function() """ + LOOP + """ end})
        return undefined_name""", ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("eq_metamethod_that_yields", """\
        local mt = {__eq = function() coroutine.yield() return true end}
        return setmetatable({}, mt) == setmetatable({}, mt)""", ("task", "WORKFLOW_ERROR", "yield")),
    wf("backtracking_pattern", 'return string.rep("a", 20000):find(".-.-.-.-.-b")',
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("backtracking_gsub", 'return (string.rep("a", 5000):gsub(".-.-.-.-b", "x"))',
       ("task", "LIMIT_EXCEEDED", "lua_instructions_per_task")),
    wf("ordinary_patterns_still_work", """\
        local s = string.rep("key=value; ", 1000)
        local n = select(2, s:gsub("%s+", " "))
        local k, v = s:match("^(%w+)=(%w+)")
        return {k, v, n, ("a,b,,c"):find(",,", 1, true), #{string.rep("ab", 50):match("(a)(b)")}}""",
       ("value", ["key", "value", 1000, 4, 2])),
    wf("deep_recursion", "local function f(n) return 1 + f(n + 1) end return f(1)",
       ("task", "WORKFLOW_ERROR", "stack overflow")),
    # memory
    wf("memory_bomb", "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end",
       ("task", "LIMIT_EXCEEDED", "lua_memory_bytes")),
    wf("huge_string_rep", 'return #string.rep("x", 100 * 1024 * 1024)', ("task", "LIMIT_EXCEEDED", "lua_memory_bytes")),
    # values that cannot become payloads
    wf("shared_subtables_result", "local t = {} for i = 1, 60 do t = {t, t} end return t",
       ("task", "WORKFLOW_ERROR", "parts")),
    wf("cyclic_result", "local t = {} t.self = t return t", ("task", "WORKFLOW_ERROR", "nested")),
    wf("shared_subtables_json", """\
        local t = {} for i = 1, 60 do t = {t, t} end
        local s, err = json.encode(t)
        return {s = s, err = err ~= nil}""", ("value", {"err": True})),
    wf("deep_json_decode", """\
        local v, err = json.decode(string.rep("[", 100000) .. string.rep("]", 100000))
        return {err = err ~= nil}""", ("value", {"err": True})),
    wf("huge_error_message", 'error(string.rep("x", 10 * 1024 * 1024))', ("task", "WORKFLOW_ERROR", "xxxx")),
    # payload limits fail where they are crossed
    wf("large_result", f'return string.rep("x", {PAYLOAD_LIMIT + 1})',
       ("task", "LIMIT_EXCEEDED", "max_payload_bytes")),
    wf("large_activity_argument", f'return funcs.call("app:a_echo", string.rep("x", {PAYLOAD_LIMIT + 1}))',
       ("task", "LIMIT_EXCEEDED", "max_payload_bytes")),
    wf("large_signal", f'process.send("nobody", "t", string.rep("x", {PAYLOAD_LIMIT + 1}))',
       ("task", "LIMIT_EXCEEDED", "max_payload_bytes")),
    wf("large_child_input", f'process.spawn("app:normal", nil, string.rep("x", {PAYLOAD_LIMIT + 1}))',
       ("task", "LIMIT_EXCEEDED", "max_payload_bytes")),
    wf("deep_result", "local t = {} for i = 1, 80 do t = {t} end return t",
       ("task", "LIMIT_EXCEEDED", "max_payload_depth")),
    wf("endless_timer", "time.sleep(math.huge)", ("task", "WORKFLOW_ERROR", "100 years")),
    wf("nan_timer", "time.sleep(0/0)", ("task", "WORKFLOW_ERROR", "100 years")),
    wf("timer_of_2_63_ms", 'time.sleep("9223372036854775807ms")', ("task", "WORKFLOW_ERROR", "time.sleep")),
    wf("too_many_commands", 'for i = 1, 20001 do funcs.async("app:a_echo", i) end',
       ("task", "LIMIT_EXCEEDED", "max_commands_per_task")),
]


def act(name: str, body: str) -> tuple[str, str]:
    return "a_" + name, "return function(...)\n" + textwrap.indent(textwrap.dedent(body), "    ") + "\nend\n"


ACTIVITIES = dict([
    act("echo", "return ..."),
    act("probe", """\
        return {io = io == nil, debug = debug == nil, package = package == nil, python = python == nil,
                loadfile = pcall(loadfile, "/etc/passwd"), dofile = pcall(dofile, "/etc/passwd"),
                execute = pcall(os.execute, "true"), exit = pcall(os.exit, 1), getenv = pcall(os.getenv, "HOME"),
                require_python = pcall(require, "python"), require_io = pcall(require, "io"),
                dump = pcall(string.dump, print), bytecode = pcall(load, "\\27Lua"),
                binary = pcall(load, "return 1", "x", "b"), string_mt = getmetatable(""),
                time = type(os.time()) == "number", clock = type(os.clock()) == "number",
                random = type(math.random()) == "number", text_load = load("return 2")(),
                require_kernel = pcall(require, "legato/kernel/time")}"""),
    act("kernel_scan", KERNEL_SCAN),
    act("set_global", "leaked = (leaked or 0) + 1; table.insert = nil; return leaked"),
    act("loop", LOOP),
    act("loop_in_pcall", "while true do pcall(function() " + LOOP + " end) end"),
    act("sleep_long", 'time.sleep("1h") return "woke"'),
    act("memory_bomb", "local t = {} for i = 1, 1e9 do t[i] = string.rep('x', 1000) .. i end"),
    act("backtracking", 'return string.rep("a", 20000):find(".-.-.-.-.-b")'),
])

ACT_CALL = """\
return function()
    local ex = funcs.new():with_options({{["activity.start_to_close_timeout"] = "1500ms",
        ["activity.retry_policy"] = {{maximum_attempts = 1}}}})
    local v, err = ex:call("app:a_{name}")
    if err then return {{kind = err:kind(), message = err:message()}} end
    return {{value = v}}
end
"""

ACTIVITY_CASES = [
    Case("activity_probe", ACT_CALL.format(name="probe"), ("value", {"value": {
        "io": True, "debug": True, "package": True, "python": True, "loadfile": False, "dofile": False,
        "execute": False, "exit": False, "getenv": False, "require_python": False, "require_io": False,
        "dump": False, "bytecode": False, "binary": False, "string_mt": "protected", "time": True, "clock": True,
        "random": True, "text_load": 2, "require_kernel": False}})),
    Case("activity_kernel_internals_unreachable", ACT_CALL.format(name="kernel_scan"),
         ("value", {"value": {"found": "", "globals": True}})),
    Case("activity_globals_fresh", """\
        return function()
            local a = funcs.call("app:a_set_global")
            local b = funcs.call("app:a_set_global")
            return {a, b}
        end
        """, ("value", [1, 1])),
    Case("activity_loop_stopped", ACT_CALL.format(name="loop"), ("value", {"kind": "Timeout"})),
    Case("activity_loop_in_pcall_stopped", ACT_CALL.format(name="loop_in_pcall"), ("value", {"kind": "Timeout"})),
    Case("activity_sleep_ends_at_timeout", ACT_CALL.format(name="sleep_long"), ("value", {"kind": "Timeout"})),
    Case("activity_memory_bomb", ACT_CALL.format(name="memory_bomb"), ("value", {"kind": "LimitExceeded"})),
    Case("activity_backtracking_pattern", ACT_CALL.format(name="backtracking"), ("value", {"kind": "Timeout"})),
]

NORMAL = """\
return function(x)
    local v = funcs.call("app:a_echo", x or "ok")
    return v
end
"""


def make_registry(tmp: Path) -> Registry:
    lines = ["version: '1.0'\nnamespace: app\nentries:",
             f"  - {{name: worker, kind: temporal.worker, task_queue: {TASK_QUEUE}}}"]
    workflows = {c.name: c.code for c in WORKFLOW_CASES + ACTIVITY_CASES} | {"normal": NORMAL}
    for name, code in workflows.items():
        (tmp / f"{name}.lua").write_text(textwrap.dedent(code))
        lines.append(f"  - {{name: {name}, kind: workflow.lua, source: file://{name}.lua, modules: {ALL_MODULES},"
                     " meta: {temporal: {workflow: {worker: app:worker}}}}")
    for name, code in ACTIVITIES.items():
        (tmp / f"{name}.lua").write_text(code)
        lines.append(f"  - {{name: {name}, kind: function.lua, source: file://{name}.lua, modules: {ACT_MODULES}}}")
    (tmp / "app.yaml").write_text("\n".join(lines) + "\n")
    return load_registry(tmp / "app.yaml")


def sandbox_config() -> Config:
    c = engine_config()
    c.store = StoreConfig()  # SQLite: the suite is about the worker
    c.limits.max_payload_bytes = PAYLOAD_LIMIT
    c.limits.lua_memory_bytes = 32 * 1024 * 1024
    c.limits.activity_lua_memory_bytes = 32 * 1024 * 1024
    c.limits.lua_instructions_per_task = 5_000_000
    c.worker.lua_watchdog_ms = 2_000
    return c


@pytest.fixture(scope="module")
async def harness(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Harness]:
    tmp = tmp_path_factory.mktemp("sandbox")
    h = Harness(tmp, tmp, sandbox_config(), grpc=False)
    await h.start(make_registry(tmp))
    try:
        yield h
    finally:
        await h.close()


async def outcome(h: Harness, wid: str) -> tuple[str, Any]:
    """("task", (cause, message)) for the first failed workflow task, or the closed workflow's
    ("value", result) / ("failed", message)."""
    ev = await h.wait_event(wid, lambda e: e.event_type in (
        E.WorkflowTaskFailed, E.WorkflowExecutionCompleted, E.WorkflowExecutionFailed), timeout=30)
    if ev.event_type is E.WorkflowTaskFailed:
        failure = ev.attrs.get("failure") or {}
        return "task", (ev.attrs.get("cause"), str(failure.get("message", "")))
    r = await h.result(wid, timeout=5)
    if r.status == WorkflowStatus.COMPLETED:
        return "value", r.result
    return "failed", r.failure.message if r.failure else ""


def check(case: Case, got: tuple[str, Any]) -> None:
    kind, data = got
    exp = case.expect
    if len(repr(got)) > 2000:  # keep assertion messages readable (and pytest's diff cheap)
        got = (kind, repr(data)[:2000] + "...")
    assert kind == exp[0], f"{case.name}: expected {exp}, got {got}"
    if kind == "task":
        cause, message = data
        assert cause == exp[1] and exp[2] in message, f"{case.name}: expected {exp}, got {got}"
        assert len(message) < 64 * 1024, f"{case.name}: a failure message of {len(message)} characters"
    elif kind == "value":
        if isinstance(exp[1], dict) and isinstance(data, dict):
            assert {k: data.get(k) for k in exp[1]} == exp[1], f"{case.name}: expected {exp}, got {got}"
        else:
            assert data == exp[1], f"{case.name}: expected {exp}, got {got}"
    else:
        assert exp[1] in data, f"{case.name}: expected {exp}, got {got}"


async def run_case(h: Harness, case: Case) -> None:
    wid = await h.start_workflow(f"app:{case.name}")
    try:
        check(case, await outcome(h, wid))
    finally:
        d = await h.describe(wid)
        if d.info.status == WorkflowStatus.RUNNING:  # a failing task would be retried: stop it
            await h.api.terminate_workflow(TerminateWorkflowRequest(ExecutionRef(wid), "test case done"))
    # the resource suite's half: the same worker still serves a normal workflow promptly
    normal = await h.start_workflow("app:normal", case.name)
    assert await h.value(normal, timeout=NORMAL_TIMEOUT_S) == case.name


def test_the_suites_are_broad() -> None:
    assert len(WORKFLOW_CASES) + len(ACTIVITY_CASES) >= 40


@pytest.mark.parametrize("case", WORKFLOW_CASES, ids=lambda c: c.name)
async def test_workflow_sandbox(harness: Harness, case: Case) -> None:
    await run_case(harness, case)


@pytest.mark.parametrize("case", ACTIVITY_CASES, ids=lambda c: c.name)
async def test_activity_sandbox(harness: Harness, case: Case) -> None:
    await run_case(harness, case)


# ---------------------------------------------------------------- the watchdog

UNBOUNDED = 10**15  # an instruction limit that never trips: only the watchdog can stop the code


async def test_the_watchdog_abandons_code_nothing_else_stops(tmp_path: Path) -> None:
    """With the instruction limit out of the way, a task that never returns is abandoned after
    worker.lua_watchdog_ms: its Lua host process is replaced, the task fails naming the setting,
    and the worker goes on serving (the runs cached in the old host replay)."""
    config = sandbox_config()
    config.limits.lua_instructions_per_task = UNBOUNDED
    config.worker.lua_watchdog_ms = 1_000
    h = Harness(tmp_path, tmp_path, config, grpc=False)
    await h.start(make_registry(tmp_path))
    try:
        # the registry's infinite_loop case, which the instruction limit no longer stops
        await run_case(h, wf("infinite_loop", LOOP, ("task", "LIMIT_EXCEEDED", "worker.lua_watchdog_ms (1000 ms)")))
        assert h.worker is not None and h.worker.workflow_tasks.restarts >= 1
    finally:
        await h.close()


def write_app(tmp: Path) -> Path:
    (tmp / "stuck.lua").write_text("return function() " + LOOP + " end\n")
    (tmp / "app.yaml").write_text(textwrap.dedent(f"""\
        version: '1.0'
        namespace: app
        entries:
          - {{name: worker, kind: temporal.worker, task_queue: {TASK_QUEUE}}}
          - {{name: stuck, kind: workflow.lua, source: file://stuck.lua,
             meta: {{temporal: {{workflow: {{worker: app:worker}}}}}}}}
          - {{name: stuck_fn, kind: function.lua, source: file://stuck.lua}}
        """))
    (tmp / "config.yaml").write_text(f"limits: {{lua_instructions_per_task: {UNBOUNDED}}}\n"
                                     "worker: {lua_watchdog_ms: 600000}\n")
    return tmp / "app.yaml"


def test_a_stuck_workflow_does_not_stop_the_worker_from_exiting(tmp_path: Path) -> None:
    """SIGTERM while a workflow task spins (and the watchdog is far away): the worker exits in a
    few seconds, its Lua host with it."""
    import signal
    import subprocess
    import time

    from tests.integration.procs import Cluster

    app = write_app(tmp_path)
    c = Cluster(tmp_path, app, config=tmp_path / "config.yaml").start()
    try:
        r = c.cli("workflow", "start", "--type", "app:stuck", "--task-queue", TASK_QUEUE, "--id", "stuck")
        assert r.returncode == 0, r.stderr
        c.worker.wait_for("")  # output so far
        deadline = time.monotonic() + 30
        while "WorkflowTaskStarted" not in c.cli("workflow", "show", "--id", "stuck").stdout:
            assert time.monotonic() < deadline, "the worker never started the task"
        assert c.worker.popen is not None
        t0 = time.monotonic()
        c.worker.popen.send_signal(signal.SIGTERM)
        try:
            c.worker.popen.wait(15)
        except subprocess.TimeoutExpired:
            raise AssertionError("the worker ignored SIGTERM while a workflow task spun:\n"
                                 + c.worker.output()) from None
        assert time.monotonic() - t0 < 15
    finally:
        c.stop()


def test_legato_run_timeout_fires_while_code_spins(tmp_path: Path) -> None:
    """`legato run --timeout` of a workflow or a function whose code never returns: exit 4 on time."""
    from tests.integration.procs import legato

    app = write_app(tmp_path)
    for entry in ("app:stuck", "app:stuck_fn"):
        r = legato("run", entry, "--entries", str(app), "--timeout", "2s", "--config", str(tmp_path / "config.yaml"),
                   timeout=30)
        assert r.returncode == 4, (entry, r.returncode, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
