-- The order workflow: it reads the caller's context (ctx.get / ctx.all), and so does its activity,
-- which gets the context without passing it as an argument. It waits for a "confirm" signal.
local funcs = require("funcs")
local ctx = require("ctx")

local function main(order)
    local reservation, err = funcs.call("orders:reserve", order)
    if err then
        return nil, err
    end

    local confirmation = process.listen("confirm"):receive()

    return {
        order_id = order.id,
        user_id = ctx.get("user_id"),
        context = ctx.all(),
        reservation = reservation,
        confirmed_by = confirmation.by,
    }
end

return { main = main }
