-- The checkout BEFORE the change (not registered; checkout.lua is the current code).
local funcs = require("funcs")

local function main(order)
    local payment = funcs.call("versioning:old_payment", order)
    process.listen("shipped"):receive()      -- may wait for days
    local receipt = funcs.call("versioning:send_receipt", order)
    return {payment = payment, receipt = receipt}
end

return { main = main }
