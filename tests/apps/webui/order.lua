-- An order: activities (one retried, one that fails for good), a timer, a child, then it waits for
-- an "approve" signal; a second coroutine waits for a "note" meanwhile (two stacks to show).
local funcs = require("funcs")
local time = require("time")

local quick = funcs.new():with_options({
    ["activity.retry_policy"] = { initial_interval = "50ms", maximum_attempts = 2 },
})

local function wait_for_approval(approve)
    local approval = approve:receive() -- not a tail call: the stack shows this frame
    return approval
end

local function order(input)
    -- listening from the start: a signal that comes early waits in its channel
    local approve = process.listen("approve")
    local note = process.listen("note")
    local reserved = quick:call("default:reserve", input.item or "book")
    local flaky = quick:call("default:flaky", 1)
    local _, err = quick:call("default:broken")
    time.sleep("100ms")
    local child = process.exec("default:child", "default:worker", 21)
    local notes = {}
    coroutine.spawn(function()
        while true do table.insert(notes, note:receive()) end
    end)
    local approval = wait_for_approval(approve)
    return {reserved = reserved, flaky = flaky, broken = err and err:message(), child = child,
            approval = approval, notes = #notes}
end

-- An activity that keeps failing, retried an hour later: pending, in backoff, with its failure.
local function stuck()
    local patient = funcs.new():with_options({ ["activity.retry_policy"] = { initial_interval = "1h" } })
    return patient:call("default:broken")
end

return {order = order, stuck = stuck}
