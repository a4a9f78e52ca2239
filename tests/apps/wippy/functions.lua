-- Functions (activities, and a caller run by `legato run`) for tests/apps/wippy/flows.lua.
local function echo(x) return x end

local function slow(v)
    local time = require("time")
    time.sleep("50ms")
    return v
end

local function fails()
    return nil, errors.new({message = "it failed", kind = errors.INVALID})
end

-- a caller: funcs runs function entries directly (not durably)
local function caller_funcs(x)
    local funcs = require("funcs")
    local v, err = funcs.call("wippy:echo", x)
    if err then return nil, err end
    local f = funcs.async("wippy:slow", "later")
    local p = f:response():receive()
    local _, missing = funcs.call("wippy:nobody")
    return {echo = v, async = p:data(), missing = missing:kind()}
end

-- spawns wippy:batch with three start messages, tells it to finish, and collects the acks
local function batch_caller()
    local events = process.events()
    local pid, err = process.with_message("item", 1):with_message("item", 2):with_message("item", 3)
        :spawn_monitored("wippy:batch", "wq")
    if err then return nil, err end
    process.send(pid, "finish", true)
    local acks = {}
    local inbox = process.inbox()
    for _ = 1, 3 do acks[#acks + 1] = inbox:receive():payload():data() end
    local ev = events:receive()
    table.sort(acks)
    return {acks = acks, handled = ev.result.value}
end

return {batch_caller = batch_caller, echo = echo, slow = slow, fails = fails, caller_funcs = caller_funcs}
