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

return {sender = sender, ponger = ponger, sleeper = sleeper, cancelable = cancelable, watcher = watcher,
        linker = linker, canceler = canceler}
