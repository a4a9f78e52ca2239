-- A child that always fails with a NOT_FOUND error, to show how a child's error reaches its
-- parent (with kind, retryable and message intact).
local function lookup(sku)
    return nil, errors.new({
        kind = errors.NOT_FOUND,
        message = "no such sku: " .. tostring(sku),
        retryable = false,
    })
end

return { lookup = lookup }
