-- Legato's Lua kernel: error values, the errors module, and where an error comes from (the code's
-- own file:line, Legato's frames left out). Loaded by worker/kernel.lua (see there).

local S, H, K = ...
local type, pairs, ipairs, next, tostring, error, rawget, setmetatable, getmetatable =
    type, pairs, ipairs, next, tostring, error, rawget, setmetatable, debug.getmetatable
local getinfo, concat, sformat, smatch = debug.getinfo, table.concat, string.format, string.match
local own_source = S.own_source
local _ENV = S.NO_GLOBALS

local ERR = { __name = "error" }
ERR.__index = ERR
function ERR:kind() return self._kind end
function ERR:message() return self._message end
-- nil when the error does not say (as Wippy): callers tell "unknown" from "no"
function ERR:retryable() return self._retryable end
function ERR:details()
    local d = self._details
    if type(d) == "table" and next(d) == nil then return nil end
    return d
end
function ERR:source() return self._source end
function ERR:stack() return self._stack end
ERR.__tostring = function(self)
    local kind = self._kind
    if kind == nil or kind == "" then return tostring(self._message) end
    return kind .. ": " .. tostring(self._message)
end
-- "context: " .. err, err .. "!" (either side may be the error)
ERR.__concat = function(a, b) return tostring(a) .. tostring(b) end
-- two errors are equal when they say the same: kind and message
ERR.__eq = function(a, b)
    return getmetatable(a) == ERR and getmetatable(b) == ERR and a._kind == b._kind and a._message == b._message
end

-- the kinds by constant name (errors.NOT_FOUND == KIND.NOT_FOUND == "NotFound", as in Wippy)
local KIND = {}
for name, value in pairs(H.kinds) do KIND[name] = value end

local function make_error(message, kind, retryable, details, source)
    return setmetatable({ __err = true, _message = message, _kind = kind or KIND.UNKNOWN, _retryable = retryable,
        _details = details, _source = source }, ERR)
end
K.make_error = make_error

local function is_error(v) return type(v) == "table" and getmetatable(v) == ERR end

-- err:stack(): where errors.new was called, "file:line in function name" per frame of the code
-- (Legato's own frames left out), innermost first; at most STACK_FRAMES frames.
local STACK_FRAMES = 16
-- (text, frames): frames as errors.call_stack gives them, {source, line, name}
local function code_stack(level)
    local lines, frames = {}, {}
    for l = level, level + 64 do
        local info = getinfo(l, "Sln")
        if not info or #lines >= STACK_FRAMES then break end
        local src = info.source
        if info.what ~= "C" and not own_source(src) then
            local line, name = info.currentline or 0, info.name or ""
            lines[#lines + 1] = sformat("%s:%d in %s", info.short_src, line,
                name ~= "" and ("function " .. name) or "main chunk")
            frames[#frames + 1] = { source = info.short_src, line = line, name = name }
        end
    end
    if #lines == 0 then return nil, nil end
    return concat(lines, "\n"), frames
end

local errors = {}
for k, v in pairs(KIND) do errors[k] = v end
local function errors_new(spec, kind)  -- errors.new without the stack (levels: the caller of errors.new)
    if type(spec) == "string" then
        return make_error(spec, kind or KIND.UNKNOWN, nil, nil)
    end
    if type(spec) ~= "table" then
        error("errors.new: expected a table {message=, kind=, retryable=, details=} or a message string", 3)
    end
    local msg = spec.message
    if msg ~= nil and type(msg) ~= "string" then msg = tostring(msg) end
    local k = spec.kind or kind or KIND.UNKNOWN
    if type(k) ~= "string" then error("errors.new: kind must be a string such as errors.INVALID", 3) end
    local r = spec.retryable
    if r ~= nil and type(r) ~= "boolean" then error("errors.new: retryable must be a boolean", 3) end
    return make_error(msg or "", k, r, spec.details)
end
function errors.new(spec, kind)
    local e = errors_new(spec, kind)
    e._stack, e._frames = code_stack(3)
    return e
end
function errors.is(err, kind)
    return is_error(err) and err._kind == kind
end
function errors.kind(err) if is_error(err) then return err._kind end return nil end
-- errors.call_stack(err): {thread, frames = {{source, line, name}, ...}} where errors.new was
-- called (innermost first), or nil when the error does not know it
function errors.call_stack(err)
    if not is_error(err) or err._frames == nil then return nil end
    local frames = {}
    for i, f in ipairs(err._frames) do frames[i] = { source = f.source, line = f.line, name = f.name } end
    return { thread = "main", frames = frames }
end
function errors.wrap(err, message)
    if is_error(err) then
        local e = make_error(message .. ": " .. tostring(err._message), err._kind, err._retryable, err._details)
        e._stack, e._frames = err._stack, err._frames
        return e
    end
    return make_error(message .. ": " .. tostring(err), KIND.UNKNOWN, nil, nil)
end

local function user_frame(level)
    -- "file:line" of the nearest caller that is not kernel code
    for l = level, level + 12 do
        local info = getinfo(l, "Sl")
        if not info then return nil end
        if info.what ~= "C" and not own_source(info.source) then
            return info.short_src .. ":" .. (info.currentline or 0)
        end
    end
    return nil
end

local function co_user_frame(co)
    for l = 0, 40 do
        local info = getinfo(co, l, "Sl")
        if not info then return nil end
        if info.what ~= "C" and not own_source(info.source) then
            return info.short_src .. ":" .. (info.currentline or 0)
        end
    end
    return nil
end

-- A uniform description of a raised error: message, kind, retryable, details, source.
local function describe_error(e, co)
    local message, kind, retryable, details, source
    if is_error(e) then
        message, kind, retryable, details, source = tostring(e._message), e._kind, e._retryable, e._details, e._source
    elseif type(e) == "string" then
        message = e
        source = smatch(e, "^([^:\n]+%.lua:%d+):")
    elseif type(e) == "table" and type(rawget(e, "message")) == "string" then
        message, kind, retryable, details = e.message, e.kind, e.retryable, e.details
    else
        message = tostring(e)
    end
    if source == nil and co ~= nil then source = co_user_frame(co) end
    return message, kind, retryable, details, source
end
K.describe_error = describe_error

S.protect(ERR)
S.ERR, S.KIND, S.make_error, S.is_error, S.errors = ERR, KIND, make_error, is_error, errors
S.user_frame, S.co_user_frame, S.describe_error = user_frame, co_user_frame, describe_error
