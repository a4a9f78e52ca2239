-- Callers of tests/apps/supervision (function.lua entries run as non-durable callers)
local HOST = "pr:host"

local function send_reply()
    local pid = process.spawn_monitored("pr:echo", HOST, "hi")
    local pong = process.listen("pong")
    process.send(pid, "ping", {x = 1})
    local a = pong:receive()
    process.send(pid, "ping", {x = 2})
    local b = pong:receive()
    process.send(pid, "stop")
    local ev = process.events():receive()
    return {a = a, b = b, pid_ok = a.me == pid and pid:sub(1, 1) == "@", exit = ev.kind, from_ok = ev.from == pid,
            value = ev.result.value, err = ev.result.error}
end

local function monitor_result(x)
    local pid = process.spawn_monitored("pr:doubler", HOST, x)
    local ev = process.events():receive()
    return {kind = ev.kind, from_ok = ev.from == pid, value = ev.result.value, err = ev.result.error == nil}
end

local function monitor_error()
    local pid = process.spawn_monitored("pr:raises", HOST)
    local ev = process.events():receive()
    local e = ev.result.error
    return {kind = ev.kind, from_ok = ev.from == pid, message = e:message(), err_kind = e:kind()}
end

local function link_trapped()
    process.set_options({trap_links = true})
    local pid = process.spawn_linked("pr:raises", HOST)
    local ev = process.events():receive()
    return {kind = ev.kind, from_ok = ev.from == pid, message = ev.result.error:message()}
end

local function link_kills()
    process.spawn_linked("pr:raises", HOST)
    process.inbox():receive()  -- never comes: the link takes this caller down
    return "not reached"
end

local function terminate()
    local pid = process.spawn_monitored("pr:sleeper", HOST)
    local ok = process.terminate(pid, "enough")
    local ev = process.events():receive()
    return {ok = ok, kind = ev.kind, err_kind = ev.result.error:kind(), message = ev.result.error:message()}
end

local function cancel()
    local pid = process.spawn_monitored("pr:cancelable", HOST)
    process.cancel(pid)
    local ev = process.events():receive()
    return {kind = ev.kind, value = ev.result.value}
end

local function via_process()
    local relayed = process.listen("relayed")
    local pid = process.spawn_monitored("pr:relay", HOST, process.pid())
    local got = relayed:receive()
    local ev = process.events():receive()
    return {got = got, exit = ev.kind, value = ev.result.value}
end

-- a stuck process (an endless loop) does not stop another from answering
local function isolated()
    local stuck = process.spawn_monitored("pr:spin", HOST)
    local pid = process.spawn("pr:echo", HOST, "alive")
    local pong = process.listen("pong")
    process.send(pid, "ping", 1)
    local a = pong:receive()
    process.send(pid, "stop")
    local ev = process.events():receive()
    return {answered = a.greeting, stuck_kind = ev.kind, stuck_ok = ev.from == stuck,
            stuck_err = ev.result.error:kind(), message = ev.result.error:message()}
end

local function from_workflow(name, id)
    local v, err = process.with_options({["temporal.workflow.id"] = id}):exec(name, "pr:worker")
    return {v = v, message = err and err:message()}
end

-- a workflow monitors (or links to) a process: EXIT (or LINK_DOWN taking the workflow down)
local function workflow_watches(mode)
    local pid = process.spawn("pr:echo", HOST, "hello workflow")
    local wf = process.spawn_monitored("pr:watch_process", "pr:worker", pid, mode)
    local ev = process.events():receive()
    local e = ev.result.error
    return {kind = ev.kind, from_ok = ev.from == wf, value = ev.result.value, message = e and e:message()}
end

-- a workflow links to a process and fails: the process is taken down (LINK_DOWN, not trapped)
local function workflow_link_down()
    local pid = process.spawn_monitored("pr:sleeper", HOST)
    local _, werr = process.exec("pr:link_then_fail", "pr:worker", pid)
    local ev = process.events():receive()
    return {workflow = werr:message(), kind = ev.kind, message = ev.result.error:message()}
end

-- a workflow's spawn_linked is two-way: the workflow failing takes the process down
local function workflow_spawned_link_down()
    local pids = process.listen("pid")
    local wf = process.spawn_monitored("pr:spawn_linked_then_fail", "pr:worker", process.pid())
    local pid = pids:receive()
    assert(process.monitor(pid))
    process.send(wf, "go", pid)
    local got = {}
    local events = process.events()
    for _ = 1, 2 do
        local ev = events:receive()
        got[ev.from == wf and "workflow" or ev.from == pid and "process" or "other"] = ev.result.error:message()
    end
    return got
