-- Workflows written the way Wippy code is written (tests/integration/test_wippy_conformance.py).
local funcs = require("funcs")

local function listed(x)
    local process, channel = require("process"), require("channel")
    local ch = channel.new(1)
    ch:send(funcs.call("wippy:echo", x))
    return {value = ch:receive(), pid = type(process.pid()), upper = string.upper("ok")}
end

local function child(n)
    return n * 2
end

local function spawn_by_queue(n)
    local events = process.events()
    local pid, err = process.spawn_monitored("wippy:child", "wq", n)
    if err then return nil, err end
    local ev = events:receive()
    return {kind = ev.kind, value = ev.result.value, from_child = ev.from == pid}
end

local function missing_activity()
    local once = funcs.new():with_options({["activity.retry_policy"] = {maximum_attempts = 1}})
    local _, err = once:call("wippy:nobody_registers_this")
    return {kind = err:kind(), retryable = err:retryable()}
end

local function futures()
    local ok_f = funcs.async("wippy:slow", "done")
    local bad_f = funcs.async("wippy:fails")
    -- nothing blocks while the calls run
    local r, e = ok_f:result()
    local early = {complete = ok_f:is_complete(), result_nil = r == nil and e == nil,
                   error_flag = select(2, ok_f:error())}
    -- wait for both in the order they end: each response channel delivers one value (ok is true
    -- for a failure too: the value is then the error)
    local got = {}
    local waiting = {ok_f, bad_f}
    while #waiting > 0 do
        local cases = {}
        for i, f in ipairs(waiting) do cases[i] = f:response():case_receive() end
        local res = channel.select(cases)
        for i, f in ipairs(waiting) do
            if res.channel == f:response() then
                table.remove(waiting, i)
                if f == ok_f then got.ok = {res.ok, res.value:data()} else got.bad = {res.ok, res.value:kind()} end
                break
            end
        end
    end
    local payload = ok_f:result()
    local err, failed = bad_f:error()
    return {early = early, got = got, payload = payload:data(), failed = failed, bad = err:message()}
end

local function link_normal(n)
    local events = process.events()
    local pid, err = process.spawn("wippy:child", "wq", n)
    if err then return nil, err end
    process.link(pid)
    local ev = events:receive()
    return {kind = ev.kind, value = ev.result.value}
end

-- acknowledges each "item" message to its sender, until "finish"; returns how many it handled
local function batch()
    local items, finish = process.listen("item", {message = true}), process.listen("finish")
    local handled = 0
    while true do
        local res = channel.select({items:case_receive(), finish:case_receive()})
        if res.channel == finish then
            -- what arrived with the finish is handled too
            while true do
                local more = channel.select({items:case_receive(), default = true})
                if more.default then break end
                handled = handled + 1
                process.send(more.value:from(), "ack", more.value:payload():data())
            end
            return handled
        end
        handled = handled + 1
        process.send(res.value:from(), "ack", res.value:payload():data())
    end
end

-- 3. kinds are Wippy's values, everywhere
local function kinds()
    local constants = {}
    for _, name in ipairs({"NOT_FOUND", "ALREADY_EXISTS", "INVALID", "PERMISSION_DENIED", "UNAVAILABLE", "INTERNAL",
                           "CANCELED", "CONFLICT", "TIMEOUT", "RATE_LIMITED", "UNKNOWN"}) do
        constants[name] = errors[name]
    end
    local once = funcs.new():with_options({["activity.retry_policy"] = {maximum_attempts = 1}})
    local _, missing = once:call("wippy:nobody_registers_this")
    local _, returned = funcs.call("wippy:fails")
    local _, raised = pcall(error, errors.new("plain"))
    local given = errors.new({message = "x", kind = "MyKind"})
    return {constants = constants, missing = missing:kind(), returned = returned:kind(),
            plain = raised:kind(), given = given:kind(), text = tostring(raised)}
end

return {kinds = kinds, batch = batch, listed = listed, child = child, spawn_by_queue = spawn_by_queue, missing_activity = missing_activity,
        futures = futures, link_normal = link_normal}
