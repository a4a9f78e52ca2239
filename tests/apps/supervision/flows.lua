-- a workflow spawns processes (recorded: replay gives the same pids), talks to one, gets EXITs
local function spawn_process()
    local pid, err = process.spawn_monitored("pr:echo", "pr:host", "from a workflow")
    if not pid then return nil, err end
    local pong = process.listen("pong")
    process.send(pid, "ping", 7)
    local answer = pong:receive()
    process.send(pid, "stop")
    local ev = process.events():receive()
    local doubled = process.exec("pr:doubler", "pr:host", 21)
    local _, bad = process.spawn("pr:nothing", "pr:host")
    local failing = process.spawn("pr:raises", "pr:host")
    local ev2 = process.events():receive()
    return {same_pid = answer.me == pid, answer = answer.echo, greeting = answer.greeting, exit = ev.kind,
            value = ev.result.value, doubled = doubled, bad = bad and bad:message(),
            failing = ev2.from == failing and ev2.result.error:message()}
end

-- linked to a process that raises, without trap_links: the workflow fails
local function linked_process()
    process.spawn_linked("pr:raises", "pr:host")
    process.inbox():receive()
    return "not reached"
end

-- a workflow that monitors (or links to) a process, talks to it, and reports how it ended
local function watch_process(pid, mode)
    if mode == "link" then
        assert(process.link(pid))
    else
        assert(process.monitor(pid))
    end
    local pong = process.listen("pong")
    process.send(pid, "ping", "from a workflow")
    local answer = pong:receive()
    process.send(pid, mode == "link" and "crash" or "stop")
    local ev = process.events():receive()  -- a link down without trap_links fails this workflow first
    return {answer = answer.echo, kind = ev.kind, value = ev.result.value}
end

-- links itself to a process, then fails: the process (not trapping links) goes down with it
local function link_then_fail(pid)
    assert(process.link(pid))
    return nil, errors.new({message = "the workflow gives up", kind = errors.INVALID, retryable = false})
end

-- spawns a linked process (which tells `caller` its pid), waits for "go", then fails: the process goes down
local function spawn_linked_then_fail(caller)
    local pid = process.spawn_linked("pr:announcer", "pr:host", caller)  -- it sends the caller its pid
    local go = process.listen("go"):receive()
    assert(go == pid)
    return nil, errors.new({message = "the parent gives up", kind = errors.INVALID, retryable = false})
end

local function terminate_process(pid)
    local ok, err = process.terminate(pid, "the workflow said so")
    return {ok = ok, err = err and err:message()}
end

-- spawns a parked process with a parent_close_policy ("default": none given), tells `caller` its
-- pid, then, told "close", closes as `how` says: complete, fail, continue (as new: the new run
-- returns at once), or waits for a message (to be terminated, to time out, or to complete then)
local function close_with(policy, how, caller, stubborn)
    if how == "continued" then return "the new run" end
    local pid, err
    if policy == "default" then
        pid, err = process.spawn("pr:parked", "pr:host", stubborn)
    else
        pid, err = process.with_options({["temporal.workflow.parent_close_policy"] = policy})
            :spawn("pr:parked", "pr:host", stubborn)
    end
    if not pid then return nil, err end
    process.send(caller, "pid", pid)
    local close = process.listen("close"):receive()  -- the caller monitors the process first
    if how == "complete" then return "done" end
    if how == "fail" then
        return nil, errors.new({message = "the parent fails", kind = errors.INVALID, retryable = false})
    end
    if how == "continue" then process.upgrade(nil, policy, "continued", caller) end
    process.inbox():receive()  -- until terminated, timed out, or woken
end

-- spawns (in a coroutine) and returns in the same workflow task: the spawn reaches the host only
-- after the workflow closed
local function spawn_and_return(policy, caller)
    local started = channel.new(1)
    coroutine.spawn(function()
        started:send(true)  -- buffered: it goes on to its spawn, which waits for the process
        process.with_options({["temporal.workflow.parent_close_policy"] = policy})
            :spawn("pr:announcer", "pr:host", caller)
    end)
    started:receive()
    return "returned"
end

return {close_with = close_with, spawn_and_return = spawn_and_return, link_then_fail = link_then_fail, spawn_linked_then_fail = spawn_linked_then_fail, spawn_process = spawn_process, linked_process = linked_process, watch_process = watch_process, terminate_process = terminate_process}
