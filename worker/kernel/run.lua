-- Legato's Lua kernel, workflow mode: the host's side. A run's state (K.new_run, K.enter, K.drop),
-- its entry's code (loaded once per Lua state: shared_chunk), and running it (K.start, K.begin,
-- K.run, K.stacks). Loaded last by worker/kernel.lua.

local S, H, K = ...
local type, pairs, rawget, rawset, setmetatable, load, error = type, pairs, rawget, rawset, setmetatable, load, error
local co_resume, co_status = coroutine.resume, coroutine.status
local sethook, getinfo = debug.sethook, debug.getinfo
local pack, unpack, concat, tsort = table.pack, table.unpack, table.concat, table.sort
local sformat = string.format
local KIND, is_error, describe_error, co_user_frame, own_source = S.KIND, S.is_error, S.describe_error,
    S.co_user_frame, S.own_source
local BLOCK, HOOK_EVERY, hook, spawn, set_run = S.BLOCK, S.HOOK_EVERY, S.hook, S.spawn, S.set_run
local modules, copy_module, build_env = S.modules, S.copy_module, S.build_env
local R = nil
S.on_run(function(r) R = r end)
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ the host's side

-- new_run(workflow_id): a new run's state, which becomes the running one; the host keeps it and
-- enters it (K.enter) before each of its workflow tasks.
-- The tables of a run's state made on first use (most runs never use most of them).
local LAZY = { pending_activity = true, pending_timer = true, listeners = true, pending_signals = true,
    pending_events = true, children = true, child_pids = true, pending_proc = true, monitors = true, links = true,
    exited = true }
local RUN = { __index = function(r, k)
    if LAZY[k] then
        local t = {}
        rawset(r, k, t)
        return t
    end
end }

function K.new_run(workflow_id)
    local r = setmetatable({
        workflow_id = workflow_id,
        rq_t = {}, rq_v = {}, rq_head = 1, rq_tail = 0,
        nthreads = 0, replaying = false, now_ms = 0,
        ncommands = 0, max_commands = 10000, hook_calls = 0, hook_max = 50000,
        seq_activity = 0, seq_timer = 0, proc_seq = 0, trap_links = false, ENTRY_ID = "", MODULE_NAMES = "",
    }, RUN)
    set_run(r)
    build_env(r)
    return r
end

function K.enter(r)
    set_run(r)
end

-- The run is gone (evicted, failed or closed): nothing of it stays reachable from the kernel.
function K.drop(r)
    if R == r then set_run(nil) end
end

-- The fatal error that ended the running run's task, if any: cause, message, source.
function K.fatal()
    local r = R
    if r == nil then return nil end
    return r.fatal_cause, r.fatal_message, r.fatal_source
end

-- A workflow entry's code is compiled with a first statement that takes the running run's globals
-- (worker/entries.py, WORKFLOW_PRELUDE): `local _ENV = __legato_env();`. Its chunk is then loaded
-- once per Lua state and called once per run: the runs share its function prototypes (the bytecode,
-- constants and debug information), and each call makes the run's own closures over its own _ENV.
-- The chunk's upvalue is this table, which code never sees (the prelude shadows it at once).
local CHUNK_ENV = { __legato_env = function() return R.env end }
local chunks, nchunks = {}, 0 -- bytecode -> chunk
local MAX_CHUNKS = 256

local function shared_chunk(bytecode, chunk_name)
    local chunk = chunks[bytecode]
    if chunk ~= nil then return chunk end
    local err
    chunk, err = load(bytecode, "=" .. chunk_name, "b", CHUNK_ENV)
    if not chunk then return nil, err end
    if nchunks >= MAX_CHUNKS then chunks, nchunks = {}, 0 end
    chunks[bytecode] = chunk
    nchunks = nchunks + 1
    return chunk
end

