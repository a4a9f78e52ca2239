-- Legato's Lua kernel, activity mode: the cooperative scheduler of one activity call. The
-- function and the coroutines it starts with coroutine.spawn run in turn on the worker's thread
-- until the function returns: a coroutine that waits on a channel lets the others run, one that
-- sleeps is parked until its deadline, and when none can run the thread sleeps (the host's sleep,
-- which ends early at the attempt's deadline or when the worker stops) until the nearest one.
-- It provides what worker/kernel/channels.lua needs (wake, this_thread, block, CLOSED), so
-- activities get the workflows' channels. Loaded by worker/kernel.lua before channels.lua.
--
-- Unlike the workflow scheduler nothing here is replayed: deadlines are the host's monotonic
-- clock, and the order among coroutines that are ready at once is FIFO only as a courtesy.

local S, H = ...
local error, pcall, setmetatable, getmetatable, tostring = error, pcall, setmetatable, debug.getmetatable, tostring
local co_create, co_resume, co_yield, co_status, co_isyieldable =
    coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.isyieldable
local pack, unpack, tsort = table.pack, table.unpack, table.sort
local sformat, sfind, ceil = string.format, string.find, math.ceil
local co_user_frame, describe_error = S.co_user_frame, S.describe_error
local _ENV = S.NO_GLOBALS

local BLOCK = setmetatable({}, { __name = "legato.block" })
local NO_VALUES = pack() -- (never written: a coroutine resumed with nothing)
local DONE = setmetatable({}, { __name = "legato.done" }) -- a reusable main coroutine's function returned
local CLOSED = setmetatable({}, { __name = "legato.closed" })

-- The running call's scheduler (nil between calls). A call may run another entry of the same
-- Lua state (funcs.call of itself): coop_run keeps the outer one and puts it back.
local RUN = nil
-- Set by the activity module (worker/kernel/activity.lua, S.coop_setup): hooked(co) gives the
-- coroutine the instruction hook; stopped(ask_host) says whether the call has been interrupted
-- (its timeout, the worker stopping), asking the host only when ask_host is true.
local hooked, stopped = nil, nil

local function push_ready(run, t, vals)
    local n = run.tail + 1
    run.tail = n
    local q = run.rq
    q[n + n - 1], q[n + n] = t, vals
end

-- (to the scheduler of t's own call: a nested call runs a scheduler of its own meanwhile)
local function wake(t, ...)
    push_ready(t.run, t, pack(...))
end

-- The scheduler's coroutine that runs the caller, to park it; `what` says where it waits (the
-- deadlock error names it).
local function this_thread(what)
    local run = RUN
    if run == nil or run.current == nil or not co_isyieldable() then
        error(what .. ": cannot block here (only in the activity's function or a coroutine.spawn'd one, "
            .. "not in the entry's top-level code or inside a C call such as a table.sort comparator)", 3)
    end
    local t = run.current
    t.waits = what
    return t
end

local function block() return co_yield(BLOCK) end

local function new_thread(run, fn, main)
    run.nthreads = run.nthreads + 1
    run.live = run.live + 1
    return { co = hooked(co_create(fn)), id = run.nthreads, main = main, run = run }
end

-- The main coroutine is reused from call to call (a coroutine and its hook cost more than a short
-- activity): it runs each call's function and yields DONE with its results, then waits for the
-- next. One whose function failed, or that was abandoned waiting, is not reused.
local function call_it(t)
    local fn, args = t.fn, t.args
    t.fn, t.args = nil, nil -- (nothing of a call stays reachable from the idle coroutine)
    return fn(unpack(args, 1, args.n))
end
local function main_body(t)
    while true do co_yield(DONE, call_it(t)) end
end
local spare, spare_run = nil, nil -- the main coroutine, and a run's table, reused (coop_run)

-- coroutine.spawn(fn, ...): fn(...) runs once the caller blocks or sleeps.
local function spawn(fn, ...)
    local run = RUN
    if run == nil then error("coroutine.spawn: only while the activity's function runs", 3) end
    push_ready(run, new_thread(run, fn, false), pack(...))
end

-- A timer: fire() at the host's monotonic clock `at` (ms). Sorted by deadline, then by start.
local function add_timer(run, ms, fire)
    run.seq = run.seq + 1
    local timers = run.timers
    if timers == nil then
        timers = {}
        run.timers = timers
    end
    timers[#timers + 1] = { at = H.monotonic_ms() + ms, seq = run.seq, fire = fire }
end

local function timer_lt(a, b)
    if a.at ~= b.at then return a.at < b.at end
    return a.seq < b.seq
end

-- Fires the timers that are due (in deadline order); returns the ms until the next one, or nil.
local function fire_due(run)
    local timers = run.timers
    if timers == nil or #timers == 0 then return nil end
    tsort(timers, timer_lt)
    local now = H.monotonic_ms()
    local keep = {}
    for i = 1, #timers do
        local tm = timers[i]
        if tm.at <= now then tm.fire() else keep[#keep + 1] = tm end
    end
    run.timers = keep
    if #keep == 0 then return nil end
    return keep[1].at - now
end

-- time.sleep(ms) (H.sleep ends early at the attempt's deadline or when the worker stops): parks the caller until its deadline (0: lets the others run first). The host
-- sleeps the thread directly when the function is alone (no coroutine, no timer: what every
-- activity did before coroutine.spawn, at no cost), or when the caller cannot be parked (the
-- entry's top-level code, inside a C call).
local function sleep(ms)
    local run = RUN
    if run == nil or run.current == nil or not co_isyieldable()
        or (run.live == 1 and run.head > run.tail and (run.timers == nil or #run.timers == 0)) then
        H.sleep(ms) -- ends early at the attempt's deadline, or when the worker stops
        return
    end
    local t = run.current
    t.waits = "time.sleep"
    if ms <= 0 then
        push_ready(run, t, NO_VALUES)
    else
        add_timer(run, ms, function() push_ready(run, t, NO_VALUES) end)
    end
    block()
end

-- time.after: fire() at the deadline (it delivers into the timer's channel).
local function after(ms, fire)
    local run = RUN
    if run == nil then error("time.after: only while the activity's function runs", 3) end
    add_timer(run, ms, fire)
end

local function report(t, message)
    H.warn(sformat("a coroutine.spawn'd coroutine (#%d) %s", t.id - 1, message))
end

local function deadlock(run)
    local main = run.main
    local at = co_user_frame(main.co)
    return sformat("deadlock: every coroutine of the activity waits on a channel (the function waits in %s%s)",
        main.waits or "a channel", at and (" at " .. at) or "")
end

local STOPPED = "the activity was stopped" -- K.call reports the stop's own reason
local YIELDED = "attempt to yield from outside a coroutine (coroutine.yield in the activity's function: " ..
    "wait on a channel for the coroutine.spawn'd ones)"

-- How a resume of the main coroutine ended: nil (it waits), or the call's end, pack(true,
-- results...) | pack(false, error). Its body never returns, so an error is the only way it dies.
local function main_resumed(t, ok, v, ...)
    if not ok then return pack(false, v) end
    if v == DONE then
        spare = t
        return pack(true, ...)
    end
    if v == BLOCK then return nil end
    return pack(false, YIELDED)
end

-- How a spawned coroutine's resume ended: its error, or a stray yield, is only reported.
local function spawned_resumed(run, t, ok, v)
    if co_status(t.co) == "dead" then
        run.live = run.live - 1
        if not ok then
            if v == "not enough memory" then return pack(false, v) end -- the memory limit ends the call
            local message, _, _, _, source = describe_error(v, t.co)
            message = tostring(message)
            if source and not sfind(message, source, 1, true) then message = message .. " (at " .. source .. ")" end
            report(t, "failed: " .. message)
        end
    elseif v ~= BLOCK then
        run.live = run.live - 1
        report(t, "called coroutine.yield outside a coroutine.create'd one: it is dropped")
    end
    return nil
end

-- Resumes t; returns nil to go on, or how the call ends.
local function step(run, t, vals)
    run.current = t
    local result
    if t.main then
        result = main_resumed(t, co_resume(t.co, unpack(vals, 1, vals.n)))
    else
        result = spawned_resumed(run, t, co_resume(t.co, unpack(vals, 1, vals.n)))
    end
    run.current = nil
    if stopped(false) then return pack(false, STOPPED) end
    return result
end

local function loop(run)
    while true do
        if run.head <= run.tail then
            local h = run.head
            local q = run.rq
            local t, vals = q[h + h - 1], q[h + h]
            q[h + h - 1], q[h + h] = nil, nil
            run.head = h + 1
            local result = step(run, t, vals)
            if result ~= nil then return result end
        else
            local wait = fire_due(run)
            if run.head > run.tail then
                if wait == nil then return pack(false, deadlock(run)) end
                H.sleep(ceil(wait))
                if stopped(true) then return pack(false, STOPPED) end
            end
        end
    end
end

-- Runs fn(args...) with the coroutines it spawns until fn ends: pack(true, results...) or
-- pack(false, error). Coroutines still running then are abandoned (never resumed again).
-- The function runs first, straight away: one that neither blocks nor sleeps while others run
-- (most activities) ends without the scheduler's loop (every instruction here is hooked).
local function coop_run(fn, args)
    local outer = RUN
    local t = spare
    if t == nil then
        t = { main = true, id = 1 }
        t.co = hooked(co_create(main_body))
    end
    spare = nil
    local run = spare_run
    if run == nil then
        run = { rq = {}, head = 1, tail = 0, timers = nil, seq = 0, nthreads = 1, live = 1, main = t, current = t }
    else
        spare_run = nil
        run.main, run.current = t, t
    end
    t.fn, t.args, t.run, t.waits = fn, args, run, nil
    RUN = run
    -- (a fresh coroutine starts main_body(t); a spare one goes on from its last yield)
    local ok, result = pcall(main_resumed, t, co_resume(t.co, t))
    run.current = nil
    if ok and result == nil then
        ok, result = pcall(loop, run) -- (pcall: the scheduler's own errors, out of memory)
    elseif run.tail == 0 and run.timers == nil then
        -- nothing spawned, no timer: nothing else holds the run's table, the next call takes it
        run.main = nil
        spare_run = run
    end
    RUN = outer
    if not ok then return pack(false, result) end
    return result
end

S.protect(getmetatable(BLOCK), getmetatable(CLOSED), getmetatable(DONE))
S.BLOCK, S.CLOSED, S.wake, S.this_thread, S.block = BLOCK, CLOSED, wake, this_thread, block
S.coop_spawn, S.coop_sleep, S.coop_after, S.coop_run = spawn, sleep, after, coop_run
function S.coop_setup(hook_fn, stopped_fn) hooked, stopped = hook_fn, stopped_fn end
