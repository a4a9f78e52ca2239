-- Start an order workflow the way an HTTP handler would: with the request's context and an
-- explicit workflow id, refusing a second start of the same order.
local function main(order)
    order = order or {id = "1001", customer = "ann", total = 42}

    local spawner = process
        .with_context({user_id = "user-1", tenant = "tenant-1", request_id = "req-" .. order.id})
        :with_options({
            ["temporal.workflow.id"] = "order-" .. order.id,
            ["temporal.workflow.id_conflict_policy"] = "fail",
        })

    local events = process.events()
    local pid, err = spawner:spawn_monitored("orders:order_workflow", "orders:worker", order)
    if err then
        return nil, err
    end

    -- The same order again (a retried request, say): the id is taken, so this start fails.
    local again, again_err = spawner:spawn("orders:order_workflow", "orders:worker", order)
    local second
    if again_err then
        second = {started = false, kind = again_err:kind(), message = again_err:message()}
    else
        second = {started = true, pid = again}
    end

    -- Let the order go on, and wait for its end.
    process.send(pid, "confirm", {by = "caller"})
    local event = events:receive()
    return {
        workflow_id = tostring(pid),
        result = event.result.value,
        error = event.result.error and tostring(event.result.error),
        second_start = second,
    }
end

return { main = main }
