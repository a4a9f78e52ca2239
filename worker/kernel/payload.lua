-- Legato's Lua kernel: the json module, ctx lookups, messages and the payload module.
-- Loaded by worker/kernel.lua.

local S, H = ...
local type, tostring, setmetatable = type, tostring, setmetatable
local sformat = string.format
local make_error, KIND, is_error, crypto_arg = S.make_error, S.KIND, S.is_error, S.crypto_arg
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ json (host implementation)

local json = {}
-- Error kinds as Wippy's: what cannot be encoded or parsed is Internal, a wrong argument Invalid.
function json.encode(v)
    local s, err = H.json_encode(v)
    if s == nil then return nil, make_error(err, KIND.INTERNAL, false) end
    return s
end
function json.decode(s)
    if type(s) ~= "string" or s == "" then
        return nil, make_error("json.decode: expected a non-empty string", KIND.INVALID, false)
    end
    local v, err = H.json_decode(s)
    if err ~= nil then return nil, make_error(err, KIND.INTERNAL, false) end
    return v
end
-- json.validate(schema, data): true, or false and an Invalid error saying where and why (JSON
-- Schema, worker/data_ops.py); the schema is a table or a JSON string.
function json.validate(schema, data)
    local schema_arg = type(schema) == "string" and crypto_arg(schema) or schema
    local r, msg, kind = H.crypto("json.validate", schema_arg, data)
    if r == nil then return false, make_error(msg, kind, false) end
    return true
end
function json.validate_string(schema, s)
    local schema_arg = type(schema) == "string" and crypto_arg(schema) or schema
    local r, msg, kind = H.crypto("json.validate_string", schema_arg, crypto_arg(s))
    if r == nil then return false, make_error(msg, kind, false) end
    return true
end

-- ctx.get(key): the value, or nil and a NotFound error (as Wippy) when the context lacks it.
local function ctx_get(c, key)
    local v = c and c[key]
    if v == nil then return nil, make_error(sformat("ctx: no value for key %s", tostring(key)), KIND.NOT_FOUND, false) end
    return v
end

-- Reading a message / value from the host: tables come back as Lua tables already.
local MSG = { __name = "message" }
MSG.__index = MSG
local PAYLOAD = { __name = "payload" }
PAYLOAD.__index = PAYLOAD
function MSG:topic() return self._topic end
function MSG:payload() return setmetatable({ _data = self._data }, PAYLOAD) end
function MSG:from() return self._from end
function MSG:data() return self._data end
-- ------------------------------------------------------------------ payload (global, as Wippy's)
-- A payload holds a Lua value (format lua/any; an error: golang/error), or that value encoded in
-- one of payload.format's formats (worker/data_ops.py). Pure: nothing is recorded in workflows.
local payload = {}
do
local PAYLOAD_FORMAT = { JSON = "json/plain", YAML = "yaml/plain", STRING = "text/plain",
    BYTES = "application/octet-stream", MSGPACK = "application/msgpack", LUA = "lua/any",
    GOLANG = "golang/any", ERROR = "golang/error" }
local HELD = { ["lua/any"] = true, ["golang/any"] = true, ["golang/error"] = true }
local function new_payload(data, format) return setmetatable({ _data = data, _format = format }, PAYLOAD) end
function PAYLOAD:get_format() return self._format or PAYLOAD_FORMAT.LUA end
-- the Lua value: as held, or decoded: value, or nil, err
local function payload_value(p)
    local f = p._format
    if f == nil or HELD[f] then return p._data end
    local r, msg, kind = H.crypto("payload.decode", "u" .. f, crypto_arg(p._data))
    if r == nil then return nil, make_error(msg, kind, false) end
    return r.v
end
-- data(): the value as held (for an encoded payload, its text or bytes); unmarshal(): always the
-- decoded Lua value (as Wippy's, where data() may give the underlying encoded value)
function PAYLOAD:data() return self._data end
function PAYLOAD:unmarshal() return payload_value(self) end
function PAYLOAD:transcode(format)
    if type(format) ~= "string" then
        return nil, make_error("payload:transcode: expected a format such as payload.format.JSON", KIND.INVALID, false)
    end
    if format == self:get_format() then return self end
    local v, err = payload_value(self)
    if err ~= nil then return nil, err end
    if format == PAYLOAD_FORMAT.LUA then return new_payload(v, format) end
    local r, msg, kind = H.crypto("payload.encode", "u" .. format, type(v) == "string" and crypto_arg(v) or v)
    if r == nil then return nil, make_error(msg, kind, false) end
    return new_payload(r.v, format)
end
payload.format = PAYLOAD_FORMAT
function payload.new(v) return new_payload(v, is_error(v) and PAYLOAD_FORMAT.ERROR or PAYLOAD_FORMAT.LUA) end
end


local function new_message(topic, data, from)
    return setmetatable({ _topic = topic, _data = data, _from = from }, MSG)
end

S.protect(MSG, PAYLOAD)
S.json, S.ctx_get, S.MSG, S.PAYLOAD, S.payload, S.new_message = json, ctx_get, MSG, PAYLOAD, payload, new_message
