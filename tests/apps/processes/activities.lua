local function ctx_act()
    local ctx = require("ctx")
    return ctx.all()
end

local function heartbeating()
    local activity = require("activity")
    local time = require("time")
    for i = 1, 1000 do
        activity.heartbeat(i)
        time.sleep(10)
    end
    return "finished"
end

return {ctx_act = ctx_act, heartbeating = heartbeating}
