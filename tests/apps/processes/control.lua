local function sender(target)
    local ok, err = process.send(target, "ping", {n = 1})
    if not ok then return {err = err:kind(), retryable = err:retryable()} end
    local pong = process.listen("pong"):receive()
    return {pong = pong}
end

local function ponger()
    local msg = process.listen("ping", {message = true}):receive()
    process.send(msg:from(), "pong", {got = msg:payload():data().n})
    return msg:from()
end

local function sleeper()
    local time = require("time")
    time.sleep("1h")
    return "woke"
end

local function cancelable()
    local ev = process.events():receive()
    return {kind = ev.kind, note = "cleaned up"}
end

local function watcher(pid)
    local events = process.events()
    local ok, err = process.monitor(pid)
    if not ok then return {err = err:kind()} end
    process.terminate(pid)
    local ev = events:receive()
    return {kind = ev.kind, from = ev.from, err = ev.result.error:kind()}
end

local function linker(pid, trap)
    process.set_options({trap_links = trap})
    local events = process.events()
    process.link(pid)
    process.terminate(pid)
    local ev = events:receive()
    return {kind = ev.kind, from = ev.from}
end

local function canceler(pid)
    local events = process.events()
    process.monitor(pid)
    local ok, err = process.cancel(pid, "30s")
    local ev = events:receive()
    return {ok = ok, kind = ev.kind, value = ev.result.value}
end

-- handles a cancel request with a cleanup that takes a while
local function slow_cancel()
    local time = require("time")
    local ev = process.events():receive()
    time.sleep("300ms")
    return {kind = ev.kind, note = "cleaned up"}
end

-- cancels a child started with or without wait_for_cancellation, then looks (without blocking)
-- whether the child's EXIT is already there
local function cancel_waiter(wait)
    local events = process.events()
    local pid, err = process.with_options({["temporal.workflow.wait_for_cancellation"] = wait})
        :spawn("pr:slow_cancel", "pr:worker")
    if err then return nil, err end
    local ok, cerr = process.cancel(pid, "30s")
    local r = channel.select({events:case_receive(), default = true})
    local ev = r.value
    if r.default then ev = events:receive() end
    return {ok = ok, err = cerr and cerr:kind(), closed_when_cancel_returned = not r.default, kind = ev.kind,
            from_child = ev.from == pid, value = ev.result.value}
end

return {sender = sender, ponger = ponger, sleeper = sleeper, cancelable = cancelable, watcher = watcher,
        linker = linker, canceler = canceler, slow_cancel = slow_cancel, cancel_waiter = cancel_waiter}
