-- Several activities and durable sleeps: the crash tests' workload.
local funcs = require("funcs")
local time = require("time")
local uuid = require("uuid")

local opts = funcs.new():with_options({
    ["activity.start_to_close_timeout"] = "3s",
    ["activity.retry_policy"] = { initial_interval = "100ms", maximum_interval = "500ms" },
})

local function main(input)
    local n = input.n or 5
    local total, ids = 0, {}
    for i = 1, n do
        local v, err = opts:call("basic:step", i)
        if err then return nil, err end
        total = total + v
        table.insert(ids, uuid.v4())
        time.sleep(input.sleep or "20ms")
    end
    return { total = total, n = n, ids = #ids }
end
return { main = main }
