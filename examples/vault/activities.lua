local crypto = require("crypto")

local function unhex(h)
    return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Open the sealed secret and return its HMAC-SHA256 (hex) under the same key.
local function fingerprint(args)
    local key = unhex(args.key)
    local secret, err = crypto.decrypt.aes(unhex(args.sealed), key, args.user)
    if err then return nil, err end
    return crypto.hmac.sha256(key, secret)
end

return { fingerprint = fingerprint }
