local function reserve(item) return {item = item, reserved = true} end

-- Fails on its first attempt, succeeds on the second: a retry the timeline shows.
local function flaky(x)
    local activity = require("activity")
    local attempt = activity.info().attempt
    if attempt == 1 then error("flaky: first attempt fails") end
    return {x = x, attempt = attempt}
end

local function broken() error("broken: always fails") end

return {reserve = reserve, flaky = flaky, broken = broken}
