-- Calls activities that fail in each way and reports what the workflow saw.
local funcs = require("funcs")

local once = funcs.new():with_options({ ["activity.retry_policy"] = { maximum_attempts = 2,
                                                                      initial_interval = "10ms" } })

local function describe(err)
    if not err then return nil end
    return { kind = err:kind(), retryable = err:retryable(), message = err:message(), text = tostring(err) }
end

local function main()
    -- retryable (it may be registered later): retried by the policy like any retryable error
    local _, missing = once:call("basic:no_such_activity")
    local _, raised = once:call("basic:raises", "kaput")
    local _, returned = once:call("basic:returns_error")
    return { missing = describe(missing), raised = describe(raised), returned = describe(returned) }
end
return { main = main }
