-- The cluster tests' workload: an activity, a durable timer, a signal from the client, and a
-- child workflow (itself calling an activity), so that every kind of step crosses shards,
-- history nodes and matching nodes.
local funcs = require("funcs")
local time = require("time")
local workflow = require("workflow")

local opts = funcs.new():with_options({
    ["activity.start_to_close_timeout"] = "5s",
    ["activity.retry_policy"] = { initial_interval = "100ms", maximum_interval = "1s" },
})

local function main(input)
    local worked, err = opts:call("cluster:work", input.n)
    if err then return nil, err end
    time.sleep(input.sleep or "1s")
    local go = process.listen("go"):receive()
    local part, cerr = workflow.exec("cluster:part", { n = input.n })
    if cerr then return nil, cerr end
    return { n = input.n, worked = worked, go = go, part = part }
end

local function part(input)
    local v, err = opts:call("cluster:work", input.n + 1000)
    if err then return nil, err end
    return v
end

return { main = main, part = part }
