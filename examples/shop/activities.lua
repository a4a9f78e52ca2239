-- The shop's activities: the side effects. A real shop would call its services here.

local function reserve_inventory(items)
    if type(items) ~= "table" or #items == 0 then
        return nil, errors.new({ kind = errors.INVALID, message = "the order has no items", retryable = false })
    end
    return { id = "res-" .. #items .. "-" .. items[1] }
end

local function release_inventory(reservation_id)
    return { released = reservation_id }
end

local function charge_payment(payment)
    if payment.card == "declined" then
        return nil, errors.new({ kind = errors.INVALID, message = "card declined", retryable = false })
    end
    return { id = "pay-" .. payment.amount }
end

local function refund_payment(payment_id)
    return { refunded = payment_id }
end

local function ship_order(shipping)
    if not shipping or not shipping.address then
        return nil, "no shipping address"
    end
    return { tracking = "TRK-" .. string.upper(shipping.address:sub(1, 3)) }
end

local function submit_request(request)
    return "ticket-" .. request.order_id
end

local function fulfill(order_id)
    return "fulfilled " .. order_id
end

local function notify_rejection(info)
    return "notified " .. info.order_id
end

return {
    reserve_inventory = reserve_inventory,
    release_inventory = release_inventory,
    charge_payment = charge_payment,
    refund_payment = refund_payment,
    ship_order = ship_order,
    submit_request = submit_request,
    fulfill = fulfill,
    notify_rejection = notify_rejection,
}
