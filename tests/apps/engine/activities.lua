local activity = require("activity")
local time = require("time")

local function echo(v) return v end

local function upper(s) return string.upper(s) end

-- Fails (a raised Lua error, retryable) until attempt `succeed_at`; reports when it ran.
local function flaky(succeed_at)
    local info = activity.info()
    local now = time.now():unix_milli()
    if info.attempt < succeed_at then
        error("flaky attempt " .. info.attempt .. " at " .. now)
    end
    return { attempt = info.attempt, at = now }
end

-- Raises an error of the given kind that says it is retryable.
local function raise_kind(kind)
    error(errors.new({ kind = kind, message = "raised " .. kind .. " on attempt " .. activity.info().attempt,
                       retryable = true }))
end

-- Sleeps for real (activities may), optionally only from attempt `from_attempt` on (earlier ones fail).
local function sleep(ms, from_attempt)
    local attempt = activity.info().attempt
    if from_attempt and attempt < from_attempt then
        error("failing fast on attempt " .. attempt)
    end
    time.sleep(ms * time.MILLISECOND)
    return { slept = ms, attempt = attempt }
end

-- Heartbeats every `every` ms for `total` ms.
local function heartbeating(total, every)
    local beats = 0
    local start = time.now()
    while time.now():sub(start):milliseconds() < total do
        activity.heartbeat({ beats = beats })
        beats = beats + 1
        time.sleep(every * time.MILLISECOND)
    end
    return beats
end

local function compensate(what) return "released " .. what end

return { echo = echo, upper = upper, flaky = flaky, raise_kind = raise_kind, sleep = sleep,
         heartbeating = heartbeating, compensate = compensate }
