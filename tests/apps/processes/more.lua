local workflow = require("workflow")

local function looper(n, seen)
    seen = seen or {}
    seen[#seen + 1] = workflow.history_length()
    if n < 3 then process.upgrade(nil, n + 1, seen) end
    return {n = n, seen = seen}
end

local function versioned()
    local v = workflow.version("payment-v2", 1, 2)
    workflow.attrs({search = {stage = "versioned", v = v}, memo = {note = "from lua"}})
    return {v = v}
end

local function async_cancel()
    local funcs = require("funcs")
    local time = require("time")
    local f = funcs.new():with_options({["activity.heartbeat_timeout"] = "10s"}):async("pr:heartbeating")
    time.sleep("200ms")
    f:cancel()
    f:response():receive()
    local p, err = f:result()
    return {r = p and p:data(), kind = err and err:kind(), canceled = f:is_canceled()}
end

return {looper = looper, versioned = versioned, async_cancel = async_cancel}
