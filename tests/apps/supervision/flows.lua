-- a workflow that tries to spawn a process: refused with a clear error (not supported yet)
local function spawn_process()
    local pid, err = process.spawn("pr:echo", "pr:host")
    if pid then return "spawned" end
    return nil, err
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

local function terminate_process(pid)
    local ok, err = process.terminate(pid, "the workflow said so")
    return {ok = ok, err = err and err:message()}
end

return {spawn_process = spawn_process, watch_process = watch_process, terminate_process = terminate_process}
