local time = require("time")

-- Durable sleeps; reports the workflow time that passed across each.
local function sleepy()
    local start = time.now()
    time.sleep(100 * time.MILLISECOND)
    local numeric = time.now():sub(start):milliseconds()
    local mid = time.now()
    time.sleep("150ms")
    local text = time.now():sub(mid):milliseconds()
    return { numeric = numeric, text = text, total = time.now():sub(start):seconds(),
             start_unix = start:unix() }
end

-- A signal raced against time.after.
local function after(input)
    local go = process.listen("go")
    local got = channel.select { go:case_receive(), time.after(input.timeout):case_receive() }
    if got.channel == go then
        return { winner = "signal", value = got.value }
    end
    return { winner = "timer" }
end

-- A timer stopped before it fires.
local function stop_timer()
    local t = time.timer("1h")
    time.sleep("1ms")
    local first = t:stop()
    local second = t:stop()
    return { first = first, second = second }
end

return { sleepy = sleepy, after = after, stop_timer = stop_timer }
