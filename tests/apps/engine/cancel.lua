local funcs = require("funcs")

-- Asks for process.events(): a cancel request arrives as an event, and the code cleans up.
local function cleanup()
    local events = process.events()
    local never = process.listen("never")
    local got = channel.select { events:case_receive(), never:case_receive() }
    if got.channel == events and got.value.kind == process.event.CANCEL then
        local undone, err = funcs.call("eng:compensate", "order-1")
        if err then return nil, err end
        return { canceled = true, compensation = undone }
    end
    return { canceled = false }
end

-- Did not ask for events: a cancel request cancels the run.
local function plain()
    process.listen("never"):receive()
    return "not canceled"
end

return { cleanup = cleanup, plain = plain }
