local function greet(name)
    local ctx = require("ctx")
    return {greeting = "hello, " .. tostring(name), user = ctx.get("user")}
end

local function broken(why)
    return nil, errors.new({message = "refused: " .. tostring(why), kind = errors.INVALID, retryable = false})
end

-- seed 002's request/reply: replies go to msg:from(); a bad request is refused (nak) and
-- changes nothing; "finish" ends it.
local function counter(initial)
    local count = initial or 0
    local inc = process.listen("increment", {message = true})
    local fin = process.listen("finish", {message = true})
    while true do
        local r = channel.select{inc:case_receive(), fin:case_receive()}
        local msg = r.value
        if r.channel == fin then
            process.send(msg:from(), "ok", {final = count})
            return {final_counter = count}
        end
        local data = msg:payload():data()
        if type(data) ~= "table" or type(data.amount) ~= "number" then
            process.send(msg:from(), "nak", "amount must be a number")
        else
            count = count + data.amount
            process.send(msg:from(), "ok", {value = count})
        end
    end
end

-- never replies
local function waiter()
    process.listen("never"):receive()
    return "woke"
end

return {greet = greet, broken = broken, counter = counter, waiter = waiter}
