local PRICES = { book = 12, lamp = 30, desk = 250 }

local function price_of(item)
    local price = PRICES[item]
    if price == nil then
        return nil, errors.new({ kind = errors.NOT_FOUND, message = "no price for " .. tostring(item), retryable = false })
    end
    return price
end

return { price_of = price_of }