end

-- spawns that cannot work: each says why
local function bad_spawns()
    local out = {}
    local _, e1 = process.spawn("pr:echo", "pr:nohost")
    out.unknown_host = e1:message()
    local _, e2 = process.spawn("pr:echo", "pr:worker")
    out.worker_host = e2:message()
    local _, e3 = process.spawn("pr:nothing", HOST)
    out.unknown_entry = e3:message()
    local _, e4 = process.send("@nobody", "ping")
    out.no_process = e4:kind()
    local ok, e5 = pcall(process.send, "@nobody", "@legato.terminate", {})
    out.control_topic = not ok and tostring(e5)
    local hog = process.spawn_monitored("pr:hog", HOST)
    local ev = process.events():receive()
    out.hog = ev.from == hog and ev.result.error:kind() .. ": " .. ev.result.error:message()
    return out
end

-- a monitor made as the process ends: an EXIT, or NotFound (the process is gone), never silence
local function monitor_at_the_end(n)
    local exits, gone = 0, 0
    local events = process.events()
    for _ = 1, n do
        local pid = process.spawn("pr:echo", HOST)
        process.send(pid, "stop")
        local ok, err = process.monitor(pid)
        if ok then
            local ev = events:receive()
            if ev.from == pid and ev.kind == "EXIT" then exits = exits + 1 end
        elseif err:kind() == "NotFound" then
            gone = gone + 1
        end
    end
    return {total = exits + gone}
end

local function workflow_terminates()
    local pid = process.spawn_monitored("pr:sleeper", HOST)
    local r = process.exec("pr:terminate_process", "pr:worker", pid)
    local ev = process.events():receive()
    return {r = r, kind = ev.kind, err_kind = ev.result.error:kind(), message = ev.result.error:message()}
end

-- a workflow spawns a parked process and closes as `how` says; what became of the process: its
-- EXIT (terminated, or canceled and returned), or its answer to a ping when it still runs
local function parent_close(policy, how, wid, stubborn)
    local opts = {["temporal.workflow.id"] = wid}
    if how == "timeout" then opts["temporal.workflow.execution_timeout"] = "2s" end
    local pids = process.listen("pid")
    local wf, err = process.with_options(opts):spawn_monitored("pr:close_with", "pr:worker", policy, how,
                                                                process.pid(), stubborn)
    if not wf then return {error = err:message()} end
    local pid = pids:receive()
    assert(process.monitor(pid))
    process.send(wf, "close", true)
    if how == "terminate" then assert(process.terminate(wf, "the test says so")) end
    local out, events = {}, process.events()
    local function exit_of(ev)
        local e = ev.result.error
        return {value = ev.result.value, err_kind = e and e:kind(), message = e and e:message()}
    end
    while out.workflow == nil do
        local ev = events:receive()
        if ev.from == wf then out.workflow = exit_of(ev) elseif ev.from == pid then out.process = exit_of(ev) end
    end
    if out.process == nil and (policy == "abandon" or stubborn) then
        local alive = process.listen("alive")
        process.send(pid, "ping", true)
        out.alive = alive:receive()
        process.terminate(pid, "the test cleans up")
    end
    while out.process == nil do
        local ev = events:receive()
        if ev.from == pid then out.process = exit_of(ev) end
    end
    out.pid = pid
    return out
end

-- a workflow whose spawn reaches the host after it closed: the process announces itself (if it runs)
local function spawn_after_close(policy)
    local pids = process.listen("pid")
    local v = process.exec("pr:spawn_and_return", "pr:worker", policy, process.pid())
    local pid = pids:receive()
    assert(process.monitor(pid))
    local alive = process.send(pid, "wake")
    local ev = process.events():receive()
    return {workflow = v, from_ok = ev.from == pid, value = ev.result.value, alive = alive}
end

return {parent_close = parent_close, spawn_after_close = spawn_after_close, monitor_at_the_end = monitor_at_the_end, bad_spawns = bad_spawns, workflow_spawned_link_down = workflow_spawned_link_down, workflow_link_down = workflow_link_down, workflow_watches = workflow_watches, workflow_terminates = workflow_terminates,
        send_reply = send_reply, monitor_result = monitor_result, monitor_error = monitor_error,
        link_trapped = link_trapped, link_kills = link_kills, terminate = terminate, cancel = cancel,
        via_process = via_process, isolated = isolated, from_workflow = from_workflow}