-- setup(entry_id, modules (list), method, bytecode, chunk_name, max_commands, max_instructions, prelude)
-- prelude: the bytecode starts with the prelude above (a workflow entry's); else the chunk is
-- loaded with the run's globals as its _ENV (a caller's function entry).
function K.setup(entry_id, mods, method, bytecode, chunk_name, max_cmds, max_instructions, prelude)
    local r = R
    r.ENTRY_ID = entry_id
    -- The main thread is hooked too: the kernel calls into values the code made (__tostring,
    -- __index, __eq of errors and payloads) outside the workflow's coroutines.
    r.hook_calls, r.hook_max = 0, (max_instructions or 50000000) // HOOK_EVERY
    sethook(hook, "", HOOK_EVERY)
    local names = {}
    local env = r.env
    for i = 1, #mods do
        local name = mods[i]
        names[#names + 1] = name
        if modules[name] then
            local m = r.modules[name]
            if m == nil then
                m = copy_module(modules[name])
                r.modules[name] = m
            end
            env[name] = m
        end
    end
    r.MODULE_NAMES = concat(names, ", ")
    r.max_commands = max_cmds
    local chunk, err
    if prelude then
        chunk, err = shared_chunk(bytecode, chunk_name)
    else
        chunk, err = load(bytecode, "=" .. chunk_name, "b", env)
    end
    if not chunk then return nil, err end
    r.entry = { chunk, method, chunk_name }
    return true, nil
end

function K.start(args)
    local r = R
    local chunk, method, chunk_name = unpack(r.entry, 1, 3)
    local env = r.env
    r.entry = nil
    r.main_thread = spawn(function(...)
        local mod = chunk()
        local fn
        if type(mod) == "function" then fn = mod
        elseif type(mod) == "table" then fn = rawget(mod, method) end
        if fn == nil then fn = rawget(env, method) end
        if type(fn) ~= "function" then
            error(sformat("%s: method %q not found: the source must return a function, a table with %q, " ..
                "or define a global function %q", chunk_name, method, method, method), 0)
        end
        return fn(...)
    end, unpack(args, 1, args.n))
end

function K.begin(now, is_replaying)
    local r = R
    r.now_ms, r.replaying, r.ncommands, r.hook_calls = now, is_replaying, 0, 0
    sethook(hook, "", HOOK_EVERY)
end

-- Run every ready coroutine until all are blocked.
-- Returns "blocked" | "done", value, err | "error", message, kind, retryable, details, source
--       | "fatal", cause, message, source | "continue", workflow type or nil, args (packed), source
function K.run(max_instructions)
    local r = R
    r.hook_calls, r.hook_max = 0, max_instructions // HOOK_EVERY
    if r.link_down ~= nil then
        -- a linked workflow ended abnormally and this one does not trap links: it ends too
        return "done", nil, r.link_down
    end
    local rq_t, rq_v = r.rq_t, r.rq_v
    while r.rq_head <= r.rq_tail do
        local head = r.rq_head
        local t, v = rq_t[head], rq_v[head]
        rq_t[head], rq_v[head] = nil, nil
        r.rq_head = head + 1
        r.current = t
        local res
        if v then res = pack(co_resume(t.co, unpack(v, 1, v.n))) else res = pack(co_resume(t.co)) end
        r.current = nil
        if r.fatal_cause then
            return "fatal", r.fatal_cause, r.fatal_message, r.fatal_source
        end
        if not res[1] then
            local e = res[2]
            if e == "not enough memory" then
                return "fatal", "LIMIT_EXCEEDED", "the workflow ran out of Lua memory (limits.lua_memory_bytes)",
                    co_user_frame(t.co)
            end
            return "error", describe_error(e, t.co)
        end
        if r.continue_as_new ~= nil then
            local c = r.continue_as_new
            return "continue", c.source, c.args, c.line
        end
        if co_status(t.co) == "dead" then
            if t == r.main_thread then
                return "done", res[2], res[3]
            end
        elseif res[2] ~= BLOCK then
            return "error", "coroutine.yield was called outside a coroutine made with coroutine.create; " ..
                "use channels to wait in workflow code", KIND.INTERNAL, false, nil, co_user_frame(t.co)
        end
    end
    return "blocked"
end

function K.is_error(v) return is_error(v) end

-- The running run's coroutines and where each is: {id, main, status, frames = {{source, line,
-- name}...}} with the workflow code's own frames, innermost first (the kernel's are left out).
function K.stacks()
    local out = {}
    for t in pairs(rawget(R, "threads") or {}) do
        local status = co_status(t.co)
        if status ~= "dead" then
            local frames = {}
            local level = 0
            while true do
                local info = getinfo(t.co, level, "Sln")
                if info == nil then break end
                if info.what ~= "C" and not own_source(info.source) and info.currentline and info.currentline > 0 then
                    frames[#frames + 1] = { source = info.short_src, line = info.currentline, name = info.name }
                end
                level = level + 1
            end
            out[#out + 1] = { id = t.id, main = t == R.main_thread, status = status, frames = frames }
        end
    end
    tsort(out, function(a, b) return a.id < b.id end)
    return out
end

sethook(hook, "", HOOK_EVERY)
