local function ctx_act()
    local ctx = require("ctx")
    return ctx.all()
end

local function heartbeating()
    local activity = require("activity")
    local time = require("time")
    for i = 1, 1000 do
        activity.heartbeat(i)
        time.sleep(10 * time.MILLISECOND)
    end
    return "finished"
end

-- heartbeats details then fails on attempt 1; a later attempt returns the details it starts with
local function hb_retry()
    local activity = require("activity")
    local attempt = activity.info().attempt
    if attempt == 1 then
        activity.heartbeat({step = 3, note = "half way"})
        error("crashed after a heartbeat")
    end
    return {attempt = attempt, details = activity.heartbeat_details()}
end

return {ctx_act = ctx_act, heartbeating = heartbeating, hb_retry = hb_retry}
