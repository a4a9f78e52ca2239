-- Legato's Lua kernel, workflow mode: the modules of deterministic values (uuid, hash, base64,
-- crypto: recorded or derived from the run's clock and seeded random source), the workflow module
-- and ctx. Loaded by worker/kernel.lua.

local S, H = ...
local type, pairs, tostring, error = type, pairs, tostring, error
local pack = table.pack
local sformat = string.format
local mtype = math.type
local user_frame, raise_fatal, count_command = S.user_frame, S.raise_fatal, S.count_command
local new_uuid, new_hash, new_base64, new_crypto, from_hex = S.new_uuid, S.new_hash, S.new_base64, S.new_crypto,
    S.from_hex
local ctx_get, start_child, invalid = S.ctx_get, S.start_child, S.invalid
local R = nil
S.on_run(function(r) R = r end)
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ deterministic values

-- v4 as before this module grew (H.uuid4: the same draws, so recorded runs replay alike)
local uuid = new_uuid(function(v)
    if v == 4 then return H.uuid4() end
    return H.uuid_new(v, R.now_ms)
end)
local hash, base64 = new_hash(), new_base64()

-- Random draws and encryptions are markers in the history, replayed from it; the host reports a
-- recorded value this call could not have made (changed code) as non-determinism.
local crypto = new_crypto(function(op, ...)
    local v, msg, kind, nondeterministic = H.crypto_draw(op, user_frame(2), ...)
    if nondeterministic then raise_fatal("NON_DETERMINISTIC", msg, 2) end
    if msg == nil then count_command() end
    return v, msg, kind
end, function() return R.now_ms end)
function crypto.random_bytes(n)
    if mtype(n) ~= "integer" or n < 0 then error("crypto.random_bytes: expected a whole number >= 0", 2) end
    count_command()
    return from_hex(H.random_hex(n, user_frame(2)))
end

local workflow = {}
function workflow.info() return H.info() end
function workflow.history_length() return H.history_length() end
function workflow.history_size() return H.history_size() end
-- A child workflow on the task queue of the worker its entry is bound to (else this workflow's own),
-- waited for: result, err.
function workflow.exec(id, ...)
    return start_child("workflow.exec", nil, "exec", id, nil, pack(...))
end
function workflow.version(change_id, min, max)
    if type(change_id) ~= "string" or change_id == "" then
        invalid("workflow.version: the change id must be a non-empty string", 2)
    end
    if mtype(min) ~= "integer" or mtype(max) ~= "integer" or min > max then
        invalid(sformat("workflow.version(%q): expected whole numbers min <= max, got %s and %s", change_id,
            tostring(min), tostring(max)), 2)
    end
    local v, recorded, err = H.version(change_id, min, max, user_frame(2))
    if v == nil then raise_fatal("NON_DETERMINISTIC", err, 1) end
    if recorded then count_command() end
    return v
end
function workflow.attrs(a)
    if type(a) ~= "table" then invalid("workflow.attrs: expected a table {search = {...}, memo = {...}}", 2) end
    local n, err = H.attrs(a, user_frame(2))
    if n == nil then invalid(err, 2) end
    for _ = 1, n do count_command() end
    return true
end

local ctx = {}
function ctx.get(key) return ctx_get(H.context(), key) end
function ctx.all()
    local out = {}
    for k, v in pairs(H.context() or {}) do out[k] = v end
    return out
end

S.uuid, S.hash, S.base64, S.crypto, S.workflow, S.ctx = uuid, hash, base64, crypto, workflow, ctx
