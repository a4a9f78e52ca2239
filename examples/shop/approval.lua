-- An approval that waits, durably, for a decision signal ("decision" with {approved = bool}),
-- or gives up after request.timeout (default 24h) with a rejection.
local funcs = require("funcs")
local time = require("time")

local function main(request)
    local ticket, err = funcs.call("shop:submit_request", request)
    if err then
        return nil, err
    end

    local decisions = process.listen("decision")
    local deadline = time.after(request.timeout or "24h")
    local got = channel.select {
        decisions:case_receive(),
        deadline:case_receive(),
    }

    local approved, reason = false, "no decision in time"
    if got.channel == decisions then
        approved = got.value and got.value.approved == true
        reason = got.value and got.value.reason or (approved and "approved" or "rejected")
    end

    if approved then
        local done, ferr = funcs.call("shop:fulfill", request.order_id)
        if ferr then
            return nil, ferr
        end
        return { ticket = ticket, approved = true, fulfilled = done }
    end
    funcs.call("shop:notify_rejection", { order_id = request.order_id, reason = reason })
    return { ticket = ticket, approved = false, reason = reason }
end

return { main = main }
