-- Issue a session token for the user and have the seal workflow store the secret under it.
local crypto = require("crypto")
local time = require("time")

local SIGNING_KEY = "vault example signing key: load it from a secret store"

local function main(request)
    request = request or {user = "ann", secret = "the launch code"}

    local request_id, err = crypto.random.uuid()
    if err then return nil, err end
    local token
    token, err = crypto.jwt.encode({sub = request.user, jti = request_id, exp = time.now():unix() + 300},
        SIGNING_KEY, "HS256")
    if err then return nil, err end

    local events = process.events()
    local pid
    pid, err = process.spawn_monitored("vault:seal", "vault:worker",
        {token = token, secret = request.secret, key = SIGNING_KEY})
    if err then return nil, err end
    local event = events:receive()
    if event.result.error then return nil, event.result.error end

    -- a token signed with another key, or altered, does not verify
    local _, forged = crypto.jwt.verify(token, "another key")
    return {
        request_id = request_id,
        workflow_id = tostring(pid),
        sealed = event.result.value,
        forged_token = forged and forged:kind(),
    }
end

return { main = main }
