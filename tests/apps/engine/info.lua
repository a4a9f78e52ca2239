local time = require("time")
local workflow = require("workflow")

local function main()
    local first = workflow.info()
    time.sleep("1ms")
    local second = workflow.info()
    return { first = first, second = second,
             length = workflow.history_length(), size = workflow.history_size() }
end
-- After each of n signals "next": the history's length and size as the code sees them.
local function sizes(input)
    local ch = process.listen("next")
    local out = { lengths = {}, sizes = {} }
    for _ = 1, input.n do
        ch:receive()
        table.insert(out.lengths, workflow.history_length())
        table.insert(out.sizes, workflow.history_size())
    end
    return out
end

return { main = main, sizes = sizes }
