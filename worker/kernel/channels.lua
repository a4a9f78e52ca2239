-- Legato's Lua kernel: Go-like channels and channel.select, on the mode's scheduler (workflow
-- mode: scheduler.lua; activity mode: coop.lua), which provides wake, this_thread, block and
-- CLOSED. Loaded by worker/kernel.lua.

local S = ...
local type, ipairs, error, setmetatable, getmetatable = type, ipairs, error, setmetatable, debug.getmetatable
local tremove = table.remove
local sformat = string.format
local huge, mtype = math.huge, math.type
local wake, this_thread, block, CLOSED = S.wake, S.this_thread, S.block, S.CLOSED
local _ENV = S.NO_GLOBALS

local CH = { __name = "channel" }
CH.__index = CH

local function new_channel(cap)
    return setmetatable({ capacity = cap, buf = {}, bh = 1, bt = 0, closed = false, rq = {}, sq = {} }, CH)
end

local function drop_select(sel)
    -- a select finished: take its other waiters off their channels
    for _, w in ipairs(sel.waiters) do
        local q = w.q
        for i = 1, #q do
            if q[i] == w then tremove(q, i) break end
        end
    end
end

local function pop_waiter(q)
    local w = q[1]
    if w == nil then return nil end
    tremove(q, 1)
    if w.sel then
        w.sel.done = true
        drop_select(w.sel)
    end
    return w
end

local function wake_receiver(w, ch, v, ok)
    if w.sel then wake(w.t, { channel = ch, value = v, ok = ok }) else wake(w.t, v, ok) end
end

local function wake_sender(w, ch, closed)
    if closed then wake(w.t, CLOSED)
    elseif w.sel then wake(w.t, { channel = ch, value = w.v, ok = true })
    else wake(w.t, true) end
end

local function buffered(ch) return ch.bt - ch.bh + 1 end

local function buf_push(ch, v)
    ch.bt = ch.bt + 1
    ch.buf[ch.bt] = v
end

local function buf_pop(ch)
    local i = ch.bh
    local v = ch.buf[i]
    ch.buf[i] = nil
    ch.bh = i + 1
    return v
end

-- Non-blocking delivery into a channel (signals, timers): returns false when full.
local function offer(ch, v)
    if ch.closed then return false end
    local w = pop_waiter(ch.rq)
    if w then wake_receiver(w, ch, v, true) return true end
    if buffered(ch) < ch.capacity then buf_push(ch, v) return true end
    return false
end

local function try_receive(ch)
    if buffered(ch) > 0 then
        local v = buf_pop(ch)
        local w = pop_waiter(ch.sq)
        if w then buf_push(ch, w.v) wake_sender(w, ch) end
        return true, v, true
    end
    local w = pop_waiter(ch.sq)
    if w then wake_sender(w, ch) return true, w.v, true end
    if ch.closed then return true, nil, false end
    return false
end

local function try_send(ch, v)
    if ch.closed then error("send on closed channel", 3) end
    local w = pop_waiter(ch.rq)
    if w then wake_receiver(w, ch, v, true) return true end
    if buffered(ch) < ch.capacity then buf_push(ch, v) return true end
    return false
end

function CH:send(v)
    if getmetatable(self) ~= CH then error("channel:send: call it as ch:send(value)", 2) end
    if try_send(self, v) then return true end
    local t = this_thread("channel:send")
    self.sq[#self.sq + 1] = { t = t, v = v, q = self.sq }
    local r = block()
    if r == CLOSED then error("send on closed channel", 2) end
    return true
end

function CH:receive()
    if getmetatable(self) ~= CH then error("channel:receive: call it as ch:receive()", 2) end
    local done, v, ok = try_receive(self)
    if done then return v, ok end
    local t = this_thread("channel:receive")
    self.rq[#self.rq + 1] = { t = t, q = self.rq }
    return block()
end

function CH:close()
    if self.closed then error("close of closed channel", 2) end
    self.closed = true
    while true do
        local w = pop_waiter(self.rq)
        if not w then break end
        wake_receiver(w, self, nil, false)
    end
    while true do
        local w = pop_waiter(self.sq)
        if not w then break end
        wake_sender(w, self, true)
    end
end

function CH:case_receive() return { ch = self, recv = true } end
function CH:case_send(v) return { ch = self, recv = false, v = v } end
function CH:len() return buffered(self) end
function CH:cap() return self.capacity == huge and -1 or self.capacity end
function CH:is_closed() return self.closed end

local channel = {}
function channel.new(n)
    if n ~= nil and (mtype(n) ~= "integer" or n < 0) then
        error("channel.new: the buffer size must be a whole number >= 0", 2)
    end
    return new_channel(n or 0)
end

-- The chosen case: {channel, value, ok} (value: what was received or sent; ok false for a closed
-- channel's receive), or {default = true, ok = true}, as Wippy's channel.md has it.
function channel.select(cases)
    if type(cases) ~= "table" then error("channel.select: expected a table of cases", 2) end
    local n = #cases
    for i = 1, n do
        local c = cases[i]
        if type(c) ~= "table" or getmetatable(c.ch) ~= CH then
            error(sformat("channel.select: case %d is not ch:case_receive() or ch:case_send(v)", i), 2)
        end
        if c.recv then
            local done, v, ok = try_receive(c.ch)
            if done then return { channel = c.ch, value = v, ok = ok } end
        else
            if c.ch.closed then error("send on closed channel", 2) end
            if try_send(c.ch, c.v) then return { channel = c.ch, value = c.v, ok = true } end
        end
    end
    if cases.default then return { default = true, ok = true } end
    local t = this_thread("channel.select")
    local sel = { done = false, waiters = {} }
    for i = 1, n do
        local c = cases[i]
        local q = c.recv and c.ch.rq or c.ch.sq
        local w = { t = t, sel = sel, v = c.v, q = q }
        q[#q + 1] = w
        sel.waiters[i] = w
    end
    local r = block()
    if r == CLOSED then error("send on closed channel", 2) end
    return r
end

S.protect(CH)
S.CH, S.new_channel, S.offer, S.channel = CH, new_channel, offer, channel
