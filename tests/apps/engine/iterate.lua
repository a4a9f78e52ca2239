-- Calls an activity per key of its input, in `pairs` then in `next` order, and waits for a signal.
local funcs = require("funcs")

local function main(input)
    local calls = {}
    for k in pairs(input) do calls[#calls + 1] = k end
    for k in next, input do calls[#calls + 1] = k end
    local done = channel.new(#calls)
    for i, k in ipairs(calls) do
        coroutine.spawn(function() done:send({ i, funcs.call("eng:echo", k) }) end)
    end
    for _ = 1, #calls do done:receive() end
    process.listen("go"):receive()
    return calls
end
return { main = main }
