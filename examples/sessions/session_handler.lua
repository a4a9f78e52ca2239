-- A session handler: a long-lived process with in-memory state (lost when it crashes), which
-- records every login in the durable ledger workflow.
local LEDGER = "session-ledger"

local function main()
    -- the ledger is started once; a restarted handler finds it running (use_existing)
    local ledger, err = process.with_options({["temporal.workflow.id"] = LEDGER})
        :spawn("sessions:ledger", "sessions:worker")
    if not ledger then return nil, err end
    process.send(LEDGER, "hello", {})

    local seen = {}   -- this handler's memory: empty again after a restart
    local logged = process.listen("logged")
    local inbox = process.inbox()
    while true do
        local msg = inbox:receive()
        local topic, data = msg:topic(), msg:payload():data()
        if topic == "login" then
            process.send(LEDGER, "login", {user = data.user})
            local r = logged:receive()
            seen[data.user] = true
            local n = 0
            for _ in pairs(seen) do n = n + 1 end
            process.send(msg:from(), "welcome", {user = r.user, logins = r.logins, users_in_memory = n,
                                                  handler = process.pid()})
        elseif topic == "crash" then
            error("the session handler crashed (on purpose)")
        end
    end
end

return {main = main}
