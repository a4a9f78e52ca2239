-- Log in through the session handler, crash it, log in again through the handler the supervisor
-- started in its place; then stop the ledger and return what happened.
local LEDGER = "session-ledger"

local function login(handler, user)
    local welcome = process.listen("welcome")
    process.send(handler, "login", {user = user})
    return welcome:receive()
end

local function main()
    -- the same ledger the handler uses (started by whichever comes first), monitored: its EXIT
    -- carries its result
    local ledger, err = process.with_options({["temporal.workflow.id"] = LEDGER})
        :spawn_monitored("sessions:ledger", "sessions:worker")
    if not ledger then return nil, err end
    local handlers = process.listen("handler")
    process.send(LEDGER, "subscribe", {})

    local first = handlers:receive()
    local w1 = login(first.pid, "ann")
    local w2 = login(first.pid, "bob")
    process.send(first.pid, "crash", {})

    local second = handlers:receive()  -- the supervisor restarted it: a new pid
    local w3 = login(second.pid, "ann")

    process.send(LEDGER, "stop", {})
    local ev = process.events():receive()
    return {
        restarted = second.pid ~= first.pid and second.starts == 2,
        before_crash = {w1.logins, w2.logins, w2.users_in_memory},
        after_crash = {w3.logins, w3.users_in_memory, w3.handler == second.pid},
        ledger = ev.result.value,
    }
end

return {main = main}
