-- Legato's Lua kernel, workflow mode: the deterministic scheduler (every workflow coroutine, FIFO
-- by readiness), the instruction hook, fatal errors, and the running run (R) that every workflow
-- module sees. Loaded by worker/kernel.lua.

local S, H, K = ...
local setmetatable, getmetatable, rawget, error = setmetatable, debug.getmetatable, rawget, error
local co_create, co_yield, co_isyieldable = coroutine.create, coroutine.yield, coroutine.isyieldable
local sethook = debug.sethook
local pack = table.pack
local sformat = string.format
local user_frame = S.user_frame
local _ENV = S.NO_GLOBALS

local BLOCK = setmetatable({}, { __name = "legato.block", __tostring = function() return "legato.block" end })
local FATAL_MT = { __name = "legato.fatal", __tostring = function() return "workflow task aborted" end }
local CLOSED = setmetatable({}, { __name = "legato.closed" })

-- Every run's state lives in its own table R (see K.new_run): the host runs one run at a time in
-- a Lua state shared by many runs, and enters the run (K.enter) before it feeds it events or runs
-- it. The functions here are shared by the runs; what one run holds (coroutines, channels,
-- pending commands, its globals and modules) is reachable only from its own R.
-- Each workflow module keeps the running run in a local R of its own (an upvalue, as fast as the
-- one local of the kernel before it was split): S.on_run registers the module's setter, and
-- S.set_run (K.new_run, K.enter, K.drop) sets them all.
local setters = {}
function S.on_run(set) setters[#setters + 1] = set end
function S.set_run(r)
    for i = 1, #setters do setters[i](r) end
end
local R = nil
S.on_run(function(r) R = r end)
local HOOK_EVERY = 1000

-- fatal errors end the workflow task whatever the code does (pcall cannot swallow them)
local function set_fatal(cause, message, source)
    if R.fatal_cause == nil then
        R.fatal_cause, R.fatal_message, R.fatal_source = cause, message, source
    end
end
-- The error value that aborts the task: raised only once R.fatal_cause is set, and re-raised by
-- the sandbox's pcall and coroutine.resume while it is. A table of the run's own, made when the run
-- first aborts (none for most runs): code gets hold of it (a __close handler receives it) and can
-- write into it, so one shared by the runs of the Lua state would carry data from run to run.
local function fatal_value()
    local r = R
    local f = rawget(r, "fatal_value")
    if f == nil then
        f = setmetatable({}, FATAL_MT)
        r.fatal_value = f
    end
    return f
end
local function raise_fatal(cause, message, level)
    set_fatal(cause, message, user_frame((level or 1) + 2))
    error(fatal_value(), 0)
end

local function hook()
    local r = R
    if r == nil then return end
    local n = r.hook_calls + 1
    r.hook_calls = n
    if n > r.hook_max then
        set_fatal("LIMIT_EXCEEDED", sformat(
            "the workflow task ran more than %d Lua instructions (limits.lua_instructions_per_task)",
            R.hook_max * HOOK_EVERY), user_frame(2))
        error(fatal_value(), 0)
    end
end

local function new_coroutine(fn)
    local co = co_create(fn)
    sethook(co, hook, "", HOOK_EVERY)
    return co
end

local function push_ready(t, vals)
    local r = R
    local n = r.rq_tail + 1
    r.rq_tail = n
    r.rq_t[n] = t
    r.rq_v[n] = vals
end

local function wake(t, ...)
    push_ready(t, pack(...))
end

local function this_thread(what)
    if R.current == nil or not co_isyieldable() then
        error(what .. ": cannot block here (not inside a workflow coroutine, or inside a C call)", 3)
    end
    return R.current
end

local function block()
    return co_yield(BLOCK)
end

local function count_command()
    R.ncommands = R.ncommands + 1
    if R.ncommands > R.max_commands then
        raise_fatal("LIMIT_EXCEEDED", sformat("the workflow task issued more than %d commands " ..
            "(limits.max_commands_per_task)", R.max_commands), 2)
    end
end

-- The run's live threads, for `legato workflow stack` (weak: a thread nothing else holds is gone).
local WEAK_KEYS = { __mode = "k" }

local function spawn(fn, ...)
    R.nthreads = R.nthreads + 1
    local t = { co = new_coroutine(fn), id = R.nthreads }
    local live = rawget(R, "threads")
    if live == nil then
        live = setmetatable({}, WEAK_KEYS)
        R.threads = live
    end
    live[t] = true
    push_ready(t, pack(...))
    return t
end

S.protect(getmetatable(BLOCK), FATAL_MT, getmetatable(CLOSED))
S.BLOCK, S.CLOSED, S.HOOK_EVERY = BLOCK, CLOSED, HOOK_EVERY
S.set_fatal, S.fatal_value, S.raise_fatal, S.hook, S.new_coroutine = set_fatal, fatal_value, raise_fatal, hook,
    new_coroutine
S.push_ready, S.wake, S.this_thread, S.block, S.count_command, S.spawn =
    push_ready, wake, this_thread, block, count_command, spawn
