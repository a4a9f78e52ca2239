local ctx = require("ctx")

-- An activity sees the context of the workflow that scheduled it.
local function reserve(order)
    return {
        id = "res-" .. order.id,
        tenant = ctx.get("tenant"),
        request_id = ctx.get("request_id"),
    }
end

return { reserve = reserve }
