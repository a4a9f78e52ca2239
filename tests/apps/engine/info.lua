local time = require("time")
local workflow = require("workflow")

local function main()
    local first = workflow.info()
    time.sleep("1ms")
    local second = workflow.info()
    return { first = first, second = second,
             length = workflow.history_length(), size = workflow.history_size() }
end
return { main = main }
