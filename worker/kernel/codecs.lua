-- Legato's Lua kernel: the crypto, hash, base64 and uuid modules, wrappers of the host's pure
-- functions (worker/crypto_host.py, worker/codec_ops.py), and the tagging of string arguments
-- they share with the text, json and payload modules. Loaded by worker/kernel.lua.

local S, H = ...
local type, ipairs, tonumber, utf8 = type, ipairs, tonumber, utf8
local concat = table.concat
local sformat, sbyte, schar, sgsub, srep = string.format, string.byte, string.char, string.gsub, string.rep
local make_error = S.make_error
local _ENV = S.NO_GLOBALS

local function from_hex(h) return (sgsub(h, "%x%x", function(x) return schar(tonumber(x, 16)) end)) end

-- ------------------------------------------------------------------ crypto (host implementation)
-- Wippy's crypto module (worker/crypto_host.py): each function returns value, nil or nil, err.
-- lupa hands strings to Python decoded as UTF-8, and keys, ciphertexts and derived keys are bytes:
-- each string argument goes tagged, "u" .. s when s is valid UTF-8, else "x" .. its hex. Results
-- come back as Lua strings byte for byte.

local utf8_len = utf8.len
local HEX_CHUNK = 4096
local HEX_CHUNK_FORMAT = srep("%02x", HEX_CHUNK)
-- hex of a long string in a few C calls (a gsub callback per byte would cost the workflow's
-- instruction budget some 5 instructions a byte)
local function long_hex(s)
    local n, parts = #s, {}
    for i = 1, n, HEX_CHUNK do
        local j = i + HEX_CHUNK - 1
        if j > n then j = n end
        local fmt = (j - i + 1 == HEX_CHUNK) and HEX_CHUNK_FORMAT or srep("%02x", j - i + 1)
        parts[#parts + 1] = sformat(fmt, sbyte(s, i, j))
    end
    return concat(parts)
end
local function crypto_arg(s)
    if type(s) ~= "string" then return s end -- the host reports the wrong type as an error
    if utf8_len(s) then return "u" .. s end
    return "x" .. long_hex(s)
end
local function crypto_result(v, msg, kind)
    if msg ~= nil then return nil, make_error(msg, kind, false) end
    return v, nil
end

-- draw(op, ...): a random draw or an encryption (its nonce is random), recorded in workflows;
-- now(): the time (ms) jwt.verify checks exp and nbf against (a workflow's own clock in workflows).
local function new_crypto(draw, now)
    local A = crypto_arg
    local function op(name, ...) return crypto_result(H.crypto(name, ...)) end
    local function drawn(name, ...) return crypto_result(draw(name, ...)) end
    return {
        random = {
            bytes = function(n) return drawn("random.bytes", n) end,
            string = function(n, charset) return drawn("random.string", n, A(charset)) end,
            uuid = function() return drawn("random.uuid") end,
        },
        hmac = {
            sha256 = function(key, data) return op("hmac.sha256", A(key), A(data)) end,
            sha512 = function(key, data) return op("hmac.sha512", A(key), A(data)) end,
        },
        encrypt = {
            aes = function(data, key, aad) return drawn("encrypt.aes", A(data), A(key), A(aad)) end,
            chacha20 = function(data, key, aad) return drawn("encrypt.chacha20", A(data), A(key), A(aad)) end,
        },
        decrypt = {
            aes = function(data, key, aad) return op("decrypt.aes", A(data), A(key), A(aad)) end,
            chacha20 = function(data, key, aad) return op("decrypt.chacha20", A(data), A(key), A(aad)) end,
        },
        jwt = {
            encode = function(payload, key, alg) return op("jwt.encode", payload, A(key), A(alg)) end,
            verify = function(token, key, alg, require_exp)
                return op("jwt.verify", A(token), A(key), A(alg), require_exp, now())
            end,
        },
        pbkdf2 = function(password, salt, iterations, key_length, hash)
            return op("pbkdf2", A(password), A(salt), iterations, key_length, A(hash))
        end,
        constant_time_compare = function(a, b) return op("constant_time_compare", A(a), A(b)) end,
    }
end

-- ------------------------------------------------------------------ hash, base64, uuid
-- Pure functions of their arguments (worker/codec_ops.py), through the host's crypto door: value,
-- or nil, err. New uuids (v1, v4, v7) come from `make(version)`: in workflows from the run's
-- clock and seeded random source (replay-safe, nothing recorded), elsewhere the real ones.

local function pure_op(name, ...) return crypto_result(H.crypto(name, ...)) end

local function new_hash()
    local A, m = crypto_arg, {}
    for _, name in ipairs({ "md5", "sha1", "sha256", "sha512" }) do
        -- hex digest; raw = true: the digest's bytes
        m[name] = function(data, raw) return pure_op("hash." .. name, A(data), raw == true) end
    end
    for _, name in ipairs({ "fnv32", "fnv32a", "fnv64", "fnv64a", "crc32" }) do
        m[name] = function(data) return pure_op("hash." .. name, A(data)) end
    end
    for _, name in ipairs({ "md5", "sha1", "sha256", "sha512" }) do
        m["hmac_" .. name] = function(data, secret, raw)
            return pure_op("hash.hmac_" .. name, A(data), A(secret), raw == true)
        end
    end
    m.pbkdf2 = function(password, salt, iterations, key_length, h)
        return pure_op("hash.pbkdf2", A(password), A(salt), iterations, key_length, A(h))
    end
    return m
end

local function new_base64()
    local A, m = crypto_arg, {}
    for _, name in ipairs({ "encode", "decode", "url_encode", "url_decode" }) do
        m[name] = function(data) return pure_op("base64." .. name, A(data)) end
    end
    return m
end

local function new_uuid(make)
    local A = crypto_arg
    return {
        v1 = function() return make(1) end,
        v4 = function() return make(4) end,
        v7 = function() return make(7) end,
        v3 = function(namespace, name) return pure_op("uuid.v3", A(namespace), A(name)) end,
        v5 = function(namespace, name) return pure_op("uuid.v5", A(namespace), A(name)) end,
        validate = function(s) return (pure_op("uuid.validate", A(s))) == true end,
        parse = function(s) return pure_op("uuid.parse", A(s)) end,
        format = function(s, style) return pure_op("uuid.format", A(s), A(style)) end,
        version = function(s) return pure_op("uuid.version", A(s)) end,
        variant = function(s) return pure_op("uuid.variant", A(s)) end,
        NAMESPACE_DNS = "6ba7b810-9dad-11d1-80b4-00c04fd430c8",
        NAMESPACE_URL = "6ba7b811-9dad-11d1-80b4-00c04fd430c8",
        NAMESPACE_OID = "6ba7b812-9dad-11d1-80b4-00c04fd430c8",
        NAMESPACE_X500 = "6ba7b814-9dad-11d1-80b4-00c04fd430c8",
    }
end

S.from_hex, S.crypto_arg, S.crypto_result, S.pure_op = from_hex, crypto_arg, crypto_result, pure_op
S.new_crypto, S.new_hash, S.new_base64, S.new_uuid = new_crypto, new_hash, new_base64, new_uuid
