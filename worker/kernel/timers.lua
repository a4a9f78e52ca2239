-- Legato's Lua kernel, workflow mode: durable timers and the workflow's time module (the clock of
-- its history, sleep, after, timer, ticker). Loaded by worker/kernel.lua.

local S, H, K = ...
local tostring, error, setmetatable = tostring, error, setmetatable
local ceil = math.ceil
local user_frame, new_time, duration_ms, time_constants = S.user_frame, S.new_time, S.duration_ms, S.time_constants
local new_channel, offer = S.new_channel, S.offer
local this_thread, block, wake, push_ready, count_command = S.this_thread, S.block, S.wake, S.push_ready,
    S.count_command
local R = nil
S.on_run(function(r) R = r end)
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ timers and time

local function start_timer(ms, on_fire)
    count_command()
    R.seq_timer = R.seq_timer + 1
    local tid = tostring(R.seq_timer)
    local fire_ms = ceil(ms)
    if fire_ms < 1 then fire_ms = 1 end
    H.start_timer(tid, fire_ms, user_frame(3))
    R.pending_timer[tid] = on_fire
    return tid
end

function K.fire_timer(tid)
    local f = R.pending_timer[tid]
    if f then
        R.pending_timer[tid] = nil
        f()
    end
end

local TIMER = { __name = "timer" }
TIMER.__index = TIMER
function TIMER:channel() return self._ch end
TIMER.response = TIMER.channel
function TIMER:stop()
    if R.pending_timer[self._tid] then
        R.pending_timer[self._tid] = nil
        count_command()
        H.cancel_timer(self._tid, user_frame(2))
        return true
    end
    return false
end

local time = time_constants({})
function time.now() return new_time(R.now_ms) end
function time.sleep(d)
    local ms = duration_ms(d, "time.sleep", 2)
    local t = this_thread("time.sleep")
    if ms <= 0 then
        push_ready(t, nil)
        block()
        return
    end
    start_timer(ms, function() wake(t) end)
    block()
end
function time.after(d)
    local ms = duration_ms(d, "time.after", 2)
    local ch = new_channel(1)
    start_timer(ms, function() offer(ch, new_time(R.now_ms)) end)
    return ch
end
function time.timer(d)
    local ms = duration_ms(d, "time.timer", 2)
    local ch = new_channel(1)
    local tid = start_timer(ms, function() offer(ch, new_time(R.now_ms)) end)
    return setmetatable({ _tid = tid, _ch = ch }, TIMER)
end
-- timer:reset(d): as Go's Timer.Reset: stop it if it has not fired, then fire after d (on the
-- same channel); true when it had not fired yet.
function TIMER:reset(d)
    local ms = duration_ms(d, "timer:reset", 2)
    local was_pending = self:stop()
    local ch = self._ch
    self._tid = start_timer(ms, function() offer(ch, new_time(R.now_ms)) end)
    return was_pending
end

-- time.ticker(d): a tick on ticker:channel() every d until ticker:stop(); as Go's, a tick the
-- code has not taken yet makes the next one be dropped (the channel holds one). Each period is a
-- durable timer of the history.
local TICKER = { __name = "ticker" }
TICKER.__index = TICKER
function TICKER:channel() return self._ch end
TICKER.response = TICKER.channel
function TICKER:stop()
    self._stopped = true
    if R.pending_timer[self._tid] then
        R.pending_timer[self._tid] = nil
        count_command()
        H.cancel_timer(self._tid, user_frame(2))
    end
end
function time.ticker(d)
    local ms = duration_ms(d, "time.ticker", 2)
    if ms < 1 then error("time.ticker: the period must be positive", 2) end
    local tk = setmetatable({ _ch = new_channel(1), _stopped = false }, TICKER)
    local function arm()
        tk._tid = start_timer(ms, function()
            offer(tk._ch, new_time(R.now_ms))
            if not tk._stopped then arm() end
        end)
    end
    arm()
    return tk
end

S.protect(TIMER, TICKER)
S.time = time
