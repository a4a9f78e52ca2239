-- The durable ledger: logins per user, and the live session handler (told to subscribers).
local function main()
    local logins = {}
    local handler, handler_starts = nil, 0
    local subscribers = {}
    local inbox = process.inbox()
    while true do
        local msg = inbox:receive()
        local topic, data, from = msg:topic(), msg:payload():data(), msg:from()
        if topic == "hello" then  -- a (new) session handler is up
            handler, handler_starts = from, handler_starts + 1
            for _, s in ipairs(subscribers) do
                process.send(s, "handler", {pid = handler, starts = handler_starts})
            end
        elseif topic == "subscribe" then
            table.insert(subscribers, from)
            if handler then process.send(from, "handler", {pid = handler, starts = handler_starts}) end
        elseif topic == "login" then
            logins[data.user] = (logins[data.user] or 0) + 1
            process.send(from, "logged", {user = data.user, logins = logins[data.user]})
        elseif topic == "stop" then
            return {logins = logins, handler_starts = handler_starts}
        end
    end
end

return {main = main}
