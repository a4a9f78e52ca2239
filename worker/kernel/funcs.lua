-- Legato's Lua kernel, workflow mode: activities (funcs.call, funcs.async), their futures and
-- executors. Loaded by worker/kernel.lua.

local S, H, K = ...
local type, tostring, error, setmetatable, getmetatable = type, tostring, error, setmetatable, debug.getmetatable
local pack = table.pack
local make_error, KIND, user_frame, PAYLOAD = S.make_error, S.KIND, S.user_frame, S.PAYLOAD
local new_channel, offer = S.new_channel, S.offer
local this_thread, block, wake, count_command = S.this_thread, S.block, S.wake, S.count_command
local R = nil
S.on_run(function(r) R = r end)
local exec_opts = setmetatable({}, { __mode = "k" })
local _ENV = S.NO_GLOBALS

-- ------------------------------------------------------------------ activities (funcs)

-- R.pending_activity: activity id -> function(value, err), called once with its outcome

local function schedule_activity(opts, id, args)
    count_command()
    R.seq_activity = R.seq_activity + 1
    local aid = tostring(R.seq_activity)
    H.schedule_activity(aid, id, args, opts, user_frame(3))
    return aid
end

local function call_activity(opts, id, ...)
    if type(id) ~= "string" then error("funcs.call: the function id must be a string", 3) end
    local t = this_thread("funcs.call")
    local aid = schedule_activity(opts, id, pack(...))
    R.pending_activity[aid] = function(value, err) wake(t, value, err) end
    return block()
end

function K.resolve_activity(aid, value)
    local cb = R.pending_activity[aid]
    if cb then
        R.pending_activity[aid] = nil
        cb(value, nil)
    end
end

function K.fail_activity(aid, message, kind, retryable, details)
    local cb = R.pending_activity[aid]
    if cb then
        R.pending_activity[aid] = nil
        cb(nil, make_error(message, kind, retryable, details))
    end
end

-- Futures (funcs.async): resolved once by the activity's outcome.
-- future:response() is a channel that receives a payload (payload:data() is the result) and is then
-- closed; on failure it is closed without a value (`local p, ok = ch:receive()` gives ok == false)
-- and future:error() has the error.
local FUTURE = { __name = "future" }
FUTURE.__index = FUTURE

-- The response channel delivers one value (the payload, or the error object: `ok` is true
-- either way) and is then closed.
local function settle_channel(f)
    local ch = f._ch
    offer(ch, f._err == nil and setmetatable({ _data = f._value }, PAYLOAD) or f._err)
    if not ch.closed then ch:close() end
end

local function async_activity(opts, id, ...)
    if type(id) ~= "string" then error("funcs.async: the function id must be a string", 3) end
    local aid = schedule_activity(opts, id, pack(...))
    local f = setmetatable({ _aid = aid, _done = false, _canceled = false }, FUTURE)
    R.pending_activity[aid] = function(value, err)
        f._done, f._value, f._err = true, value, err
        if f._ch then settle_channel(f) end
    end
    return f
end

local function future_of(self, fname)
    if getmetatable(self) ~= FUTURE then error("future:" .. fname .. ": call it as future:" .. fname .. "()", 3) end
    return self
end

-- A future's methods never block (as in Wippy): wait on :response(), or in channel.select.
function FUTURE:response()
    future_of(self, "response")
    if not self._ch then
        self._ch = new_channel(1)
        if self._done then settle_channel(self) end
    end
    return self._ch
end
-- nil, nil while the call runs; then payload, nil (payload:data() is the value) or nil, err
function FUTURE:result()
    future_of(self, "result")
    if not self._done then return nil, nil end
    if self._err ~= nil then return nil, self._err end
    return setmetatable({ _data = self._value }, PAYLOAD), nil
end
function FUTURE:is_complete() return future_of(self, "is_complete")._done end
function FUTURE:is_canceled() return future_of(self, "is_canceled")._canceled end
-- err, true after a failure; nil, false while the call runs or after a success
function FUTURE:error()
    future_of(self, "error")
    if self._done and self._err ~= nil then return self._err, true end
    return nil, false
end
-- Ask for the activity to be canceled: RequestCancelActivityTask (an activity whose command has not
-- been sent yet is dropped and the future fails at once). The future resolves with a CANCELED error
-- (ActivityTaskCanceled) or with the activity's own outcome if it closed first.
-- Returns false when the future is already complete.
function FUTURE:cancel()
    future_of(self, "cancel")
    if self._done then return false end
    if self._canceled then return true end
    self._canceled = true
    local dropped = H.cancel_activity(self._aid, user_frame(2))
    if dropped then
        K.fail_activity(self._aid, "the activity was canceled before it was scheduled", KIND.CANCELED, false, nil)
    else
        count_command()
    end
    return true
end

local EXEC = { __name = "executor" }
EXEC.__index = EXEC
local function derive_executor(self, fname, host_fn, arg)
    if getmetatable(self) ~= EXEC then error(fname .. ": call it as executor:" .. fname .. "(...)", 3) end
    if type(arg) ~= "table" then error(make_error(fname .. ": expected a table", KIND.INVALID, false, nil,
        user_frame(3)), 3) end
    local handle, err = host_fn(arg, exec_opts[self])
    if handle == nil then error(make_error(err, KIND.INVALID, false, nil, user_frame(3)), 3) end
    local ex = setmetatable({}, EXEC)
    exec_opts[ex] = handle
    return ex
end
function EXEC:with_options(o) return derive_executor(self, "with_options", H.activity_options, o) end
function EXEC:with_context(c) return derive_executor(self, "with_context", H.activity_context, c) end
function EXEC:call(id, ...)
    if getmetatable(self) ~= EXEC then error("executor:call: call it as executor:call(id, ...)", 2) end
    return call_activity(exec_opts[self], id, ...)
end
function EXEC:async(id, ...)
    if getmetatable(self) ~= EXEC then error("executor:async: call it as executor:async(id, ...)", 2) end
    return async_activity(exec_opts[self], id, ...)
end

local funcs = {}
function funcs.call(id, ...) return call_activity(nil, id, ...) end
function funcs.async(id, ...) return async_activity(nil, id, ...) end
function funcs.new() return setmetatable({}, EXEC) end

S.protect(FUTURE, EXEC)
S.funcs = funcs
