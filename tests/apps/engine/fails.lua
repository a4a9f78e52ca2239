local function with_error(input)
    return nil, errors.new({ kind = errors.INVALID, message = "order " .. input.order .. " is refused" })
end

local function with_string()
    return nil, "plain text failure"
end

return { with_error = with_error, with_string = with_string }
