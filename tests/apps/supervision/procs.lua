-- Processes of tests/apps/supervision (process.lua entries)

-- ping -> pong to the sender; crash -> raise; stop -> return how many pings it answered
local function echo(greeting)
    local inbox = process.inbox()
    local n = 0
    while true do
        local msg = inbox:receive()
        local topic = msg:topic()
        if topic == "ping" then
            n = n + 1
            process.send(msg:from(), "pong", {n = n, echo = msg:payload():data(), greeting = greeting,
                                              me = process.pid()})
        elseif topic == "crash" then
            error("crash requested")
        elseif topic == "stop" then
            return {stopped = true, count = n}
        end
    end
end

local function doubler(x) return {doubled = x * 2} end

local function raises() error("boom from a process") end

local function sleeper()
    process.inbox():receive()
    return "woke"
end

-- tells `to` its pid once it runs (its mailbox is open then), then waits
local function announcer(to)
    process.send(to, "pid", process.pid())
    process.inbox():receive()
    return "woke"
end

local function cancelable()
    local ev = process.events():receive()
    return {got = ev.kind}
end

-- spawns an echo on the host (a process spawning a process), pings it, reports to `to`
local function relay(to)
    local pid, err = process.spawn_monitored("pr:echo", "pr:host", "relayed")
    if not pid then return nil, err end
    local pong = process.listen("pong")
    process.send(pid, "ping", "via relay")
    local answer = pong:receive()
    process.send(pid, "stop")
    local ev = process.events():receive()
    process.send(to, "relayed", {answer = answer, exit = ev.kind, value = ev.result.value})
    return true
end

local function hog()
    local parts = {}
    for i = 1, 64 do parts[i] = string.rep("x", 1024 * 1024) .. i end  -- 64 MB and more
    return #parts
end

local function spin()
    while true do end
end

local function crasher() error("crashing at start") end

-- waits; answers "ping" with "alive" (and the CANCELs it got); a CANCEL event ends it, unless
-- `stubborn` (then it counts them and goes on)
local function parked(stubborn)
    local inbox, events = process.inbox(), process.events()
    local cancels, reason = 0, nil
    while true do
        local r = channel.select({inbox:case_receive(), events:case_receive()})
        if r.channel == events then
            if r.value.kind == process.event.CANCEL then
                if not stubborn then return {canceled = r.value.reason} end
                cancels, reason = cancels + 1, r.value.reason
            end
        else
            process.send(r.value:from(), "alive", {pid = process.pid(), cancels = cancels, reason = reason})
        end
    end
end

return {hog = hog, announcer = announcer, echo = echo, doubler = doubler, raises = raises, sleeper = sleeper, cancelable = cancelable,
        relay = relay, spin = spin, crasher = crasher, parked = parked}
