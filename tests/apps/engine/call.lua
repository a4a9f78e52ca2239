local funcs = require("funcs")

local function describe(err)
    return { kind = err:kind(), message = err:message(), retryable = err:retryable(), text = tostring(err) }
end

-- Calls input.activity with input.args under input.options; reports the result or the error.
local function main(input)
    local exec = funcs.new()
    if input.options then exec = exec:with_options(input.options) end
    local value, err = exec:call(input.activity, table.unpack(input.args or {}))
    if err then return { ok = false, error = describe(err) } end
    return { ok = true, value = value }
end

-- Two activities in a row (the replay tests swap them).
local function two_calls(input)
    local a = funcs.call("eng:echo", input.a)
    local b = funcs.call("eng:upper", input.b)
    return { a = a, b = b }
end

return { main = main, two_calls = two_calls }
