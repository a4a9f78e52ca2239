-- Legato's Lua kernel, activity mode: the environment of a function.lua entry (the standard
-- library and the activity flavour of the modules) and its calls. Loaded by worker/kernel.lua.

local S, H, K = ...
local type, pairs, ipairs, select, tostring, error, rawget, pcall, xpcall, load =
    type, pairs, ipairs, select, tostring, error, rawget, pcall, xpcall, load
local co_create, co_resume, co_yield, co_status = coroutine.create, coroutine.resume, coroutine.yield, coroutine.status
local sethook, traceback = debug.sethook, debug.traceback
local pack, unpack, concat = table.pack, table.unpack, table.concat
local sformat, sbyte = string.format, string.byte
local mtype = math.type
local _G, collectgarbage, string, table, math, utf8, os, coroutine =
    _G, collectgarbage, string, table, math, utf8, os, coroutine
local make_error, KIND, is_error, errors, describe_error, user_frame =
    S.make_error, S.KIND, S.is_error, S.errors, S.describe_error, S.user_frame
local new_time, duration_ms, time_constants = S.new_time, S.duration_ms, S.time_constants
local new_uuid, new_hash, new_base64, new_crypto, from_hex = S.new_uuid, S.new_hash, S.new_base64, S.new_crypto,
    S.from_hex
local new_text, json, payload, ctx_get, read_chunk = S.new_text, S.json, S.payload, S.ctx_get, S.read_chunk
local copy_module = S.copy_module
local BLOCK, coop_setup, coop_run, coop_spawn, coop_sleep, coop_after =
    S.BLOCK, S.coop_setup, S.coop_run, S.coop_spawn, S.coop_sleep, S.coop_after
local channel, new_channel, offer = S.channel, S.new_channel, S.offer
local _ENV = S.NO_GLOBALS

---------------------------------------------------------------- activity mode
-- Activities do the side effects, so they get real time and randomness, but not the
-- process: no files, no subprocesses, no exit, no debug library, no bytecode, no Python.
-- Each call gets fresh globals and fresh copies of the libraries (nothing one call sets
-- is seen by the next), an instruction hook that stops it once the host says so (its
-- timeout passed, or the worker is stopping), and the runtime's memory limit.
-- the interruption: once set, every hook call and every pcall re-raises it, so that no
-- handler can swallow it
local STOP = nil
local ACT_HOOK_EVERY = 10000
local function stop_error()
    return make_error(STOP, KIND.TIMEOUT, true, nil, nil)
end
local function check_stop(level)
    if STOP == nil then STOP = H.interrupted() end
    if STOP ~= nil then error(stop_error(), level + 1) end
end

