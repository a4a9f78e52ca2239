-- Wippy's typed Lua (erased on load; line numbers kept) using crypto as Wippy has it.
local crypto = require("crypto")

type Request = {secret: string, key: string}
type Sealed = {hmac: string, roundtrip: string, uuid_len: integer}

local function seal(req: Request): Sealed
    local ct, err = crypto.encrypt.aes(req.secret, req.key)
    if err then error(err) end
    local plain = crypto.decrypt.aes(ct, req.key) :: string
    local id: string = crypto.random.uuid()
    return {hmac = crypto.hmac.sha256(req.key, req.secret), roundtrip = plain, uuid_len = #id}
end

return {seal = seal}
