local function old_payment(order)
    return {provider = "legacy-bank", amount = order.total}
end

local function new_payment(order)
    return {provider = "new-psp", amount = order.total}
end

local function send_receipt(order)
    return "receipt for order " .. order.id
end

return { old_payment = old_payment, new_payment = new_payment, send_receipt = send_receipt }