local mods = {}
mods.errors = errors
mods.json = json
mods.time = time_constants({
    now = function() return new_time(H.now_ms()) end,
    -- in a coroutine.spawn'd coroutine, or while one runs, the others run meanwhile (coop.lua)
    sleep = function(d)
        coop_sleep(duration_ms(d, "time.sleep", 2))
        check_stop(2)
    end,
    -- a channel that receives the time at the deadline (workflows' time.after, on the real clock)
    after = function(d)
        local ms = duration_ms(d, "time.after", 2)
        local ch = new_channel(1)
        coop_after(ms, function() offer(ch, new_time(H.now_ms())) end)
        return ch
    end,
})
mods.uuid = new_uuid(function(v) return H.uuid_new(v) end)
mods.hash = new_hash()
mods.base64 = new_base64()
mods.text = new_text()
mods.crypto = new_crypto(function(op, ...) return H.crypto_draw(op, nil, ...) end, H.now_ms)
mods.crypto.random_bytes = function(n)
    if mtype(n) ~= "integer" or n < 0 then error("crypto.random_bytes: expected a whole number >= 0", 2) end
    return from_hex(H.random_hex(n))
end
mods.ctx = {
    get = function(key) return ctx_get(H.context(), key) end,
    all = function() return H.context() end,
}
-- activity.heartbeat(details): records progress (details are kept for the next attempt:
-- activity.heartbeat_details()) and raises an error of kind CANCELED once the workflow has
-- asked to cancel the activity (report it by letting the error through, or returning it).
mods.activity = {
    heartbeat = function(details)
        if H.heartbeat(details) then
            error(make_error("the activity was canceled", KIND.CANCELED, false, nil, user_frame(2)), 2)
        end
    end,
    heartbeat_details = function() return H.heartbeat_details() end,
    is_canceled = function() return H.is_canceled() end,
    info = function() return H.activity_info() end,
}
local function call_function(id, context, ...)
    if type(id) ~= "string" then error("funcs.call: the function id must be a string", 3) end
    local ok, a, b, c, d = H.call_function(id, pack(...), context)
    if ok then return a end
    return nil, make_error(a, b, c, d)
end
mods.funcs = {
    call = function(id, ...) return call_function(id, nil, ...) end,
}
local function new_executor(context)
    local ex = {}
    function ex:with_options(o) return new_executor(context) end
    function ex:with_context(c)
        if type(c) ~= "table" then error(make_error("with_context: expected a table", KIND.INVALID, false), 2) end
        local merged = {}
        for k, v in pairs(context or {}) do merged[k] = v end
        for k, v in pairs(c) do merged[k] = v end
        return new_executor(merged)
    end
    function ex:call(id, ...) return call_function(id, context, ...) end
    return ex
end
mods.funcs.new = function() return new_executor(nil) end

local function act_hook()
    if STOP == nil then
        local why = H.interrupted()
        if why == nil then return end
        STOP = why
    end
    error(stop_error(), 2)
end
local function act_rethrow(ok, ...)
    if not ok and STOP ~= nil then error(stop_error(), 0) end
    return ok, ...
end
local function hooked(co)
    sethook(co, act_hook, "", ACT_HOOK_EVERY)
    return co
end
-- the scheduler (coop.lua) hooks its coroutines, and asks the host only after sleeping the thread
coop_setup(hooked, function(ask_host)
    if STOP == nil and ask_host then STOP = H.interrupted() end
    return STOP ~= nil
end)
-- A coroutine of the code's own that waits on a channel (or sleeps while others run): its wait
-- goes up to the scheduler through every resume, and the answer comes back down (tail calls).
local function resumed(c, ok, v, ...)
    if ok and v == BLOCK and co_status(c) == "suspended" then
        return resumed(c, co_resume(c, co_yield(BLOCK)))
    end
    return act_rethrow(ok, v, ...)
end

local function copy_of(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end
local IO_DENIED = "is not available to activities (no files, processes or environment of the worker)"
local function denied(name)
    return function() error(name .. " " .. IO_DENIED, 2) end
end
-- string.dump must not be reachable through ("").dump either (methods on strings look up the
-- real string table): replace it there; each call's string table is a copy of it.
string.dump = denied("string.dump")

local ENTRY_ID, MODULES, MODULE_NAMES = nil, {}, ""
local BYTECODE, CHUNK_NAME, METHOD = nil, nil, nil

local function new_env()
    local env = {}
    for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
        "rawset", "select", "getmetatable", "setmetatable", "tonumber", "tostring", "type", "_VERSION" }) do
        env[name] = _G[name]
    end
    env.pcall = function(f, ...) return act_rethrow(pcall(f, ...)) end
    env.xpcall = function(f, h, ...)
        return act_rethrow(xpcall(f, function(e)
            if STOP ~= nil then return e end
            return h(e)
        end, ...))
    end
    env.print = function(...)
        local n = select("#", ...)
        local parts = {}
        for i = 1, n do parts[i] = tostring((select(i, ...))) end
        H.log(concat(parts, "\t"))
    end
    env.collectgarbage = function(opt, ...)
        if opt == nil or opt == "collect" or opt == "step" or opt == "count" then
            return collectgarbage(opt, ...)
        end
        error("collectgarbage(" .. tostring(opt) .. ") is not available to activities", 2)
    end
    env.string = copy_of(string)
    env.table = copy_of(table)
    env.math = copy_of(math)
    env.utf8 = copy_of(utf8)
    env.os = {
        time = os.time, clock = os.clock, date = os.date, difftime = os.difftime,
        getenv = denied("os.getenv"), execute = denied("os.execute"), exit = denied("os.exit"),
        remove = denied("os.remove"), rename = denied("os.rename"), tmpname = denied("os.tmpname"),
        setlocale = denied("os.setlocale"),
    }
    local co = copy_of(coroutine)
    co.create = function(f)
        if type(f) ~= "function" then error("coroutine.create: expected a function", 2) end
        return hooked(co_create(f))
    end
    co.wrap = function(f)
        if type(f) ~= "function" then error("coroutine.wrap: expected a function", 2) end
        local c = hooked(co_create(f))
        return function(...)
            local r = pack(resumed(c, co_resume(c, ...)))
            if not r[1] then error(r[2], 0) end
            return unpack(r, 2, r.n)
        end
    end
    co.resume = function(c, ...) return resumed(c, co_resume(c, ...)) end
    co.spawn = function(f, ...)
        if type(f) ~= "function" then error("coroutine.spawn: expected a function", 2) end
        coop_spawn(f, ...)
    end
    env.coroutine = co
    env.dofile = denied("dofile")
    env.loadfile = denied("loadfile")
    env.load = function(chunk, name, mode, e)
        if mode ~= nil and mode ~= "t" then
            error("load with mode " .. tostring(mode) .. " is not available to activities: only text chunks", 2)
        end
        chunk = read_chunk(chunk)
        if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
            error("loading bytecode is not available to activities: load Lua source text", 2)
        end
        return load(chunk, name, "t", e or env)
    end
    local STD = { string = env.string, table = env.table, math = env.math, utf8 = env.utf8, os = env.os,
        coroutine = env.coroutine }
    -- the call's own copies of its modules: the originals serve every call of the runtime
    local own = {}
    for name in pairs(MODULES) do own[name] = copy_module(mods[name]) end
    own.errors = own.errors or copy_module(errors)
    env.require = function(name)
        local m = mods[name]
        if m and MODULES[name] then return own[name] end
        if m then
            error(sformat("require(%q): module %q is not listed in the modules of entry %s (modules: [%s])",
                name, name, ENTRY_ID, MODULE_NAMES), 2)
        end
        if STD[name] then return STD[name] end
        error(sformat("require(%q): no such module for activities (entry %s lists modules: [%s])",
            tostring(name), ENTRY_ID, MODULE_NAMES), 2)
    end
    for name in pairs(MODULES) do env[name] = own[name] end
    env.errors = own.errors
    env.payload = { new = payload.new, format = copy_of(payload.format) }
    env.channel = copy_of(channel)
    env._G = env
    return env
