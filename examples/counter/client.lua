-- The caller side of the counter: start it, send requests, wait for each reply with a timeout,
-- and finish it. Run it with `legato run --entries examples/counter counter:client`.
local time = require("time")

-- Send one request and wait for its answer: "ack" then "ok", or "nak", or nothing within 5s.
local function request(pid, replies, topic, payload)
    local sent, err = process.send(pid, topic, payload)
    if not sent then
        return {error = tostring(err)}
    end

    local first = channel.select{
        replies.ack:case_receive(),
        replies.nak:case_receive(),
        time.after("5s"):case_receive(),
    }
    if first.channel == replies.nak then
        return {nak = first.value}
    elseif first.channel ~= replies.ack then
        return {timeout = true}
    end

    local second = channel.select{
        replies.ok:case_receive(),
        time.after("5s"):case_receive(),
    }
    if second.channel ~= replies.ok then
        return {timeout = true}
    end
    return {ok = second.value}
end

local function main(input)
    input = input or {}
    -- Subscribe before sending anything: replies that arrive early are kept for us.
    local replies = {
        ack = process.listen("ack"),
        nak = process.listen("nak"),
        ok = process.listen("ok"),
    }
    local events = process.events()

    local pid, err = process.spawn_monitored("counter:counter", "counter:worker",
        {initial = input.initial or 5})
    if err then
        return nil, err
    end

    local steps = {}
    local function step(topic, payload)
        table.insert(steps, {request = topic, payload = payload, reply = request(pid, replies, topic, payload)})
    end
    step("increment", {amount = 3})
    step("decrement", {amount = 100})   -- refused (nak): the counter would go negative
    step("increment", {amount = "lots"}) -- refused (nak): not a number
    step("decrement", {amount = 2})     -- accepted: the refusals changed nothing
    step("finish", {})

    -- The workflow ends after "finish": its EXIT event carries its result.
    local result = channel.select{events:case_receive(), time.after("10s"):case_receive()}
    if result.channel ~= events then
        return {workflow = pid, steps = steps, error = "no EXIT event within 10s"}
    end
    return {workflow = pid, steps = steps, result = result.value.result.value}
end

return { main = main }
