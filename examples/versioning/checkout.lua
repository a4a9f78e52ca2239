-- The checkout AFTER the change: payments moved to a new provider. A run that paid under the old
-- code (checkout_v1.lua) and now waits for "shipped" must replay as it ran, so the change is
-- guarded by workflow.version: such a run has no version recorded at this point and gets
-- version 1 (min_supported), the old payment; a run that reaches this point under this code
-- records and gets version 2 (max_supported). Once no version-1 run is left, the range can
-- become (2, 2) and the old branch go.
local funcs = require("funcs")
local workflow = require("workflow")

local function main(order)
    local version = workflow.version("payment-v2", 1, 2)
    local payment, err
    if version == 1 then
        payment, err = funcs.call("versioning:old_payment", order)
    else
        payment, err = funcs.call("versioning:new_payment", order)
    end
    if err then
        return nil, err
    end

    process.listen("shipped"):receive()      -- may wait for days
    local receipt = funcs.call("versioning:send_receipt", order)
    return {payment = payment, receipt = receipt, version = version}
end

return { main = main }