end

-- The entry's function, loaded into fresh globals: (function) or (nil, message).
local function load_entry()
    local env = new_env()
    local chunk, err = load(BYTECODE, "=" .. CHUNK_NAME, "b", env)
    if not chunk then return nil, err end
    local ok, mod = xpcall(chunk, traceback)
    if not ok then return nil, (describe_error(mod)) end
    local fn
    if type(mod) == "function" then fn = mod
    elseif type(mod) == "table" then fn = rawget(mod, METHOD) end
    if fn == nil then fn = rawget(env, METHOD) end
    if type(fn) ~= "function" then
        return nil, sformat("%s: method %q not found: the source must return a function, a table with %q, " ..
            "or define a global function %q", CHUNK_NAME, METHOD, METHOD, METHOD)
    end
    return fn
end

function K.setup(entry_id, modules, method, bytecode, chunk_name)
    ENTRY_ID, BYTECODE, CHUNK_NAME, METHOD = entry_id, bytecode, chunk_name, method
    local names = {}
    for _, m in ipairs(modules) do
        if mods[m] then MODULES[m] = true end
        names[#names + 1] = m
    end
    MODULE_NAMES = concat(names, ", ")
    -- the entry loads once here so that a broken entry is reported before any call
    local fn, err = load_entry()
    if fn == nil then return nil, err end
    return true, nil
end

local function outcome(r)
    if not r[1] and r[2] == "not enough memory" then
        return "raised", "the activity ran out of Lua memory (limits.activity_lua_memory_bytes)",
            KIND.LIMIT_EXCEEDED, false, nil, nil
    end
    if not r[1] then
        local message, kind, retryable, details, source = describe_error(r[2])
        return "raised", message, kind, retryable, details, source
    end
    local e = r[3]
    if e ~= nil then
        if is_error(e) then
            return "returned_error", tostring(e._message), e._kind, e._retryable, e._details
        elseif type(e) == "table" then
            local m = rawget(e, "message")
            return "returned_error", m ~= nil and tostring(m) or H.json_encode(e), rawget(e, "kind"),
                rawget(e, "retryable"), rawget(e, "details")
        end
        return "returned_error", tostring(e), nil, nil, nil
    end
    return "ok", r[2]
end

-- Returns: "ok", value | "returned_error", message, kind, retryable, details
--        | "raised", message, kind, retryable, details, source
function K.call(args)
    STOP = nil
    sethook(act_hook, "", ACT_HOOK_EVERY)
    local fn, err = load_entry()
    if fn == nil then
        sethook()
        if STOP ~= nil then return "raised", STOP, KIND.TIMEOUT, true, nil, nil end
        return "raised", type(err) == "string" and err or "the entry failed to load", KIND.INTERNAL, true, nil, nil
    end
    -- the function runs as the first coroutine of the call's scheduler (coop.lua)
    local r = coop_run(fn, args)
    -- describing the outcome may call the code's metamethods (__tostring, __index): still hooked
    local out = pack(pcall(outcome, r))
    sethook()
    if STOP ~= nil then
        return "raised", STOP, KIND.TIMEOUT, true, nil, nil
    end
    if not out[1] then
        local why = type(out[2]) == "string" and out[2] or "an error while describing it"
        return "raised", "the activity's result cannot be read: " .. why, KIND.INTERNAL, false, nil, nil
    end
    return unpack(out, 2, out.n)
end
K.is_error = is_error
