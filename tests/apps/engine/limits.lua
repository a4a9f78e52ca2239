local funcs = require("funcs")

local function hog_memory()
    local t = {}
    for i = 1, 10000000 do
        t[i] = string.rep("x", 64) .. i
    end
    return #t
end

local function spin()
    local n = 0
    while true do n = n + 1 end
end

-- Calls input.n activities at once.
local function fan_out(input)
    local done = channel.new(input.n)
    for i = 1, input.n do
        coroutine.spawn(function()
            done:send(funcs.call("eng:echo", i))
        end)
    end
    local sum = 0
    for _ = 1, input.n do sum = sum + done:receive() end
    return sum
end

local function echo_flow(input)
    return funcs.call("eng:echo", input)
end

return { hog_memory = hog_memory, spin = spin, fan_out = fan_out, echo_flow = echo_flow }
