-- A parent of many children, the child, and a workflow with a bug.
-- Starts `n` children and waits for them all.
local function fanout(n)
    local events = process.events()
    for i = 1, n do
        process.spawn_monitored("default:child", "default:worker", i)
    end
    local done = 0
    while done < n do
        local ev = events:receive()
        if ev.kind == process.event.EXIT then done = done + 1 end
    end
    return done
end

local function child(x) return x * 2 end

local function buggy()
    local t = nil
    return t.field -- line 20: attempt to index a nil value
end

return {fanout = fanout, child = child, buggy = buggy}
