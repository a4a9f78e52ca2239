-- Legato's Lua kernel, workflow mode: the sandbox. Every run's globals (build_env): deterministic
-- pairs and next, the standard library without what is not replay-safe (os.time, math.random, io,
-- debug, bytecode, finalizers, weak tables), require of the modules its entry lists, and the
-- coroutine module on the scheduler. Loaded by worker/kernel.lua.

local S, H = ...
local type, pairs, ipairs, next, select, tostring, error, rawget, rawset, setmetatable, getmetatable =
    type, pairs, ipairs, next, select, tostring, error, rawget, rawset, setmetatable, debug.getmetatable
local pcall, xpcall, load = pcall, xpcall, load
local co_resume, co_yield, co_status, co_running, co_close, co_isyieldable =
    coroutine.resume, coroutine.yield, coroutine.status, coroutine.running, coroutine.close, coroutine.isyieldable
local pack, unpack, concat, tsort = table.pack, table.unpack, table.concat, table.sort
local sformat, sbyte = string.format, string.byte
local _G, collectgarbage, string, table, math, utf8, os = _G, collectgarbage, string, table, math, utf8, os
local BLOCK, fatal_value, set_fatal, raise_fatal = S.BLOCK, S.fatal_value, S.set_fatal, S.raise_fatal
local new_coroutine, spawn, read_chunk = S.new_coroutine, S.spawn, S.read_chunk
local R = nil
S.on_run(function(r) R = r end)
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ the sandbox

local function forbidden(name, alternative)
    return function()
        raise_fatal("FORBIDDEN_CALL", sformat("%s is not allowed in workflow code (it is not replay-safe): %s",
            name, alternative), 1)
    end
end

-- os, io, debug: tables whose missing keys are forbidden functions. Each run gets its own table and
-- metatable (code can reach both: rawset, getmetatable); the functions are shared.
local function forbidden_index(name, alternative)
    return function(_, k)
        return forbidden(name .. "." .. tostring(k), alternative)
    end
end
local function ignore_write() end
local function forbidden_table(allowed, index)
    local t = {}
    for k, v in next, allowed do t[k] = v end
    return setmetatable(t, { __index = index, __newindex = ignore_write })
end

local IO_ALT = "workflow code cannot do I/O; do it in an activity (a function.lua entry) called with funcs.call"

local function rethrow(ok, ...)
    if not ok then
        local e = ...
        -- (the fatal error is only ever raised once R.fatal_cause is set)
        if R.fatal_cause then error(fatal_value(), 0) end
        if e == "not enough memory" then
            set_fatal("LIMIT_EXCEEDED", "the workflow ran out of Lua memory (limits.lua_memory_bytes)", nil)
            error(fatal_value(), 0)
        end
    end
    return ok, ...
end

-- coroutine.create/resume/wrap stay standard Lua, except that a blocking workflow call inside
-- such a coroutine is passed through to the scheduler (and fatal errors are not swallowed).
local function user_resume(co, ...)
    local r = pack(co_resume(co, ...))
    while r[1] and r[2] == BLOCK and co_status(co) == "suspended" do
        local back = pack(co_yield(BLOCK))
        r = pack(co_resume(co, unpack(back, 1, back.n)))
    end
    return rethrow(unpack(r, 1, r.n))
end

local ucoroutine = {
    create = function(f)
        if type(f) ~= "function" then error("coroutine.create: expected a function", 2) end
        return new_coroutine(f)
    end,
    resume = user_resume,
    yield = co_yield,
    status = co_status,
    running = co_running,
    isyieldable = co_isyieldable,
    close = co_close,
    wrap = function(f)
        if type(f) ~= "function" then error("coroutine.wrap: expected a function", 2) end
        local co = new_coroutine(f)
        return function(...)
            local r = pack(user_resume(co, ...))
            if not r[1] then
                local e = r[2]
                if type(e) == "string" then error(e, 0) end
                error(e, 0)
            end
            return unpack(r, 2, r.n)
        end
    end,
    spawn = function(fn, ...)
        if type(fn) ~= "function" then error("coroutine.spawn: expected a function", 2) end
        spawn(fn, ...)
    end,
}

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end

-- each run gets its own copy of a module (worker/kernel.lua)
local copy_module = S.copy_module

local modules = {
    funcs = S.funcs, time = S.time, uuid = S.uuid, crypto = S.crypto, workflow = S.workflow, json = S.json,
    process = S.process, channel = S.channel, coroutine = ucoroutine, errors = S.errors, ctx = S.ctx,
    hash = S.hash, base64 = S.base64, payload = S.payload, text = S.new_text(),
}
local ALWAYS = { "process", "channel", "coroutine", "errors", "payload" }
local STD = { string = true, table = true, math = true, utf8 = true }

