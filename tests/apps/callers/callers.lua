local function spawn_exit(name)
    local events = process.events()
    local pid, err = process.spawn_monitored("cl:greet", "cl:worker", name)
    if not pid then return nil, err end
    local ev = events:receive()
    return {kind = ev.kind, same = ev.from == pid, value = ev.result.value, pid_is_string = type(pid) == "string"}
end

local function exec_one(name)
    return process.exec("cl:greet", "cl:worker", name)
end

local function exec_fail()
    local result, err = process.exec("cl:broken", "cl:worker", "no stock")
    return {result = result, kind = err:kind(), retryable = err:retryable(), message = err:message()}
end

local function options()
    local pid, err = process.with_options({["temporal.workflow.id"] = "caller-opt-1"})
        :with_context({user = "ann"})
        :spawn_monitored("cl:greet", "cl:worker", "Bo")
    if not pid then return nil, err end
    local ev = process.events():receive()
    return {pid = pid, value = ev.result.value}
end

-- seed 002's caller side: send, then wait for the reply or a timeout
local function ask(pid, replies, topic, payload)
    local ok, err = process.send(pid, topic, payload)
    if not ok then return nil, err end
    local r = channel.select{replies.ok:case_receive(), replies.nak:case_receive(), time.after("10s"):case_receive()}
    if r.channel == replies.ok then return {ok = r.value} end
    if r.channel == replies.nak then return {nak = r.value} end
    return {timeout = true}
end

local function request_reply()
    local pid, err = process.spawn("cl:counter", "cl:worker", 10)
    if not pid then return nil, err end
    local replies = {ok = process.listen("ok"), nak = process.listen("nak")}
    local a = ask(pid, replies, "increment", {amount = 5})
    local b = ask(pid, replies, "increment", {amount = "lots"})
    local c = ask(pid, replies, "increment", {amount = 1})
    local d = ask(pid, replies, "finish", {})
    return {a = a, b = b, c = c, d = d}
end

local function timeout()
    local pid = process.spawn("cl:waiter", "cl:worker")
    local replies = process.listen("reply")
    process.send(pid, "hello", {})
    local r = channel.select{replies:case_receive(), time.after("200ms"):case_receive()}
    process.terminate(pid)
    return {timed_out = r.channel ~= replies}
end

local function unknown_target()
    local ok, err = process.send("no-such-workflow", "ping", {})
    local ok2, err2 = process.send("@gone-caller", "ping", {})
    return {ok = ok, kind = err:kind(), retryable = err:retryable(), ok2 = ok2, kind2 = err2:kind()}
end

local function bad_option()
    local ok, err = pcall(process.with_options, {["temporal.workflow.colour"] = "red"})
    return {ok = ok, kind = err:kind(), message = err:message()}
end

local function returns_error()
    return nil, errors.new({message = "nothing to do", kind = errors.NOT_FOUND})
end

local function monitor_terminate()
    local pid = process.spawn_monitored("cl:waiter", "cl:worker")
    local events = process.events()
    local ok, err = process.terminate(pid)
    if not ok then return nil, err end
    local ev = events:receive()
    return {kind = ev.kind, err = ev.result.error and ev.result.error:kind()}
end

-- A plain spawn asks for no EXIT: the first event is the monitored one's, though the plain one ended first.
local function plain_spawn_no_exit()
    local events = process.events()
    local plain = process.spawn("cl:waiter", "cl:worker")
    local ok, err = process.terminate(plain)
    if not ok then return nil, err end
    local watched = process.spawn_monitored("cl:waiter", "cl:worker")
    ok, err = process.terminate(watched)
    if not ok then return nil, err end
    local ev = events:receive()
    return {first_from_watched = ev.from == watched, from_plain = ev.from == plain}
end

local function pid_and_sleep()
    local time = require("time")
    local json = require("json")
    local uuid = require("uuid")
    local pid = process.pid()
    local t0 = time.now()
    time.sleep("50ms")
    local waited = time.now():sub(t0):milliseconds()
    local ch = channel.new(1)
    coroutine.spawn(function() ch:send(json.encode({n = 1})) end)
    return {caller = pid:sub(1, 1) == "@", waited = waited >= 50, got = ch:receive(), uuid = #uuid.v4()}
end

-- cancel of a workflow started with wait_for_cancellation: returns once it has closed
local function cancel_waits()
    local events = process.events()
    local pid, err = process.with_options({["temporal.workflow.wait_for_cancellation"] = true})
        :spawn("cl:waiter", "cl:worker")
    if not pid then return nil, err end
    local ok = process.cancel(pid, "30s")
    local r = channel.select({events:case_receive(), default = true})
    return {ok = ok, closed = not r.default, kind = r.value and r.value.kind,
            err = r.value and r.value.result.error and r.value.result.error:kind()}
end

-- a caller is not replayed: the real clock and randomness, as in activities (issue 15, point 3)
local function real_world()
    local draws = {}
    for i = 1, 20 do draws[i] = math.random(1, 1000000) end
    local distinct = {}
    for _, d in ipairs(draws) do distinct[d] = true end
    local n = 0
    for _ in pairs(distinct) do n = n + 1 end
    return {time = os.time(), year = os.date("!%Y"), clock = type(os.clock()), distinct = n,
            unit = math.random() < 1}
end

return {real_world = real_world, spawn_exit = spawn_exit, exec_one = exec_one, exec_fail = exec_fail, options = options,
        request_reply = request_reply, timeout = timeout, unknown_target = unknown_target,
        bad_option = bad_option, returns_error = returns_error, monitor_terminate = monitor_terminate,
        plain_spawn_no_exit = plain_spawn_no_exit,
        pid_and_sleep = pid_and_sleep, cancel_waits = cancel_waits}
