-- Random values, shown to an activity (so they are in the history), kept across a signal wait.
local funcs = require("funcs")
local uuid = require("uuid")
local crypto = require("crypto")

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function main()
    local before = { uuid = uuid.v4(), bytes = hex(crypto.random_bytes(16)) }
    funcs.call("eng:echo", before)
    process.listen("go"):receive()
    local after = { uuid = uuid.v4(), bytes = hex(crypto.random_bytes(16)) }
    return { before = before, after = after }
end
return { main = main }
