local workflow = require("workflow")

local function parent(x)
    local events = process.events()
    local pid, err = process.with_context({request_id = "r-1"}):spawn("pr:child", "pr:worker", x)
    if err then return nil, err end
    local ev = events:receive()
    local r = workflow.exec("pr:child", x + 1)
    local _, cerr = process.exec("pr:fail_child", "pr:worker")
    return {pid = pid, exit = {kind = ev.kind, from = ev.from, value = ev.result.value}, exec = r,
            err = {kind = cerr:kind(), retryable = cerr:retryable(), message = cerr:message()}}
end

local function child(x)
    local funcs = require("funcs")
    local ctx = require("ctx")
    local act_ctx = funcs.call("pr:ctx_act")
    return {x = x, ctx = ctx.all(), act_ctx = act_ctx}
end

local function fail_child()
    return nil, errors.new({message = "no such order", kind = errors.NOT_FOUND})
end

local function counter(input)
    local total = input.initial
    local seen = {}
    local inc = process.listen("increment")
    local finish = process.listen("finish")
    while true do
        local r = channel.select({inc:case_receive(), finish:case_receive()})
        if r.channel == finish then break end
        total = total + r.value.amount
        seen[#seen + 1] = r.value.amount
    end
    return {total = total, seen = seen}
end

local function spawn_counter(name)
    local events = process.events()
    local first = process.with_options({})
        :with_name(name)
        :with_message("increment", {amount = 2})
        :with_message("increment", {amount = 1})
    local pid, err = first:spawn_monitored("pr:counter", "pr:worker", {initial = 0})
    if err then return nil, err end
    local pid2, err2 = process.with_options({}):with_name(name)
        :with_message("increment", {amount = 10})
        :spawn("pr:counter", "pr:worker", {initial = 999})
    process.send(pid, "increment", {amount = 4})
    process.send(pid, "finish")
    local ev = events:receive()
    return {same = pid == pid2, err2 = err2 and err2:message(), result = ev.result.value}
end

return {parent = parent, child = child, fail_child = fail_child, counter = counter, spawn_counter = spawn_counter}
