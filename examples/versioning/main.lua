-- Start a checkout, tell it the order shipped, and return its result: a new run takes the new
-- payment (version 2). tests/integration/test_versioning.py shows a run that paid under the old
-- code resuming under the new code with version 1.
local function main(order)
    order = order or {id = "A-1", total = 42}
    local pid, err = process
        .with_options({["temporal.workflow.id"] = "checkout-" .. order.id})
        :spawn_monitored("versioning:checkout", "versioning:worker", order)
    if err then
        return nil, err
    end
    process.send(pid, "shipped", {})
    local event = process.events():receive()
    if event.result.error then
        return nil, event.result.error
    end
    return {workflow_id = pid, result = event.result.value}
end

return { main = main }