-- Lua seeds its string hash per state, so `pairs` over string keys visits them in a different
-- order in every runtime (and table/function keys by address). Workflow code gets a `pairs` that
-- visits number and boolean keys in table order and, as soon as other keys exist, a sorted
-- snapshot: numbers, then strings, then booleans, then the rest.
local KEY_RANK = { number = 1, string = 2, boolean = 3 }
local function key_lt(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return (KEY_RANK[ta] or 4) < (KEY_RANK[tb] or 4) end
    if ta == "number" or ta == "string" then return a < b end
    if ta == "boolean" then return (not a) and b end
    return false
end

-- The keys of `t` in the order above, or nil when it has only number and boolean keys.
local function sorted_keys(t)
    local plain = true
    for k in next, t do
        local tk = type(k)
        if tk ~= "number" and tk ~= "boolean" then plain = false break end
    end
    if plain then return nil end
    local keys, n = {}, 0
    for k in next, t do
        n = n + 1
        keys[n] = k
    end
    tsort(keys, key_lt)
    return keys
end

local function det_pairs(t)
    local mt = getmetatable(t)
    if mt ~= nil and type(mt) == "table" and rawget(mt, "__pairs") ~= nil then
        return mt.__pairs(t)
    end
    if type(t) ~= "table" then
        error("bad argument #1 to 'pairs' (table expected, got " .. type(t) .. ")", 2)
    end
    local keys = sorted_keys(t)
    if keys == nil then return next, t, nil end
    local i = 0
    return function()
        while true do
            i = i + 1
            local k = keys[i]
            if k == nil then return nil end
            local v = rawget(t, k)
            if v ~= nil then return k, v end
        end
    end, t, nil
end

-- `next` in the same order as `pairs` (`for k, v in next, t do`, `local k = next(t)`): a traversal
-- that starts with next(t) takes a sorted snapshot of the keys and follows it.
local next_order = setmetatable({}, { __mode = "k" }) -- table -> { keys =, pos = key -> index }
local function det_next(t, k)
    if type(t) ~= "table" then
        error("bad argument #1 to 'next' (table expected, got " .. type(t) .. ")", 2)
    end
    local order = next_order[t]
    local i
    if k == nil then
        local keys = sorted_keys(t)
        if keys == nil then
            next_order[t] = nil
            return next(t)
        end
        local pos = {}
        for j = 1, #keys do pos[keys[j]] = j end
        order = { keys = keys, pos = pos }
        next_order[t] = order
        i = 0
    elseif order == nil then
        return next(t, k)
    else
        i = order.pos[k]
        if i == nil then error("invalid key to 'next'", 2) end
    end
    local keys = order.keys
    while true do
        i = i + 1
        local key = keys[i]
        if key == nil then return nil end
        local v = rawget(t, key)
        if v ~= nil then return key, v end
    end
end

-- The functions of every run's globals (shared: they find the running run through R).
local G = {}
G.pairs = det_pairs
G.next = det_next
for _, name in ipairs({ "assert", "error", "ipairs", "rawequal", "rawget", "rawlen",
    "rawset", "select", "getmetatable", "tonumber", "tostring", "type", "_VERSION" }) do
    G[name] = _G[name]
end
-- finalizers run at arbitrary points of garbage collection (outside the instruction limit, and
-- differently on replay): not in workflow code
-- weak tables lose entries when the garbage collector runs, which differs on replay
G.setmetatable = function(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
        raise_fatal("FORBIDDEN_CALL", "__gc metamethods are not allowed in workflow code (finalizers run " ..
            "at non-deterministic points); release resources explicitly or use to-be-closed variables", 1)
    end
    if type(mt) == "table" and rawget(mt, "__mode") ~= nil then
        raise_fatal("FORBIDDEN_CALL", "weak tables (__mode) are not allowed in workflow code: what they " ..
            "keep depends on when the garbage collector runs, which differs on replay", 1)
    end
    return setmetatable(t, mt)
end
G.pcall = function(f, ...) return rethrow(pcall(f, ...)) end
G.xpcall = function(f, h, ...)
    return rethrow(xpcall(f, function(e)
        if R.fatal_cause then return fatal_value() end
        return h(e)
    end, ...))
end
G.print = function(...)
    if R.replaying then return end
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    H.log(concat(parts, "\t"))
end
-- memory use differs between a run and its replay: workflow code sees none of it. The Lua state is
-- shared by the runs of a worker: a full collection would walk all of them, a step is enough.
G.collectgarbage = function(opt)
    if opt == nil or opt == "collect" or opt == "step" then
        collectgarbage("step")
        return 0
    end
    if opt == "count" then return 0 end
    error("collectgarbage(" .. tostring(opt) .. ") is not allowed in workflow code", 2)
end
G.dofile = forbidden("dofile", "list the module in the entry's `modules` and use require")
G.loadfile = forbidden("loadfile", "list the module in the entry's `modules` and use require")
G.load = function(chunk, name, mode, e)
    if mode ~= nil and mode ~= "t" then
        raise_fatal("FORBIDDEN_CALL", "load with mode " .. tostring(mode) ..
            " is not allowed in workflow code: only text chunks (mode \"t\") can be loaded", 1)
    end
    chunk = read_chunk(chunk)
    if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
        raise_fatal("FORBIDDEN_CALL", "loading bytecode is not allowed in workflow code: load Lua source text", 1)
    end
    return load(chunk, name, "t", e or R.env)
end
G.require = function(name)
    local r = R
    local mod = r.modules[name]
    if mod ~= nil then return mod end
    if STD[name] then return r.env[name] end
    raise_fatal("FORBIDDEN_CALL", sformat("require(%q): entry %s does not list module %q in its modules " ..
        "(modules: [%s])%s", tostring(name), r.ENTRY_ID, tostring(name), r.MODULE_NAMES,
        modules[name] ~= nil and "; add it to the entry's `modules`" or ""), 1)
end

-- string.dump must not be reachable through ("").dump either: replace it in the real table. Each
-- run gets a copy of the string table (code may add functions to it); methods on strings
-- (("x"):upper()) look up the running run's copy.
string.dump = forbidden("string.dump", "bytecode is not allowed in workflow code")
local STRING = string
rawset(getmetatable(""), "__index", function(_, k)
    local r = R
    return (r and r.string or STRING)[k]
end)
local MATH = copy(math)
MATH.random = forbidden("math.random", "use uuid.v4() or crypto.random_bytes(n) (recorded, replay-safe)")
MATH.randomseed = forbidden("math.randomseed", "use uuid.v4() or crypto.random_bytes(n) (recorded, replay-safe)")
local OS = {
    time = forbidden("os.time", "use time.now() (the workflow's replay-safe clock)"),
    clock = forbidden("os.clock", "use time.now() and time:sub() to measure workflow time"),
    date = forbidden("os.date", "use time.now():format(...)"),
    getenv = forbidden("os.getenv", "pass configuration in the workflow input or read it in an activity"),
    execute = forbidden("os.execute", IO_ALT),
    exit = forbidden("os.exit", "return from the main function to finish the workflow"),
    remove = forbidden("os.remove", IO_ALT),
    rename = forbidden("os.rename", IO_ALT),
    tmpname = forbidden("os.tmpname", IO_ALT),
    setlocale = forbidden("os.setlocale", IO_ALT),
    difftime = os.difftime,
}
-- A caller (`legato run`, H.caller) is not replayed: it gets the real clock and randomness, as
-- activities do (Lua 5.4 seeds math.random per state). Workflows keep refusing them.
local CALLER_OS = copy(OS)
CALLER_OS.time, CALLER_OS.clock, CALLER_OS.date = os.time, os.clock, os.date
local CALLER_MATH = copy(math)
local NONE = {}
local OS_INDEX = forbidden_index("os", "workflow code cannot use the operating system; use an activity")
local IO_INDEX = forbidden_index("io", IO_ALT)
local DEBUG_INDEX = forbidden_index("debug", "the debug library is not available to workflow code")

-- A run's globals: the shared functions, and its own copies of every table code can change.
local function build_env(r)
    local env = copy(G)
    r.string = copy(STRING)
    env.string = r.string
    env.table = copy(table)
    env.utf8 = copy(utf8)
    env.math = copy(H.caller and CALLER_MATH or MATH)
    env.os = forbidden_table(H.caller and CALLER_OS or OS, OS_INDEX)
    env.io = forbidden_table(NONE, IO_INDEX)
    env.debug = forbidden_table(NONE, DEBUG_INDEX)
    local mods = {}
    for _, name in ipairs(ALWAYS) do
        local m = copy_module(modules[name])
        mods[name] = m
        env[name] = m
    end
    r.modules = mods
    env._G = env
    r.env = env
end

S.modules, S.build_env = modules, build_env
