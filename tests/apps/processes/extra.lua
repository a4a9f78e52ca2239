-- tests/integration/test_processes_more.py: parent_close_policy, unmonitor/unlink, monitoring a
-- workflow someone else started, heartbeat details across attempts, workflow-level retry.
local workflow = require("workflow")

-- spawns one pr:sleeper child per parent_close_policy, then returns (closing the parent)
local function close_parent(prefix)
    local pids = {}
    for _, policy in ipairs({"terminate", "abandon", "request_cancel"}) do
        local pid, err = process.with_options({["temporal.workflow.parent_close_policy"] = policy,
                                               ["temporal.workflow.id"] = prefix .. "-" .. policy})
            :spawn("pr:sleeper", "pr:worker")
        if err then return nil, err end
        pids[policy] = pid
    end
    return pids
end

-- monitors (mode "monitor") or links (mode "link", links not trapped) `pid`, takes it back, terminates
-- `pid`, then waits for the "go" signal or an event, whichever comes first
local function forgetter(pid, mode)
    local events = process.events()
    local ok, err
    if mode == "link" then
        ok, err = process.link(pid)
        if not ok then return nil, err end
        ok, err = process.unlink(pid)
    else
        ok, err = process.monitor(pid)
        if not ok then return nil, err end
        ok, err = process.unmonitor(pid)
    end
    if not ok then return nil, err end
    ok, err = process.terminate(pid)
    if not ok then return nil, err end
    local go = process.listen("go")
    local r = channel.select({events:case_receive(), go:case_receive()})
    if r.channel == go then return {got = "go"} end
    return {got = r.value.kind, from = r.value.from}
end

-- waits for "finish" and returns its payload
local function finisher()
    local payload = process.listen("finish"):receive()
    return payload
end

-- monitors a running workflow and returns what its EXIT says
local function monitor_only(pid)
    local events = process.events()
    local ok, err = process.monitor(pid)
    if not ok then return nil, err end
    local ev = events:receive()
    return {kind = ev.kind, from = ev.from, value = ev.result.value, err = ev.result.error and ev.result.error:kind()}
end

-- links to `pid` (links not trapped) and waits for its event: a normal end is an EXIT (Wippy)
local function link_only(pid)
    local events = process.events()
    local ok, err = process.link(pid)
    if not ok then return nil, err end
    local ev = events:receive()
    return {kind = ev.kind, from = ev.from, value = ev.result.value}
end

local function call_hb_retry()
    local funcs = require("funcs")
    return funcs.call("pr:hb_retry")
end

-- fails on its first attempt (a retryable error), succeeds on the next
local function retried(x)
    local attempt = workflow.info().attempt
    if attempt == 1 then
        return nil, errors.new({message = "first attempt fails", kind = errors.INTERNAL, retryable = true})
    end
    return {attempt = attempt, x = x}
end

return {close_parent = close_parent, forgetter = forgetter, finisher = finisher, monitor_only = monitor_only,
        link_only = link_only,
        call_hb_retry = call_hb_retry, retried = retried}
