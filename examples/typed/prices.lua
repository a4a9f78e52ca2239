-- The price of `qty` units of `sku` (an activity; unknown SKUs are an error).
type Prices = {[string]: number}

local PRICES: Prices = {book = 12, lamp = 30, desk = 250}

local function price(sku: string, qty: integer): (number?, string?)
    local unit: number? = PRICES[sku]
    if unit == nil then
        return nil, "no such sku: " .. sku
    end
    return unit * qty
end

return { price = price }
