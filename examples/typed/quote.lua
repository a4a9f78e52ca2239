-- A quote for an order: each line priced by the typed:price activity, then a coupon applied.
local funcs = require("funcs")

type Line = {sku: string, qty: integer @min(1)}
type Order = {lines: {Line}, coupon?: string}
export type Quote = {
    total: number,
    lines: {{sku: string, amount: number}},
    coupon: string?,
}

local COUPONS: {[string]: number} = {TEN = 0.10, HALF = 0.50}

local function sum<T>(items: {T}, value: (T) -> number): number
    local total: number = 0
    for _, item: T in ipairs(items) do
        total = total + value(item)
    end
    return total
end

local function main(order: Order): (Quote?, error?)
    local priced: {{sku: string, amount: number}} = {}
    for _, line in ipairs(order.lines) do
        -- integer() validates: a quantity of 1.5 fails the workflow at this line
        local amount, err = funcs.call("typed:price", line.sku, integer(line.qty))
        if err then
            return nil, err
        end
        priced[#priced + 1] = {sku = line.sku, amount = amount as number}
    end
    local total = sum(priced, function(p: {amount: number}): number return p.amount end)
    local discount: number? = order.coupon and COUPONS[string(order.coupon)]
    if discount ~= nil then
        total = total * (1 - discount!)
    end
    return {total = total, lines = priced, coupon = order.coupon} :: Quote
end

return { main = main }
