-- An order saga: reserve stock, charge the card, ship. When a step fails, the steps already
-- done are compensated in reverse order, and the workflow reports which step failed.
local funcs = require("funcs")

-- Business errors should not be retried; a crash of an activity would be (the default policy).
local steps = funcs.new():with_options({
    ["activity.retry_policy"] = { maximum_attempts = 3, initial_interval = "100ms" },
    ["activity.start_to_close_timeout"] = "30s",
})

local function run_compensations(compensations)
    local done = {}
    for _, comp in ipairs(compensations) do
        local _, err = steps:call(comp.action, comp.args)
        table.insert(done, { action = comp.action, ok = err == nil })
    end
    return done
end

local function main(order)
    local compensations = {}

    local reservation, err = steps:call("shop:reserve_inventory", order.items)
    if err then
        return { status = "failed", step = "inventory", error = tostring(err) }
    end
    table.insert(compensations, 1, { action = "shop:release_inventory", args = reservation.id })

    local payment, err = steps:call("shop:charge_payment", order.payment)
    if err then
        return { status = "failed", step = "payment", error = tostring(err),
                 compensated = run_compensations(compensations) }
    end
    table.insert(compensations, 1, { action = "shop:refund_payment", args = payment.id })

    local shipment, err = steps:call("shop:ship_order", order.shipping)
    if err then
        return { status = "failed", step = "shipping", error = tostring(err),
                 compensated = run_compensations(compensations) }
    end

    return { status = "completed", reservation = reservation.id, payment = payment.id,
             tracking = shipment.tracking }
end

return { main = main }
