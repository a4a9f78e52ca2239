local function main(input)
    return nil, errors.new({ kind = errors.INVALID, message = "refused: " .. tostring(input and input.why),
                             retryable = false })
end
return { main = main }
