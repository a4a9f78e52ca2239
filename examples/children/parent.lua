-- A parent workflow and the three ways to run a child: workflow.exec (synchronous, the simplest),
-- process.spawn (asynchronous: the child's end arrives as an EXIT event on process.events()) and
-- process.exec (synchronous, naming the worker). Children are workflows with their own history and
-- the same durability; a child's error keeps its kind(), retryable() and message().
local workflow = require("workflow")

local function describe_error(err)
    if err == nil then return nil end
    return {kind = err:kind(), retryable = err:retryable(), message = err:message()}
end

local function main(input)
    local items = (input or {}).items or {"book", "lamp", "desk"}
    local events = process.events()

    -- 1. workflow.exec: run a child and wait for its result.
    local first, err = workflow.exec("family:quote", items[1])
    if err then
        return nil, err
    end

    -- 2. process.spawn: start a child without waiting, then wait for its EXIT event.
    local child_pid, err = process.spawn("family:quote", "family:worker", items[2])
    if err then
        return {status = "spawn_failed", error = tostring(err)}
    end
    local event = events:receive()
    local second = nil
    if event.kind == process.event.EXIT then
        second = {from = event.from, is_child = event.from == child_pid, value = event.result.value,
                  error = describe_error(event.result.error)}
    end

    -- 3. process.exec: start a child on a named worker and wait for its result.
    local third, err = process.exec("family:quote", "family:worker", items[3])
    if err then
        return nil, err
    end

    -- 4. A failing child: its error reaches the parent through exec ...
    local _, exec_err = process.exec("family:lookup", "family:worker", "sku-404")
    -- ... and through the EXIT event of a spawned child.
    process.spawn("family:lookup", "family:worker", "sku-405")
    local failed = events:receive()

    local total = first.price + (second and second.value and second.value.price or 0) + third.price
    return {
        quotes = {first, second, third},
        total = total,
        exec_error = describe_error(exec_err),
        exit_error = describe_error(failed.result.error),
    }
end

return { main = main }
