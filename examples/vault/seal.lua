-- Verify the caller's token, derive a key from it, seal the secret and fingerprint it.
-- crypto.random.* and crypto.encrypt.* are recorded in the history (a replay reads them back);
-- the other functions are deterministic, and crypto.jwt.verify checks exp against the workflow's
-- own clock, so replays agree with the first run.
local funcs = require("funcs")
local crypto = require("crypto")

local function hex(s)
    return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function main(input)
    local claims, err = crypto.jwt.verify(input.token, input.key)
    if err then return nil, err end

    local salt
    salt, err = crypto.random.bytes(16)
    if err then return nil, err end
    local key
    key, err = crypto.pbkdf2(input.key, salt, 10000, 32, "sha256")
    if err then return nil, err end

    local sealed
    sealed, err = crypto.encrypt.aes(input.secret, key, claims.sub) -- the user as additional data
    if err then return nil, err end

    local fingerprint
    fingerprint, err = funcs.call("vault:fingerprint", {sealed = hex(sealed), key = hex(key), user = claims.sub})
    if err then return nil, err end

    -- altered ciphertext, or another user's additional data, does not decrypt
    local _, tampered = crypto.decrypt.aes(sealed:sub(1, -2) .. "x", key, claims.sub)
    local _, other_user = crypto.decrypt.aes(sealed, key, "mallory")
    return {
        user = claims.sub,
        salt = hex(salt),
        sealed = hex(sealed),
        fingerprint = fingerprint,
        tampered = tampered:kind(),
        other_user = other_user:kind(),
    }
end

return { main = main }
