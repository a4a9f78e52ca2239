-- Legato's Lua kernel: loaded (as bytecode) into every workflow and activity runtime by the host.
--
-- It sees the real standard library; the code of an entry only sees the sandboxed environment
-- built here.  In workflow mode it holds the deterministic scheduler (every workflow coroutine,
-- FIFO by readiness), Go-like channels, signals, timers and activity futures; every command goes
-- to the host (Python) through the functions in `H`.  In activity mode it builds an environment
-- with the standard library and the activity flavour of the modules.
--
-- Called as: kernel(mode, H) -> K (a table of functions for the host)

local MODE, H = ...
local K = {}

-- getmetatable is the raw one: the kernel's metatables are protected (__metatable) from code,
-- and the kernel's own identity checks must see through that.
local type, pairs, ipairs, next, select, tostring, tonumber, error, rawget, rawset, setmetatable, getmetatable =
    type, pairs, ipairs, next, select, tostring, tonumber, error, rawget, rawset, setmetatable, debug.getmetatable
local pcall, xpcall, load = pcall, xpcall, load
local co_create, co_resume, co_yield, co_status, co_running, co_close, co_isyieldable, co_wrap =
    coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running, coroutine.close,
    coroutine.isyieldable, coroutine.wrap
local sethook, getinfo, traceback = debug.sethook, debug.getinfo, debug.traceback
local pack, unpack, concat, tinsert, tremove, tsort = table.pack, table.unpack, table.concat, table.insert,
    table.remove, table.sort
local sformat, sbyte, schar, sgsub, smatch, sfind, ssub, srep = string.format, string.byte, string.char,
    string.gsub, string.match, string.find, string.sub, string.rep
local floor, huge, mtype, ceil = math.floor, math.huge, math.type, math.ceil
local os_date = os.date

local KERNEL_SOURCE = getinfo(1, "S").source

-- String patterns for code: C's matcher when a cheap bound says a call ends soon, else a Lua
-- matcher of the same semantics that the instruction hook can stop (worker/patterns.lua). The
-- real string table is changed (methods on strings go through it); the kernel keeps the C
-- functions in its locals above.
do
    local P = load(H.patterns, "=legato/patterns.lua", "b")(string)
    string.find, string.match, string.gmatch, string.gsub = P.find, P.match, P.gmatch, P.gsub
end
python = nil -- lupa's bridge table: never reachable from entry code

-- ------------------------------------------------------------------ errors

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
        if info.what ~= "C" and src ~= KERNEL_SOURCE and src ~= "=legato/patterns.lua" then
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

-- ------------------------------------------------------------------ time values
-- Durations are Go's: integers of nanoseconds (time.NANOSECOND == 1, time.SECOND == 1e9), so a
-- plain number given as a duration is nanoseconds, `10 * time.MILLISECOND` reads as it says, and
-- strings ("250ms", "5m") are as before. Timers fire with millisecond resolution (a history
-- records milliseconds: histories written when numbers meant milliseconds replay, the recorded
-- durations being what they were). Times are UTC instants in milliseconds.

local NS_PER_MS = 1000000
local DUR = { __name = "duration" }
DUR.__index = DUR
local function new_duration(ns) return setmetatable({ _ns = ns }, DUR) end
function DUR:nanoseconds() return self._ns end
function DUR:microseconds() return self._ns // 1000 end
function DUR:milliseconds() return self._ns // NS_PER_MS end
function DUR:seconds() return self._ns / 1e9 end
function DUR:minutes() return self._ns / 6e10 end
function DUR:hours() return self._ns / 3.6e12 end
DUR.__tostring = function(self)
    local ns = self._ns
    if ns % NS_PER_MS ~= 0 then
        if ns % 1000 == 0 then return sformat("%dus", ns // 1000) end
        return sformat("%dns", ns)
    end
    local ms = ns // NS_PER_MS
    if ms % 3600000 == 0 and ms ~= 0 then return sformat("%dh", ms // 3600000) end
    if ms % 60000 == 0 and ms ~= 0 then return sformat("%dm", ms // 60000) end
    if ms % 1000 == 0 then return sformat("%ds", ms // 1000) end
    return sformat("%dms", ms)
end
DUR.__eq = function(a, b) return a._ns == b._ns end
DUR.__lt = function(a, b) return a._ns < b._ns end
DUR.__le = function(a, b) return a._ns <= b._ns end

local MAX_DURATION_MS = H.max_duration_ms
local MAX_DURATION_NS = MAX_DURATION_MS * NS_PER_MS  -- 100 years: within Lua's 64-bit integers

-- A duration value (number of ns, time.* duration, or "5s") in ns; errors name `what`.
local function duration_ns(d, what, level)
    local t = type(d)
    if t == "number" then
        if d < 0 then error(sformat("%s: a duration cannot be negative (%s)", what, tostring(d)), level + 1) end
        if d ~= d or d > MAX_DURATION_NS then
            error(sformat("%s: %s ns is not a duration Legato keeps (at most 100 years)", what, tostring(d)),
                level + 1)
        end
        return d
    end
    if getmetatable(d) == DUR then return d._ns end
    if t == "string" then
        local ms, err = H.duration_ms(d)
        if ms == nil then error(what .. ": " .. tostring(err), level + 1) end
        return ms * NS_PER_MS
    end
    error(sformat("%s: expected a duration such as \"5s\", a number of nanoseconds or a time.* value, got %s",
        what, t), level + 1)
end
-- The same in whole milliseconds, rounded up (what timers and deadlines are recorded in).
local function duration_ms(d, what, level)
    return ceil(duration_ns(d, what, level + 1) / NS_PER_MS)
end

local TIME = { __name = "time" }
TIME.__index = TIME
local UTC_LOCATION  -- makes time.utc (below)
local function new_time(ms) return setmetatable({ _ms = ms }, TIME) end
local function check_time(o, what, level)
    if getmetatable(o) ~= TIME then error(what .. ": expected a time value", level + 1) end
    return o._ms
end
function TIME:sub(other) return new_duration((self._ms - check_time(other, "time:sub", 2)) * NS_PER_MS) end
function TIME:add(d) return new_time(self._ms + duration_ns(d, "time:add", 2) // NS_PER_MS) end
function TIME:unix() return self._ms // 1000 end
function TIME:unix_milli() return self._ms end
function TIME:unix_nano() return self._ms * NS_PER_MS end
function TIME:utc() return self end  -- times are UTC instants already
function TIME:before(o) return self._ms < check_time(o, "time:before", 2) end
function TIME:after(o) return self._ms > check_time(o, "time:after", 2) end
function TIME:equal(o) return self._ms == check_time(o, "time:equal", 2) end
local function fields(self) return os_date("!*t", self._ms // 1000) end
function TIME:year() return fields(self).year end
function TIME:month() return fields(self).month end
function TIME:day() return fields(self).day end
function TIME:hour() return fields(self).hour end
function TIME:minute() return fields(self).min end
function TIME:second() return fields(self).sec end
function TIME:nanosecond() return self._ms % 1000 * NS_PER_MS end
function TIME:weekday() return fields(self).wday - 1 end  -- as Go: 0 is Sunday
function TIME:year_day() return fields(self).yday end
function TIME:date() local f = fields(self) return f.year, f.month, f.day end
function TIME:clock() local f = fields(self) return f.hour, f.min, f.sec end
-- Calendar arithmetic (one local: the kernel's main chunk is near Lua's 200 locals).
-- ZERO_MS: Go's zero time (January 1, year 1, UTC), what is_zero means and round/truncate count from.
local CAL = { ZERO_MS = -62135596800000, DAY_MS = 86400000 }
function TIME:is_zero() return self._ms == CAL.ZERO_MS end
function TIME:location() return UTC_LOCATION() end
function TIME:format_rfc3339() return self:format("2006-01-02T15:04:05Z07:00") end
do
    local function whole_duration_ms(d, what)
        if getmetatable(d) ~= DUR then error(what .. ": expected a duration (time.parse_duration)", 3) end
        local ms = d._ns // NS_PER_MS
        return ms > 0 and ms or nil
    end
    function TIME:truncate(d)
        local ms = whole_duration_ms(d, "time:truncate")
        if ms == nil then return self end
        return new_time(self._ms - (self._ms - CAL.ZERO_MS) % ms)
    end
    function TIME:round(d)
        local ms = whole_duration_ms(d, "time:round")
        if ms == nil then return self end
        local r = (self._ms - CAL.ZERO_MS) % ms
        return new_time(self._ms - r + (r + r >= ms and ms or 0))
    end
end
-- Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's days_from_civil); months and
-- days out of range carry over, as Go's time.Date normalises them.
function CAL.days_from_civil(y, m, d)
    y = y + (m - 1) // 12
    m = (m - 1) % 12 + 1
    if m <= 2 then y = y - 1 end
    local era = y // 400
    local yoe = y - era * 400
    local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
    local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468
end
function TIME:add_date(years, months, days)
    for _, v in ipairs({ years, months, days }) do
        if mtype(v) ~= "integer" then error("time:add_date: expected whole numbers of years, months and days", 2) end
    end
    local f = fields(self)
    local day_ms = self._ms % CAL.DAY_MS
    return new_time(CAL.days_from_civil(f.year + years, f.month + months, f.day + days) * CAL.DAY_MS + day_ms)
end
-- A Go layout ("2006-01-02T15:04:05Z07:00", time.RFC3339, ...); a strftime layout ("%Y-%m-%d",
-- Legato's older form) when it has a "%".
function TIME:format(layout)
    if layout == nil then layout = "2006-01-02T15:04:05Z07:00" end
    if layout == "RFC3339" then layout = "2006-01-02T15:04:05Z07:00" end
    if type(layout) ~= "string" then error("time:format: expected a layout string such as time.RFC3339", 2) end
    if sfind(layout, "%", 1, true) then return os_date("!" .. layout, self._ms // 1000) end
    local s, msg = H.crypto("time.format", self._ms, "u" .. layout)
    if s == nil then error(msg, 2) end
    return s
end
TIME.__tostring = function(self)
    local frac = self._ms % 1000
    if frac == 0 then return os_date("!%Y-%m-%dT%H:%M:%SZ", self._ms // 1000) end
    return os_date("!%Y-%m-%dT%H:%M:%S", self._ms // 1000) .. sformat(".%03dZ", frac)
end
TIME.__eq = function(a, b) return a._ms == b._ms end
TIME.__lt = function(a, b) return a._ms < b._ms end
TIME.__le = function(a, b) return a._ms <= b._ms end

-- Legato's times are UTC instants: time.utc is the one location. A plain table (each run's
-- module copy has its own), known by its _location field.
local function utc_string() return "UTC" end
UTC_LOCATION = function() return { _location = "UTC", string = utc_string } end

local function time_constants(t)
    local MONTHS = { "JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST", "SEPTEMBER",
        "OCTOBER", "NOVEMBER", "DECEMBER" }
    local WEEKDAYS = { "SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY" }
    local function utc_only(loc, what)
        if loc ~= nil and not (type(loc) == "table" and rawget(loc, "_location") == "UTC") then
            error(what .. ": Legato's times are UTC; time zones other than time.utc are not provided", 3)
        end
    end
    t.NANOSECOND = 1
    t.MICROSECOND = 1000
    t.MILLISECOND = NS_PER_MS
    t.SECOND = 1000 * NS_PER_MS
    t.MINUTE = 60 * t.SECOND
    t.HOUR = 60 * t.MINUTE
    for name, layout in pairs(H.time_layouts) do t[name] = layout end
    for i, name in ipairs(MONTHS) do t[name] = i end
    for i, name in ipairs(WEEKDAYS) do t[name] = i - 1 end
    t.utc = UTC_LOCATION()
    t.load_location = function(name)
        if name == "UTC" then return UTC_LOCATION() end
        return nil, make_error(sformat("time.load_location(%q): Legato's times are UTC; other time zones are not "
            .. "provided", tostring(name)), KIND.NOT_FOUND, false)
    end
    -- time.date(year, month, day, hour, min, sec, nsec [, time.utc]): out-of-range parts carry over
    t.date = function(year, month, day, hour, min, sec, nsec, loc)
        utc_only(loc, "time.date")
        for _, v in ipairs({ year, month, day, hour or 0, min or 0, sec or 0, nsec or 0 }) do
            if mtype(v) ~= "integer" then error("time.date: expected whole numbers", 2) end
        end
        return new_time(CAL.days_from_civil(year, month, day) * CAL.DAY_MS + (hour or 0) * 3600000 + (min or 0) * 60000
            + (sec or 0) * 1000 + (nsec or 0) // NS_PER_MS)
    end
    -- time.parse_duration(d): the duration, or nil, err (a string such as "1h30m", nanoseconds, a duration)
    t.parse_duration = function(d)
        if getmetatable(d) == DUR then return d end
        if type(d) == "number" then
            if d ~= d or d < 0 or d > MAX_DURATION_NS then
                return nil, make_error(sformat("time.parse_duration: %s ns is not a duration Legato keeps (0 to 100 "
                    .. "years)", tostring(d)), KIND.INVALID, false)
            end
            return new_duration(d)
        end
        if type(d) ~= "string" then
            return nil, make_error("time.parse_duration: expected a string such as \"1h30m\", a number of "
                .. "nanoseconds or a duration", KIND.INVALID, false)
        end
        local ms, err = H.duration_ms(d)
        if ms == nil then return nil, make_error("time.parse_duration: " .. tostring(err), KIND.INVALID, false) end
        return new_duration(ms * NS_PER_MS)
    end
    t.duration = function(ns) return new_duration(duration_ns(ns, "time.duration", 2)) end
    t.unix = function(sec, nsec) return new_time(floor((sec or 0) * 1000 + (nsec or 0) / NS_PER_MS)) end
    t.unix_milli = function(ms) return new_time(floor(ms)) end
    -- time.parse(layout, text [, time.utc]): the time, or nil, err (kind Invalid)
    t.parse = function(layout, text, loc)
        utc_only(loc, "time.parse")
        if type(layout) ~= "string" or type(text) ~= "string" then
            return nil, make_error("time.parse: expected a layout and a text (strings)", KIND.INVALID, false)
        end
        local ms, msg, kind = H.crypto("time.parse", "u" .. layout, "u" .. text)
        if ms == nil then return nil, make_error(msg, kind, false) end
        return new_time(ms)
    end
    return t
end

-- ------------------------------------------------------------------ hex helpers

local function to_hex(s) return (sgsub(s, ".", function(c) return sformat("%02x", sbyte(c)) end)) end
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

-- ------------------------------------------------------------------ text
-- Wippy's text module (worker/text_ops.py): RE2 regular expressions, diff-match-patch, splitters.
-- Every operation is a pure function of its arguments (diffs are bounded by a step budget, not a
-- clock), so workflows call them directly: nothing is recorded, and a replay computes the same.
-- Regexps, differs and splitters are Lua objects holding what they were made from (the pattern,
-- the checked options); each method hands that to the host again (patterns compile once there, in
-- a bounded cache). Bad arguments: nil, err (kind Invalid).
local function new_text()
    local A = crypto_arg
    local function bad_self(what)
        return nil, make_error(what .. ": call it as a method (with a colon)", KIND.INVALID, false)
    end
    local RE = { __name = "text.Regexp", __metatable = "text.Regexp" }
    local RM = {}
    RE.__index = RM
    local function re_method(name, fn)
        RM[name] = function(self, ...)
            if getmetatable(self) ~= RE then return bad_self("re:" .. name) end
            return fn(self, ...)
        end
    end
    for _, name in ipairs({ "match_string", "find_string", "find_all_string", "find_string_submatch",
        "find_all_string_submatch", "find_string_index", "find_all_string_index" }) do
        re_method(name, function(self, s) return pure_op("text.re." .. name, A(self._p), A(s)) end)
    end
    re_method("replace_all_string", function(self, s, repl)
        return pure_op("text.re.replace_all_string", A(self._p), A(s), A(repl))
    end)
    re_method("split", function(self, s, n) return pure_op("text.re.split", A(self._p), A(s), n) end)
    re_method("num_subexp", function(self) return pure_op("text.re.num_subexp", A(self._p)) end)
    re_method("subexp_names", function(self) return pure_op("text.re.subexp_names", A(self._p)) end)
    re_method("string", function(self) return self._p end)

    local DIFF = { __name = "text.Differ", __metatable = "text.Differ" }
    local DM = {}
    DIFF.__index = DM
    local function diff_method(name, fn)
        DM[name] = function(self, ...)
            if getmetatable(self) ~= DIFF then return bad_self("diff:" .. name) end
            return fn(self, ...)
        end
    end
    diff_method("compare", function(self, a, b) return pure_op("text.diff.compare", self._o, A(a), A(b)) end)
    diff_method("patch_make", function(self, a, b) return pure_op("text.diff.patch_make", self._o, A(a), A(b)) end)
    for _, name in ipairs({ "summarize", "pretty_text", "pretty_html" }) do
        diff_method(name, function(self, diffs) return pure_op("text.diff." .. name, diffs) end)
    end
    diff_method("patch_apply", function(self, patches, s)
        local r, err = pure_op("text.diff.patch_apply", self._o, patches, A(s))
        if r == nil then return nil, err end
        return r[1], r[2]
    end)

    local SPLIT = { __name = "text.Splitter", __metatable = "text.Splitter" }
    local SM = {}
    SPLIT.__index = SM
    function SM.split_text(self, s)
        if getmetatable(self) ~= SPLIT then return bad_self("splitter:split_text") end
        return pure_op("text.splitter.split_text", self._o, A(s))
    end
    -- pages: {{content = "...", metadata = {...}}, ...} -> a chunk per piece, with its page's metadata
    function SM.split_batch(self, pages)
        if getmetatable(self) ~= SPLIT then return bad_self("splitter:split_batch") end
        if type(pages) ~= "table" then
            return nil, make_error("splitter:split_batch: expected a table of {content, metadata}", KIND.INVALID, false)
        end
        local out = {}
        for i = 1, #pages do
            local page = pages[i]
            if type(page) ~= "table" then
                return nil, make_error(sformat("splitter:split_batch: page %d is not a table", i), KIND.INVALID, false)
            end
            local chunks, err = pure_op("text.splitter.split_text", self._o, A(page.content))
            if chunks == nil then return nil, errors.wrap(err, sformat("page %d", i)) end
            for j = 1, #chunks do out[#out + 1] = { content = chunks[j], metadata = page.metadata } end
        end
        return out, nil
    end
    local function splitter(kind)
        return function(options)
            local o, err = pure_op("text.splitter.new", kind, options)
            if o == nil then return nil, err end
            return setmetatable({ _o = o }, SPLIT), nil
        end
    end

    return {
        regexp = {
            compile = function(pattern)
                local ok, err = pure_op("text.re.compile", A(pattern))
                if not ok then return nil, err end
                return setmetatable({ _p = pattern }, RE), nil
            end,
        },
        diff = {
            new = function(options)
                local o, err = pure_op("text.diff.new", options)
                if o == nil then return nil, err end
                return setmetatable({ _o = o }, DIFF), nil
            end,
        },
        splitter = { recursive = splitter("recursive"), markdown = splitter("markdown") },
    }
end

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

-- A load() chunk given as a reader function, as one string (so that the binary check applies).
local function read_chunk(chunk)
    if type(chunk) ~= "function" then return chunk end
    local parts = {}
    while true do
        local p = chunk()
        if p == nil or p == "" then break end
        parts[#parts + 1] = p
    end
    return concat(parts)
end

-- Code may not reach the kernel's metatables: through one it could add a finalizer (__gc) to
-- every error object, or an __index that loops where the kernel reads its own objects.
-- getmetatable(v) gives the type's name instead.
local function protect(...)
    for i = 1, select("#", ...) do
        local mt = select(i, ...)
        rawset(mt, "__metatable", rawget(mt, "__name") or "protected")
    end
end
protect(ERR, DUR, TIME, MSG, PAYLOAD)
protect(getmetatable(""))

local function new_message(topic, data, from)
    return setmetatable({ _topic = topic, _data = data, _from = from }, MSG)
end

-- kernel.lua and patterns.lua: frames of Legato's own Lua, never "where the code is"
local function own_source(src) return src == KERNEL_SOURCE or src == "=legato/patterns.lua" end

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

if MODE == "activity" then
    ---------------------------------------------------------------- activity mode
    -- Activities do the side effects, so they get real time and randomness, but not the
    -- process: no files, no subprocesses, no exit, no debug library, no bytecode, no Python.
    -- Each call gets fresh globals and fresh copies of the libraries (nothing one call sets
    -- is seen by the next), an instruction hook that stops it once the host says so (its
    -- timeout passed, or the worker is stopping), and the runtime's memory limit.
    -- the interruption: once set, every hook call and every pcall re-raises it, so that no
    -- handler can swallow it
    local STOP = nil
    local ACT_HOOK_EVERY = 10000
    local function stop_error()
        return make_error(STOP, KIND.TIMEOUT, true, nil, nil)
    end
    local function check_stop(level)
        if STOP == nil then STOP = H.interrupted() end
        if STOP ~= nil then error(stop_error(), level + 1) end
    end

    local mods = {}
    mods.errors = errors
    mods.json = json
    mods.time = time_constants({
        now = function() return new_time(H.now_ms()) end,
        sleep = function(d)
            local ms = duration_ms(d, "time.sleep", 2)
            H.sleep(ms)  -- ends early at the attempt's deadline, or when the worker stops
            check_stop(2)
        end,
    })
    mods.uuid = new_uuid(function(v) return H.uuid_new(v) end)
    mods.hash = new_hash()
    mods.base64 = new_base64()
    mods.text = new_text()
    mods.crypto = new_crypto(function(op, ...) return H.crypto_draw(op, nil, ...) end, H.now_ms)
    mods.crypto.random_bytes = function(n)
        if mtype(n) ~= "integer" or n < 0 then error("crypto.random_bytes: expected a whole number >= 0", 2) end
        return from_hex(H.random_hex(n))
    end
    mods.ctx = {
        get = function(key) return ctx_get(H.context(), key) end,
        all = function() return H.context() end,
    }
    -- activity.heartbeat(details): records progress (details are kept for the next attempt:
    -- activity.heartbeat_details()) and raises an error of kind CANCELED once the workflow has
    -- asked to cancel the activity (report it by letting the error through, or returning it).
    mods.activity = {
        heartbeat = function(details)
            if H.heartbeat(details) then
                error(make_error("the activity was canceled", KIND.CANCELED, false, nil, user_frame(2)), 2)
            end
        end,
        heartbeat_details = function() return H.heartbeat_details() end,
        is_canceled = function() return H.is_canceled() end,
        info = function() return H.activity_info() end,
    }
    local function call_function(id, context, ...)
        if type(id) ~= "string" then error("funcs.call: the function id must be a string", 3) end
        local ok, a, b, c, d = H.call_function(id, pack(...), context)
        if ok then return a end
        return nil, make_error(a, b, c, d)
    end
    mods.funcs = {
        call = function(id, ...) return call_function(id, nil, ...) end,
    }
    local function new_executor(context)
        local ex = {}
        function ex:with_options(o) return new_executor(context) end
        function ex:with_context(c)
            if type(c) ~= "table" then error(make_error("with_context: expected a table", KIND.INVALID, false), 2) end
            local merged = {}
            for k, v in pairs(context or {}) do merged[k] = v end
            for k, v in pairs(c) do merged[k] = v end
            return new_executor(merged)
        end
        function ex:call(id, ...) return call_function(id, context, ...) end
        return ex
    end
    mods.funcs.new = function() return new_executor(nil) end

    local function act_hook()
        if STOP == nil then
            local why = H.interrupted()
            if why == nil then return end
            STOP = why
        end
        error(stop_error(), 2)
    end
    local function act_rethrow(ok, ...)
        if not ok and STOP ~= nil then error(stop_error(), 0) end
        return ok, ...
    end
    local function hooked(co)
        sethook(co, act_hook, "", ACT_HOOK_EVERY)
        return co
    end

    local function copy_of(t)
        local c = {}
        for k, v in pairs(t) do c[k] = v end
        return c
    end
    local IO_DENIED = "is not available to activities (no files, processes or environment of the worker)"
    local function denied(name)
        return function() error(name .. " " .. IO_DENIED, 2) end
    end

    local ENTRY_ID, MODULES, MODULE_NAMES = nil, {}, ""
    local BYTECODE, CHUNK_NAME, METHOD = nil, nil, nil

    local function new_env()
        local env = {}
        for _, name in ipairs({ "assert", "error", "ipairs", "next", "pairs", "rawequal", "rawget", "rawlen",
            "rawset", "select", "getmetatable", "setmetatable", "tonumber", "tostring", "type", "_VERSION" }) do
            env[name] = _G[name]
        end
        env.pcall = function(f, ...) return act_rethrow(pcall(f, ...)) end
        env.xpcall = function(f, h, ...)
            return act_rethrow(xpcall(f, function(e)
                if STOP ~= nil then return e end
                return h(e)
            end, ...))
        end
        env.print = function(...)
            local n = select("#", ...)
            local parts = {}
            for i = 1, n do parts[i] = tostring((select(i, ...))) end
            H.log(concat(parts, "\t"))
        end
        env.collectgarbage = function(opt, ...)
            if opt == nil or opt == "collect" or opt == "step" or opt == "count" then
                return collectgarbage(opt, ...)
            end
            error("collectgarbage(" .. tostring(opt) .. ") is not available to activities", 2)
        end
        local str = copy_of(string)
        str.dump = denied("string.dump")
        env.string = str
        env.table = copy_of(table)
        env.math = copy_of(math)
        env.utf8 = copy_of(utf8)
        env.os = {
            time = os.time, clock = os.clock, date = os.date, difftime = os.difftime,
            getenv = denied("os.getenv"), execute = denied("os.execute"), exit = denied("os.exit"),
            remove = denied("os.remove"), rename = denied("os.rename"), tmpname = denied("os.tmpname"),
            setlocale = denied("os.setlocale"),
        }
        local co = copy_of(coroutine)
        co.create = function(f)
            if type(f) ~= "function" then error("coroutine.create: expected a function", 2) end
            return hooked(co_create(f))
        end
        co.wrap = function(f)
            if type(f) ~= "function" then error("coroutine.wrap: expected a function", 2) end
            local c = hooked(co_create(f))
            return function(...)
                local r = pack(co_resume(c, ...))
                if not r[1] then error(r[2], 0) end
                return unpack(r, 2, r.n)
            end
        end
        co.resume = function(c, ...) return act_rethrow(co_resume(c, ...)) end
        env.coroutine = co
        env.dofile = denied("dofile")
        env.loadfile = denied("loadfile")
        env.load = function(chunk, name, mode, e)
            if mode ~= nil and mode ~= "t" then
                error("load with mode " .. tostring(mode) .. " is not available to activities: only text chunks", 2)
            end
            chunk = read_chunk(chunk)
            if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
                error("loading bytecode is not available to activities: load Lua source text", 2)
            end
            return load(chunk, name, "t", e or env)
        end
        local STD = { string = env.string, table = env.table, math = env.math, utf8 = env.utf8, os = env.os,
            coroutine = env.coroutine }
        env.require = function(name)
            local m = mods[name]
            if m and MODULES[name] then return m end
            if m then
                error(sformat("require(%q): module %q is not listed in the modules of entry %s (modules: [%s])",
                    name, name, ENTRY_ID, MODULE_NAMES), 2)
            end
            if STD[name] then return STD[name] end
            error(sformat("require(%q): no such module for activities (entry %s lists modules: [%s])",
                tostring(name), ENTRY_ID, MODULE_NAMES), 2)
        end
        for name in pairs(MODULES) do env[name] = mods[name] end
        env.errors = errors
        env.payload = { new = payload.new, format = copy_of(payload.format) }
        env._G = env
        return env
    end

    -- The entry's function, loaded into fresh globals: (function) or (nil, message).
    local function load_entry()
        local env = new_env()
        local chunk, err = load(BYTECODE, "=" .. CHUNK_NAME, "b", env)
        if not chunk then return nil, err end
        local ok, mod = xpcall(chunk, traceback)
        if not ok then return nil, (describe_error(mod)) end
        local fn
        if type(mod) == "function" then fn = mod
        elseif type(mod) == "table" then fn = rawget(mod, METHOD) end
        if fn == nil then fn = rawget(env, METHOD) end
        if type(fn) ~= "function" then
            return nil, sformat("%s: method %q not found: the source must return a function, a table with %q, " ..
                "or define a global function %q", CHUNK_NAME, METHOD, METHOD, METHOD)
        end
        return fn
    end

    function K.setup(entry_id, modules, method, bytecode, chunk_name)
        ENTRY_ID, BYTECODE, CHUNK_NAME, METHOD = entry_id, bytecode, chunk_name, method
        local names = {}
        for _, m in ipairs(modules) do
            if mods[m] then MODULES[m] = true end
            names[#names + 1] = m
        end
        MODULE_NAMES = concat(names, ", ")
        -- the entry loads once here so that a broken entry is reported before any call
        local fn, err = load_entry()
        if fn == nil then return nil, err end
        return true, nil
    end

    local function handler(e)
        return e
    end

    local function outcome(r)
        if not r[1] and r[2] == "not enough memory" then
            return "raised", "the activity ran out of Lua memory (limits.activity_lua_memory_bytes)",
                KIND.LIMIT_EXCEEDED, false, nil, nil
        end
        if not r[1] then
            local message, kind, retryable, details, source = describe_error(r[2])
            return "raised", message, kind, retryable, details, source
        end
        local e = r[3]
        if e ~= nil then
            if is_error(e) then
                return "returned_error", tostring(e._message), e._kind, e._retryable, e._details
            elseif type(e) == "table" then
                local m = rawget(e, "message")
                return "returned_error", m ~= nil and tostring(m) or H.json_encode(e), rawget(e, "kind"),
                    rawget(e, "retryable"), rawget(e, "details")
            end
            return "returned_error", tostring(e), nil, nil, nil
        end
        return "ok", r[2]
    end

    -- Returns: "ok", value | "returned_error", message, kind, retryable, details
    --        | "raised", message, kind, retryable, details, source
    function K.call(args)
        STOP = nil
        sethook(act_hook, "", ACT_HOOK_EVERY)
        local fn, err = load_entry()
        if fn == nil then
            sethook()
            if STOP ~= nil then return "raised", STOP, KIND.TIMEOUT, true, nil, nil end
            return "raised", type(err) == "string" and err or "the entry failed to load", KIND.INTERNAL, true, nil, nil
        end
        local r = pack(xpcall(fn, handler, unpack(args, 1, args.n)))
        -- describing the outcome may call the code's metamethods (__tostring, __index): still hooked
        local out = pack(pcall(outcome, r))
        sethook()
        if STOP ~= nil then
            return "raised", STOP, KIND.TIMEOUT, true, nil, nil
        end
        if not out[1] then
            local why = type(out[2]) == "string" and out[2] or "an error while describing it"
            return "raised", "the activity's result cannot be read: " .. why, KIND.INTERNAL, false, nil, nil
        end
        return unpack(out, 2, out.n)
    end
    K.is_error = is_error
    return K
end

--------------------------------------------------------------------- workflow mode

local BLOCK = setmetatable({}, { __name = "legato.block", __tostring = function() return "legato.block" end })
local FATAL = setmetatable({}, { __name = "legato.fatal", __tostring = function() return "workflow task aborted" end })
local CLOSED = setmetatable({}, { __name = "legato.closed" })

-- Every run's state lives in its own table R (see K.new_run): the host runs one run at a time in
-- a Lua state shared by many runs, and enters the run (K.enter) before it feeds it events or runs
-- it. The functions here are shared by the runs; what one run holds (coroutines, channels,
-- pending commands, its globals and modules) is reachable only from its own R.
local R = nil
local HOOK_EVERY = 1000
local exec_opts = setmetatable({}, { __mode = "k" })
local spawn_specs = setmetatable({}, { __mode = "k" })

-- fatal errors end the workflow task whatever the code does (pcall cannot swallow them)
local function set_fatal(cause, message, source)
    if R.fatal_cause == nil then
        R.fatal_cause, R.fatal_message, R.fatal_source = cause, message, source
    end
end
local function raise_fatal(cause, message, level)
    set_fatal(cause, message, user_frame((level or 1) + 2))
    error(FATAL, 0)
end

local function hook()
    local r = R
    if r == nil then return end
    local n = r.hook_calls + 1
    r.hook_calls = n
    if n > r.hook_max then
        set_fatal("LIMIT_EXCEEDED", sformat(
            "the workflow task ran more than %d Lua instructions (limits.lua_instructions_per_task)",
            R.hook_max * HOOK_EVERY), user_frame(2))
        error(FATAL, 0)
    end
end

local function new_coroutine(fn)
    local co = co_create(fn)
    sethook(co, hook, "", HOOK_EVERY)
    return co
end

local function push_ready(t, vals)
    local r = R
    local n = r.rq_tail + 1
    r.rq_tail = n
    r.rq_t[n] = t
    r.rq_v[n] = vals
end

local function wake(t, ...)
    push_ready(t, pack(...))
end

local function this_thread(what)
    if R.current == nil or not co_isyieldable() then
        error(what .. ": cannot block here (not inside a workflow coroutine, or inside a C call)", 3)
    end
    return R.current
end

local function block()
    return co_yield(BLOCK)
end

local function count_command()
    R.ncommands = R.ncommands + 1
    if R.ncommands > R.max_commands then
        raise_fatal("LIMIT_EXCEEDED", sformat("the workflow task issued more than %d commands " ..
            "(limits.max_commands_per_task)", R.max_commands), 2)
    end
end

-- The run's live threads, for `legato workflow stack` (weak: a thread nothing else holds is gone).
local WEAK_KEYS = { __mode = "k" }

local function spawn(fn, ...)
    R.nthreads = R.nthreads + 1
    local t = { co = new_coroutine(fn), id = R.nthreads }
    local live = rawget(R, "threads")
    if live == nil then
        live = setmetatable({}, WEAK_KEYS)
        R.threads = live
    end
    live[t] = true
    push_ready(t, pack(...))
    return t
end

-- ------------------------------------------------------------------ channels

local CH = { __name = "channel" }
CH.__index = CH

local function new_channel(cap)
    return setmetatable({ cap = cap, buf = {}, bh = 1, bt = 0, closed = false, rq = {}, sq = {} }, CH)
end

local function drop_select(sel)
    -- a select finished: take its other waiters off their channels
    for _, w in ipairs(sel.waiters) do
        local q = w.q
        for i = 1, #q do
            if q[i] == w then tremove(q, i) break end
        end
    end
end

local function pop_waiter(q)
    local w = q[1]
    if w == nil then return nil end
    tremove(q, 1)
    if w.sel then
        w.sel.done = true
        drop_select(w.sel)
    end
    return w
end

local function wake_receiver(w, ch, v, ok)
    if w.sel then wake(w.t, { channel = ch, value = v, ok = ok }) else wake(w.t, v, ok) end
end

local function wake_sender(w, ch, closed)
    if closed then wake(w.t, CLOSED)
    elseif w.sel then wake(w.t, { channel = ch, ok = true })
    else wake(w.t, true) end
end

local function buffered(ch) return ch.bt - ch.bh + 1 end

local function buf_push(ch, v)
    ch.bt = ch.bt + 1
    ch.buf[ch.bt] = v
end

local function buf_pop(ch)
    local i = ch.bh
    local v = ch.buf[i]
    ch.buf[i] = nil
    ch.bh = i + 1
    return v
end

-- Non-blocking delivery into a channel (signals, timers): returns false when full.
local function offer(ch, v)
    if ch.closed then return false end
    local w = pop_waiter(ch.rq)
    if w then wake_receiver(w, ch, v, true) return true end
    if buffered(ch) < ch.cap then buf_push(ch, v) return true end
    return false
end

local function try_receive(ch)
    if buffered(ch) > 0 then
        local v = buf_pop(ch)
        local w = pop_waiter(ch.sq)
        if w then buf_push(ch, w.v) wake_sender(w, ch) end
        return true, v, true
    end
    local w = pop_waiter(ch.sq)
    if w then wake_sender(w, ch) return true, w.v, true end
    if ch.closed then return true, nil, false end
    return false
end

local function try_send(ch, v)
    if ch.closed then error("send on closed channel", 3) end
    local w = pop_waiter(ch.rq)
    if w then wake_receiver(w, ch, v, true) return true end
    if buffered(ch) < ch.cap then buf_push(ch, v) return true end
    return false
end

function CH:send(v)
    if getmetatable(self) ~= CH then error("channel:send: call it as ch:send(value)", 2) end
    if try_send(self, v) then return true end
    local t = this_thread("channel:send")
    self.sq[#self.sq + 1] = { t = t, v = v, q = self.sq }
    local r = block()
    if r == CLOSED then error("send on closed channel", 2) end
    return true
end

function CH:receive()
    if getmetatable(self) ~= CH then error("channel:receive: call it as ch:receive()", 2) end
    local done, v, ok = try_receive(self)
    if done then return v, ok end
    local t = this_thread("channel:receive")
    self.rq[#self.rq + 1] = { t = t, q = self.rq }
    return block()
end

function CH:close()
    if self.closed then error("close of closed channel", 2) end
    self.closed = true
    while true do
        local w = pop_waiter(self.rq)
        if not w then break end
        wake_receiver(w, self, nil, false)
    end
    while true do
        local w = pop_waiter(self.sq)
        if not w then break end
        wake_sender(w, self, true)
    end
end

function CH:case_receive() return { ch = self, recv = true } end
function CH:case_send(v) return { ch = self, recv = false, v = v } end
function CH:len() return buffered(self) end
function CH:cap() return self.cap == huge and -1 or self.cap end
function CH:is_closed() return self.closed end

local channel = {}
function channel.new(n)
    if n ~= nil and (mtype(n) ~= "integer" or n < 0) then
        error("channel.new: the buffer size must be a whole number >= 0", 2)
    end
    return new_channel(n or 0)
end

function channel.select(cases)
    if type(cases) ~= "table" then error("channel.select: expected a table of cases", 2) end
    local n = #cases
    for i = 1, n do
        local c = cases[i]
        if type(c) ~= "table" or getmetatable(c.ch) ~= CH then
            error(sformat("channel.select: case %d is not ch:case_receive() or ch:case_send(v)", i), 2)
        end
        if c.recv then
            local done, v, ok = try_receive(c.ch)
            if done then return { channel = c.ch, value = v, ok = ok } end
        else
            if c.ch.closed then error("send on closed channel", 2) end
            if try_send(c.ch, c.v) then return { channel = c.ch, ok = true } end
        end
    end
    if cases.default then return { default = true, ok = true } end
    local t = this_thread("channel.select")
    local sel = { done = false, waiters = {} }
    for i = 1, n do
        local c = cases[i]
        local q = c.recv and c.ch.rq or c.ch.sq
        local w = { t = t, sel = sel, v = c.v, q = q }
        q[#q + 1] = w
        sel.waiters[i] = w
    end
    local r = block()
    if r == CLOSED then error("send on closed channel", 2) end
    return r
end

-- ------------------------------------------------------------------ signals and process


local function deliver(msg)
    local l = R.listeners[msg._topic]
    if l then
        offer(l.ch, l.message and msg or msg._data)
        return
    end
    if R.inbox then offer(R.inbox, msg) return end
    R.pending_signals[#R.pending_signals + 1] = msg
end

function K.signal(name, data, from)
    deliver(new_message(name, data, from))
end

local function emit_event(ev)
    if R.events_ch then
        offer(R.events_ch, ev)
    else
        R.pending_events[#R.pending_events + 1] = ev
    end
end

-- A cancel request goes to process.events() if the code has that channel, or waits for the code
-- to ask for it during this workflow task (the code may not have run yet: a cancel can arrive
-- before the first task). If it has not asked by the end of the task, the host cancels the run.
function K.cancel_requested(reason)
    local ev = { kind = "CANCEL", reason = reason }
    if not R.events_ch then R.pending_cancel = true end
    emit_event(ev)
end

function K.cancel_unhandled()
    return R.pending_cancel ~= nil
end

local process = {}
process.event = { CANCEL = "CANCEL", EXIT = "EXIT", LINK_DOWN = "LINK_DOWN" }
function process.inbox()
    if not R.inbox then
        R.inbox = new_channel(huge)
        local keep = {}
        for _, msg in ipairs(R.pending_signals) do offer(R.inbox, msg) end
        R.pending_signals = keep
    end
    return R.inbox
end
function process.listen(topic, opts)
    if type(topic) ~= "string" then error("process.listen: the topic must be a string", 2) end
    if opts ~= nil and type(opts) ~= "table" then error("process.listen: options must be a table", 2) end
    local l = R.listeners[topic]
    if l then return l.ch end
    l = { ch = new_channel(huge), message = opts ~= nil and opts.message == true }
    R.listeners[topic] = l
    local keep = {}
    for _, msg in ipairs(R.pending_signals) do
        if msg._topic == topic then
            offer(l.ch, l.message and msg or msg._data)
        else
            keep[#keep + 1] = msg
        end
    end
    R.pending_signals = keep
    return l.ch
end
function process.unlisten(ch)
    for topic, l in pairs(R.listeners) do
        if l.ch == ch then R.listeners[topic] = nil end
    end
end
function process.events()
    if not R.events_ch then
        R.events_ch = new_channel(huge)
        R.pending_cancel = nil
        for _, ev in ipairs(R.pending_events) do offer(R.events_ch, ev) end
        R.pending_events = {}
    end
    return R.events_ch
end
function process.pid() return R.workflow_id end

-- ---- R.children, messages, R.monitors and R.links (docs/processes.md)
-- Each operation is a command with a per-run `seq`; the host maps the outcome events back to it.

local function failure_error(message, kind, retryable, details)
    if message == nil then return nil end
    return make_error(message, kind, retryable, details)
end

local function check_pid(fname, pid, level)
    if type(pid) ~= "string" or pid == "" then
        error(make_error(sformat("%s: expected a pid (a workflow id string), got %s", fname,
            pid == nil and "nil" or type(pid)), KIND.INVALID, false, nil, user_frame(level + 1)), level + 1)
    end
end

local function invalid(message, level)
    error(make_error(message, KIND.INVALID, false, nil, user_frame(level + 1)), level + 1)
end

local function emit_exit(pid, run_id, value, err)
    local key = pid .. "\0" .. tostring(run_id)
    if R.exited[key] then return end
    R.exited[key] = true
    emit_event({ kind = "EXIT", from = pid, result = { value = value, error = err } })
end

-- spec: a host spawner spec or nil; mode: "spawn" (pid, err) or "exec" (result, err)
-- monitored: the starter wants the child's EXIT (spawn_monitored, exec); a workflow's R.children
-- always report to it, so only a non-durable caller tells the two apart.
-- linked: spawn_linked*; the host links the two ends and the child's pid joins R.links
local function start_child(fname, spec, mode, id, host, args, monitored, linked)
    if type(id) ~= "string" or id == "" then invalid(fname .. ": the workflow (entry id) must be a non-empty string", 3) end
    if host ~= nil and (type(host) ~= "string" or host == "") then
        invalid(fname .. ": the host must be a temporal.worker entry id (a string)", 3)
    end
    local t = this_thread(fname)
    local seq = R.proc_seq + 1
    -- waits: started with temporal.workflow.wait_for_cancellation = true (see process.cancel)
    -- ppid: a process spawned by a workflow (a recorded message to its host), its pid chosen there
    local err, waits, ppid = H.start_child(seq, id, host, args, spec, user_frame(3),
        monitored == true or mode == "exec", linked == true)
    if err ~= nil then return nil, make_error(fname .. ": " .. err, KIND.INVALID, false) end
    count_command()
    R.proc_seq = seq
    R.children[seq] = { t = t, mode = mode, waits = waits == true, linked = linked == true, seq = seq,
        process_pid = ppid }
    return block()
end

function K.child_started(seq, pid, run_id)
    local c = R.children[seq]
    if c and not c.started then
        c.started = true
        c.pid = pid
        R.child_pids[pid] = c
        if c.linked then R.links[pid] = true end
        if c.mode == "spawn" then wake(c.t, pid) end
    end
end

function K.child_start_failed(seq, message, kind, retryable, details)
    local c = R.children[seq]
    if c then
        R.children[seq] = nil
        wake(c.t, nil, make_error(message, kind, retryable, details))
    end
end

function K.child_closed(seq, pid, run_id, value, message, kind, retryable, details)
    local c = R.children[seq]
    if not c then return end
    R.children[seq] = nil
    if c.pid ~= nil and R.child_pids[c.pid] == c then R.child_pids[c.pid] = nil end
    local err = failure_error(message, kind, retryable, details)
    if c.mode == "exec" then
        wake(c.t, value, err)
    else
        emit_exit(pid, run_id, value, err)
    end
    -- process.cancel calls waiting for this child to close (wait_for_cancellation) return now
    for _, t in ipairs(c.cancel_waiters or {}) do wake(t, true) end
    c.cancel_waiters = nil
end

local function process_op(fname, issue, on_fail)
    local t = this_thread(fname)
    count_command()
    R.proc_seq = R.proc_seq + 1
    local seq = R.proc_seq
    issue(seq, user_frame(3))
    R.pending_proc[seq] = { t = t, on_fail = on_fail }
    return block()
end

function K.op_done(seq, message, kind, retryable, details)
    local p = R.pending_proc[seq]
    if not p then
        -- a workflow's spawn of a process: its host did not take it (it did: the process's
        -- `@legato.spawned` signal starts it, K.child_started)
        local c = R.children[seq]
        if c and c.process_pid and not c.started and message ~= nil then
            K.child_start_failed(seq, message, kind, retryable, details)
        end
        return
    end
    R.pending_proc[seq] = nil
    if message == nil then
        wake(p.t, true)
    else
        if p.on_fail then p.on_fail() end
        wake(p.t, nil, make_error(message, kind, retryable, details))
    end
end

-- A monitored or linked workflow closed (not a child: R.children close through K.child_closed).
function K.monitored_closed(pid, run_id, link, value, message, kind, retryable, details)
    local child = R.child_pids[pid]
    if child ~= nil and child.process_pid == pid and not link then  -- a process this workflow spawned
        return K.child_closed(child.seq, pid, run_id, value, message, kind, retryable, details)
    end
    local err = failure_error(message, kind, retryable, details)
    if link then
        if not R.links[pid] then return end -- unlinked since: dropped, whatever the timing
        R.links[pid] = nil
        if err == nil then -- a normal end: an EXIT, as for a monitor (LINK_DOWN is for abnormal ends)
            emit_exit(pid, run_id, value, nil)
            return
        end
        if R.trap_links then
            emit_event({ kind = "LINK_DOWN", from = pid, result = { value = value, error = err } })
        elseif R.link_down == nil then
            R.link_down = make_error(sformat("linked process %s ended abnormally (%s): %s", pid, tostring(kind),
                tostring(message)), kind, false, details)
        end
    else
        if not R.monitors[pid] then return end
        R.monitors[pid] = nil
        emit_exit(pid, run_id, value, err)
    end
end

-- Another process linked itself to this one (links are both ways), or unlinked (on = false).
function K.linked_by(pid, on)
    if on then R.links[pid] = true else R.links[pid] = nil end
end

function process.send(pid, topic, payload)
    check_pid("process.send", pid, 2)
    if type(topic) ~= "string" or topic == "" then invalid("process.send: the topic must be a non-empty string", 2) end
    if ssub(topic, 1, 8) == "@legato." then invalid("process.send: topics starting with \"@legato.\" are Legato's own", 2) end
    if sbyte(pid, 1) == 64 and not H.caller then
        -- "@...": a non-durable process (a Lua caller). As in Wippy, the send is a recorded side
        -- effect carried out once the task commits, and the sender goes on in the same task (its
        -- outcome, later, is dropped: a process that is gone loses the message).
        count_command()
        R.proc_seq = R.proc_seq + 1
        H.signal_external(R.proc_seq, pid, topic, payload, user_frame(2))
        return true
    end
    return process_op("process.send", function(seq, line) H.signal_external(seq, pid, topic, payload, line) end)
end

function process.monitor(pid)
    check_pid("process.monitor", pid, 2)
    R.monitors[pid] = true
    return process_op("process.monitor", function(seq, line) H.monitor_external(seq, pid, false, false, line) end,
        function() R.monitors[pid] = nil end)
end

function process.unmonitor(pid)
    check_pid("process.unmonitor", pid, 2)
    R.monitors[pid] = nil
    return process_op("process.unmonitor", function(seq, line) H.monitor_external(seq, pid, false, true, line) end)
end

function process.link(pid)
    check_pid("process.link", pid, 2)
    R.links[pid] = true
    return process_op("process.link", function(seq, line) H.monitor_external(seq, pid, true, false, line) end,
        function() R.links[pid] = nil end)
end

function process.unlink(pid)
    check_pid("process.unlink", pid, 2)
    R.links[pid] = nil
    return process_op("process.unlink", function(seq, line) H.monitor_external(seq, pid, true, true, line) end)
end

function process.terminate(pid, reason)
    check_pid("process.terminate", pid, 2)
    if reason ~= nil and type(reason) ~= "string" then invalid("process.terminate: the reason must be a string", 2) end
    return process_op("process.terminate", function(seq, line) H.terminate_external(seq, pid, reason, line) end)
end

-- Returns once the cancel request reached the workflow; for a child started with
-- temporal.workflow.wait_for_cancellation = true, only once that child has closed (its EXIT event
-- still arrives on process.events()).
function process.cancel(pid, deadline)
    check_pid("process.cancel", pid, 2)
    local ms = 0
    if deadline ~= nil then ms = duration_ms(deadline, "process.cancel: the deadline", 2) end
    local ok, err = process_op("process.cancel", function(seq, line) H.cancel_external(seq, pid, ceil(ms), line) end)
    local c = R.child_pids[pid]
    if ok and c ~= nil and c.waits then
        local waiters = c.cancel_waiters or {}
        c.cancel_waiters = waiters
        waiters[#waiters + 1] = this_thread("process.cancel")
        return block()
    end
    return ok, err
end

local OPTION_NAMES = { trap_links = "boolean" }
function process.set_options(opts)
    if type(opts) ~= "table" then invalid("process.set_options: expected a table such as {trap_links = true}", 2) end
    for k, v in pairs(opts) do
        local want = OPTION_NAMES[k]
        if want == nil then
            invalid(sformat("process.set_options: unknown option %q (known: trap_links)", tostring(k)), 2)
        end
        if type(v) ~= want then
            invalid(sformat("process.set_options: %s must be a %s, got %s", k, want, type(v)), 2)
        end
    end
    if opts.trap_links ~= nil then R.trap_links = opts.trap_links end
    return true
end
function process.get_options() return { trap_links = R.trap_links } end

-- process.upgrade(nil, ...): continue as new (same workflow type) with `...` as input;
-- process.upgrade("ns:workflow", ...) continues as that workflow type. Never returns.
function process.upgrade(source, ...)
    if source ~= nil and (type(source) ~= "string" or source == "") then
        invalid("process.upgrade: the first argument must be nil (same workflow) or a workflow entry id", 2)
    end
    this_thread("process.upgrade")
    count_command()
    R.continue_as_new = { source = source, args = pack(...), line = user_frame(2) }
    block()
end

-- ---- spawners: process.with_options{...}, :with_context{...}, :with_name(n), :with_message(t, p)

local SPAWNER = { __name = "spawner" }
SPAWNER.__index = SPAWNER

local function derive(base, op, a, b)
    local spec, err = H.spawn_spec(op, base, a, b)
    if spec == nil then invalid(err, 3) end
    local s = setmetatable({}, SPAWNER)
    spawn_specs[s] = spec
    return s
end

local function spec_of(self, fname)
    if getmetatable(self) ~= SPAWNER then invalid(fname .. ": call it as spawner:" .. fname .. "(...)", 3) end
    return spawn_specs[self]
end

function SPAWNER:with_options(o) return derive(spec_of(self, "with_options"), "options", o) end
function SPAWNER:with_context(c) return derive(spec_of(self, "with_context"), "context", c) end
function SPAWNER:with_name(n) return derive(spec_of(self, "with_name"), "name", n) end
function SPAWNER:with_message(topic, payload) return derive(spec_of(self, "with_message"), "message", topic, payload) end
function SPAWNER:spawn(id, host, ...)
    return start_child("spawner:spawn", spec_of(self, "spawn"), "spawn", id, host, pack(...))
end
function SPAWNER:spawn_monitored(id, host, ...)
    return start_child("spawner:spawn_monitored", spec_of(self, "spawn_monitored"), "spawn", id, host, pack(...), true)
end
function SPAWNER:spawn_linked(id, host, ...)
    return start_child("spawner:spawn_linked", spec_of(self, "spawn_linked"), "spawn", id, host, pack(...), false, true)
end
function SPAWNER:spawn_linked_monitored(id, host, ...)
    return start_child("spawner:spawn_linked_monitored", spec_of(self, "spawn_linked_monitored"), "spawn", id, host,
        pack(...), true, true)
end
function SPAWNER:exec(id, host, ...)
    return start_child("spawner:exec", spec_of(self, "exec"), "exec", id, host, pack(...))
end

local function dot(fname, first)
    if first == process or first == R.modules.process then invalid("process:" .. fname .. ": call it as process." .. fname .. "(...) (a dot)", 3) end
end
function process.with_options(o) dot("with_options", o) return derive(nil, "options", o) end
function process.with_context(c) dot("with_context", c) return derive(nil, "context", c) end
function process.with_name(n) dot("with_name", n) return derive(nil, "name", n) end
function process.with_message(topic, payload) dot("with_message", topic) return derive(nil, "message", topic, payload) end

-- A workflow's R.children are always reported to it, so spawn and spawn_monitored are the same here.
function process.spawn(id, host, ...) return start_child("process.spawn", nil, "spawn", id, host, pack(...)) end
function process.spawn_monitored(id, host, ...)
    return start_child("process.spawn_monitored", nil, "spawn", id, host, pack(...), true)
end
function process.spawn_linked(id, host, ...)
    return start_child("process.spawn_linked", nil, "spawn", id, host, pack(...), false, true)
end
function process.spawn_linked_monitored(id, host, ...)
    return start_child("process.spawn_linked_monitored", nil, "spawn", id, host, pack(...), true, true)
end
function process.exec(id, host, ...) return start_child("process.exec", nil, "exec", id, host, pack(...)) end

-- ------------------------------------------------------------------ timers and time

local function start_timer(ms, on_fire)
    count_command()
    R.seq_timer = R.seq_timer + 1
    local tid = tostring(R.seq_timer)
    local fire_ms = ceil(ms)
    if fire_ms < 1 then fire_ms = 1 end
    H.start_timer(tid, fire_ms, user_frame(3))
    R.pending_timer[tid] = on_fire
    return tid
end

function K.fire_timer(tid)
    local f = R.pending_timer[tid]
    if f then
        R.pending_timer[tid] = nil
        f()
    end
end

local TIMER = { __name = "timer" }
TIMER.__index = TIMER
function TIMER:channel() return self._ch end
TIMER.response = TIMER.channel
function TIMER:stop()
    if R.pending_timer[self._tid] then
        R.pending_timer[self._tid] = nil
        count_command()
        H.cancel_timer(self._tid, user_frame(2))
        return true
    end
    return false
end

local time = time_constants({})
function time.now() return new_time(R.now_ms) end
function time.sleep(d)
    local ms = duration_ms(d, "time.sleep", 2)
    local t = this_thread("time.sleep")
    if ms <= 0 then
        push_ready(t, nil)
        block()
        return
    end
    start_timer(ms, function() wake(t) end)
    block()
end
function time.after(d)
    local ms = duration_ms(d, "time.after", 2)
    local ch = new_channel(1)
    start_timer(ms, function() offer(ch, new_time(R.now_ms)) end)
    return ch
end
function time.timer(d)
    local ms = duration_ms(d, "time.timer", 2)
    local ch = new_channel(1)
    local tid = start_timer(ms, function() offer(ch, new_time(R.now_ms)) end)
    return setmetatable({ _tid = tid, _ch = ch }, TIMER)
end
-- timer:reset(d): as Go's Timer.Reset: stop it if it has not fired, then fire after d (on the
-- same channel); true when it had not fired yet.
function TIMER:reset(d)
    local ms = duration_ms(d, "timer:reset", 2)
    local was_pending = self:stop()
    local ch = self._ch
    self._tid = start_timer(ms, function() offer(ch, new_time(R.now_ms)) end)
    return was_pending
end

-- time.ticker(d): a tick on ticker:channel() every d until ticker:stop(); as Go's, a tick the
-- code has not taken yet makes the next one be dropped (the channel holds one). Each period is a
-- durable timer of the history.
local TICKER = { __name = "ticker" }
TICKER.__index = TICKER
function TICKER:channel() return self._ch end
TICKER.response = TICKER.channel
function TICKER:stop()
    self._stopped = true
    if R.pending_timer[self._tid] then
        R.pending_timer[self._tid] = nil
        count_command()
        H.cancel_timer(self._tid, user_frame(2))
    end
end
function time.ticker(d)
    local ms = duration_ms(d, "time.ticker", 2)
    if ms < 1 then error("time.ticker: the period must be positive", 2) end
    local tk = setmetatable({ _ch = new_channel(1), _stopped = false }, TICKER)
    local function arm()
        tk._tid = start_timer(ms, function()
            offer(tk._ch, new_time(R.now_ms))
            if not tk._stopped then arm() end
        end)
    end
    arm()
    return tk
end

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

-- ------------------------------------------------------------------ the sandbox

local function forbidden(name, alternative)
    return function()
        raise_fatal("FORBIDDEN_CALL", sformat("%s is not allowed in workflow code (it is not replay-safe): %s",
            name, alternative), 1)
    end
end

-- os, io, debug: tables whose missing keys are forbidden functions. Each run gets its own table and
-- metatable (code can reach both: rawset, getmetatable); the functions are shared.
local function forbidden_index(name, alternative)
    return function(_, k)
        return forbidden(name .. "." .. tostring(k), alternative)
    end
end
local function ignore_write() end
local function forbidden_table(allowed, index)
    local t = {}
    for k, v in next, allowed do t[k] = v end
    return setmetatable(t, { __index = index, __newindex = ignore_write })
end

local IO_ALT = "workflow code cannot do I/O; do it in an activity (a function.lua entry) called with funcs.call"

local function rethrow(ok, ...)
    if not ok then
        local e = ...
        if e == FATAL or R.fatal_cause then error(FATAL, 0) end
        if e == "not enough memory" then
            set_fatal("LIMIT_EXCEEDED", "the workflow ran out of Lua memory (limits.lua_memory_bytes)", nil)
            error(FATAL, 0)
        end
    end
    return ok, ...
end

-- coroutine.create/resume/wrap stay standard Lua, except that a blocking workflow call inside
-- such a coroutine is passed through to the scheduler (and fatal errors are not swallowed).
local function user_resume(co, ...)
    local r = pack(co_resume(co, ...))
    while r[1] and r[2] == BLOCK and co_status(co) == "suspended" do
        local back = pack(co_yield(BLOCK))
        r = pack(co_resume(co, unpack(back, 1, back.n)))
    end
    return rethrow(unpack(r, 1, r.n))
end

local ucoroutine = {
    create = function(f)
        if type(f) ~= "function" then error("coroutine.create: expected a function", 2) end
        return new_coroutine(f)
    end,
    resume = user_resume,
    yield = co_yield,
    status = co_status,
    running = co_running,
    isyieldable = co_isyieldable,
    close = co_close,
    wrap = function(f)
        if type(f) ~= "function" then error("coroutine.wrap: expected a function", 2) end
        local co = new_coroutine(f)
        return function(...)
            local r = pack(user_resume(co, ...))
            if not r[1] then
                local e = r[2]
                if type(e) == "string" then error(e, 0) end
                error(e, 0)
            end
            return unpack(r, 2, r.n)
        end
    end,
    spawn = function(fn, ...)
        if type(fn) ~= "function" then error("coroutine.spawn: expected a function", 2) end
        spawn(fn, ...)
    end,
}

local function copy(t)
    local c = {}
    for k, v in pairs(t) do c[k] = v end
    return c
end

-- A module's table and the tables in it, copied (each run gets its own: code may change them).
local function copy_module(t)
    local c = {}
    for k, v in next, t do
        if type(v) == "table" then v = copy_module(v) end
        c[k] = v
    end
    return c
end

local modules = {
    funcs = funcs, time = time, uuid = uuid, crypto = crypto, workflow = workflow, json = json,
    process = process, channel = channel, coroutine = ucoroutine, errors = errors, ctx = ctx,
    hash = hash, base64 = base64, payload = payload, text = new_text(),
}
local ALWAYS = { "process", "channel", "coroutine", "errors", "payload" }
local STD = { string = true, table = true, math = true, utf8 = true }

-- Lua seeds its string hash per state, so `pairs` over string keys visits them in a different
-- order in every runtime (and table/function keys by address). Workflow code gets a `pairs` that
-- visits number and boolean keys in table order and, as soon as other keys exist, a sorted
-- snapshot: numbers, then strings, then booleans, then the rest.
local KEY_RANK = { number = 1, string = 2, boolean = 3 }
local function key_lt(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return (KEY_RANK[ta] or 4) < (KEY_RANK[tb] or 4) end
    if ta == "number" or ta == "string" then return a < b end
    if ta == "boolean" then return (not a) and b end
    return false
end

-- The keys of `t` in the order above, or nil when it has only number and boolean keys.
local function sorted_keys(t)
    local plain = true
    for k in next, t do
        local tk = type(k)
        if tk ~= "number" and tk ~= "boolean" then plain = false break end
    end
    if plain then return nil end
    local keys, n = {}, 0
    for k in next, t do
        n = n + 1
        keys[n] = k
    end
    tsort(keys, key_lt)
    return keys
end

local function det_pairs(t)
    local mt = getmetatable(t)
    if mt ~= nil and type(mt) == "table" and rawget(mt, "__pairs") ~= nil then
        return mt.__pairs(t)
    end
    if type(t) ~= "table" then
        error("bad argument #1 to 'pairs' (table expected, got " .. type(t) .. ")", 2)
    end
    local keys = sorted_keys(t)
    if keys == nil then return next, t, nil end
    local i = 0
    return function()
        while true do
            i = i + 1
            local k = keys[i]
            if k == nil then return nil end
            local v = rawget(t, k)
            if v ~= nil then return k, v end
        end
    end, t, nil
end

-- `next` in the same order as `pairs` (`for k, v in next, t do`, `local k = next(t)`): a traversal
-- that starts with next(t) takes a sorted snapshot of the keys and follows it.
local next_order = setmetatable({}, { __mode = "k" }) -- table -> { keys =, pos = key -> index }
local function det_next(t, k)
    if type(t) ~= "table" then
        error("bad argument #1 to 'next' (table expected, got " .. type(t) .. ")", 2)
    end
    local order = next_order[t]
    local i
    if k == nil then
        local keys = sorted_keys(t)
        if keys == nil then
            next_order[t] = nil
            return next(t)
        end
        local pos = {}
        for j = 1, #keys do pos[keys[j]] = j end
        order = { keys = keys, pos = pos }
        next_order[t] = order
        i = 0
    elseif order == nil then
        return next(t, k)
    else
        i = order.pos[k]
        if i == nil then error("invalid key to 'next'", 2) end
    end
    local keys = order.keys
    while true do
        i = i + 1
        local key = keys[i]
        if key == nil then return nil end
        local v = rawget(t, key)
        if v ~= nil then return key, v end
    end
end

-- The functions of every run's globals (shared: they find the running run through R).
local G = {}
G.pairs = det_pairs
G.next = det_next
for _, name in ipairs({ "assert", "error", "ipairs", "rawequal", "rawget", "rawlen",
    "rawset", "select", "getmetatable", "tonumber", "tostring", "type", "_VERSION" }) do
    G[name] = _G[name]
end
-- finalizers run at arbitrary points of garbage collection (outside the instruction limit, and
-- differently on replay): not in workflow code
-- weak tables lose entries when the garbage collector runs, which differs on replay
G.setmetatable = function(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
        raise_fatal("FORBIDDEN_CALL", "__gc metamethods are not allowed in workflow code (finalizers run " ..
            "at non-deterministic points); release resources explicitly or use to-be-closed variables", 1)
    end
    if type(mt) == "table" and rawget(mt, "__mode") ~= nil then
        raise_fatal("FORBIDDEN_CALL", "weak tables (__mode) are not allowed in workflow code: what they " ..
            "keep depends on when the garbage collector runs, which differs on replay", 1)
    end
    return setmetatable(t, mt)
end
G.pcall = function(f, ...) return rethrow(pcall(f, ...)) end
G.xpcall = function(f, h, ...)
    return rethrow(xpcall(f, function(e)
        if e == FATAL or R.fatal_cause then return FATAL end
        return h(e)
    end, ...))
end
G.print = function(...)
    if R.replaying then return end
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do parts[i] = tostring((select(i, ...))) end
    H.log(concat(parts, "\t"))
end
-- memory use differs between a run and its replay: workflow code sees none of it. The Lua state is
-- shared by the runs of a worker: a full collection would walk all of them, a step is enough.
G.collectgarbage = function(opt)
    if opt == nil or opt == "collect" or opt == "step" then
        collectgarbage("step")
        return 0
    end
    if opt == "count" then return 0 end
    error("collectgarbage(" .. tostring(opt) .. ") is not allowed in workflow code", 2)
end
G.dofile = forbidden("dofile", "list the module in the entry's `modules` and use require")
G.loadfile = forbidden("loadfile", "list the module in the entry's `modules` and use require")
G.load = function(chunk, name, mode, e)
    if mode ~= nil and mode ~= "t" then
        raise_fatal("FORBIDDEN_CALL", "load with mode " .. tostring(mode) ..
            " is not allowed in workflow code: only text chunks (mode \"t\") can be loaded", 1)
    end
    chunk = read_chunk(chunk)
    if type(chunk) == "string" and sbyte(chunk, 1) == 27 then
        raise_fatal("FORBIDDEN_CALL", "loading bytecode is not allowed in workflow code: load Lua source text", 1)
    end
    return load(chunk, name, "t", e or R.env)
end
G.require = function(name)
    local r = R
    local mod = r.modules[name]
    if mod ~= nil then return mod end
    if STD[name] then return r.env[name] end
    raise_fatal("FORBIDDEN_CALL", sformat("require(%q): entry %s does not list module %q in its modules " ..
        "(modules: [%s])%s", tostring(name), r.ENTRY_ID, tostring(name), r.MODULE_NAMES,
        modules[name] ~= nil and "; add it to the entry's `modules`" or ""), 1)
end

-- string.dump must not be reachable through ("").dump either: replace it in the real table. Each
-- run gets a copy of the string table (code may add functions to it); methods on strings
-- (("x"):upper()) look up the running run's copy.
string.dump = forbidden("string.dump", "bytecode is not allowed in workflow code")
local STRING = string
rawset(getmetatable(""), "__index", function(_, k)
    local r = R
    return (r and r.string or STRING)[k]
end)
local MATH = copy(math)
MATH.random = forbidden("math.random", "use uuid.v4() or crypto.random_bytes(n) (recorded, replay-safe)")
MATH.randomseed = forbidden("math.randomseed", "use uuid.v4() or crypto.random_bytes(n) (recorded, replay-safe)")
local OS = {
    time = forbidden("os.time", "use time.now() (the workflow's replay-safe clock)"),
    clock = forbidden("os.clock", "use time.now() and time:sub() to measure workflow time"),
    date = forbidden("os.date", "use time.now():format(...)"),
    getenv = forbidden("os.getenv", "pass configuration in the workflow input or read it in an activity"),
    execute = forbidden("os.execute", IO_ALT),
    exit = forbidden("os.exit", "return from the main function to finish the workflow"),
    remove = forbidden("os.remove", IO_ALT),
    rename = forbidden("os.rename", IO_ALT),
    tmpname = forbidden("os.tmpname", IO_ALT),
    setlocale = forbidden("os.setlocale", IO_ALT),
    difftime = os.difftime,
}
-- A caller (`legato run`, H.caller) is not replayed: it gets the real clock and randomness, as
-- activities do (Lua 5.4 seeds math.random per state). Workflows keep refusing them.
local CALLER_OS = copy(OS)
CALLER_OS.time, CALLER_OS.clock, CALLER_OS.date = os.time, os.clock, os.date
local CALLER_MATH = copy(math)
local NONE = {}
local OS_INDEX = forbidden_index("os", "workflow code cannot use the operating system; use an activity")
local IO_INDEX = forbidden_index("io", IO_ALT)
local DEBUG_INDEX = forbidden_index("debug", "the debug library is not available to workflow code")

-- A run's globals: the shared functions, and its own copies of every table code can change.
local function build_env(r)
    local env = copy(G)
    r.string = copy(STRING)
    env.string = r.string
    env.table = copy(table)
    env.utf8 = copy(utf8)
    env.math = copy(H.caller and CALLER_MATH or MATH)
    env.os = forbidden_table(H.caller and CALLER_OS or OS, OS_INDEX)
    env.io = forbidden_table(NONE, IO_INDEX)
    env.debug = forbidden_table(NONE, DEBUG_INDEX)
    local mods = {}
    for _, name in ipairs(ALWAYS) do
        local m = copy_module(modules[name])
        mods[name] = m
        env[name] = m
    end
    r.modules = mods
    env._G = env
    r.env = env
end

-- ------------------------------------------------------------------ the host's side

-- new_run(workflow_id): a new run's state, which becomes the running one; the host keeps it and
-- enters it (K.enter) before each of its workflow tasks.
-- The tables of a run's state made on first use (most runs never use most of them).
local LAZY = { pending_activity = true, pending_timer = true, listeners = true, pending_signals = true,
    pending_events = true, children = true, child_pids = true, pending_proc = true, monitors = true, links = true,
    exited = true }
local RUN = { __index = function(r, k)
    if LAZY[k] then
        local t = {}
        rawset(r, k, t)
        return t
    end
end }

function K.new_run(workflow_id)
    local r = setmetatable({
        workflow_id = workflow_id,
        rq_t = {}, rq_v = {}, rq_head = 1, rq_tail = 0,
        nthreads = 0, replaying = false, now_ms = 0,
        ncommands = 0, max_commands = 10000, hook_calls = 0, hook_max = 50000,
        seq_activity = 0, seq_timer = 0, proc_seq = 0, trap_links = false, ENTRY_ID = "", MODULE_NAMES = "",
    }, RUN)
    R = r
    build_env(r)
    return r
end

function K.enter(r)
    R = r
end

-- The run is gone (evicted, failed or closed): nothing of it stays reachable from the kernel.
function K.drop(r)
    if R == r then R = nil end
end

-- The fatal error that ended the running run's task, if any: cause, message, source.
function K.fatal()
    local r = R
    if r == nil then return nil end
    return r.fatal_cause, r.fatal_message, r.fatal_source
end

-- A workflow entry's code is compiled with a first statement that takes the running run's globals
-- (worker/entries.py, WORKFLOW_PRELUDE): `local _ENV = __legato_env();`. Its chunk is then loaded
-- once per Lua state and called once per run: the runs share its function prototypes (the bytecode,
-- constants and debug information), and each call makes the run's own closures over its own _ENV.
-- The chunk's upvalue is this table, which code never sees (the prelude shadows it at once).
local CHUNK_ENV = { __legato_env = function() return R.env end }
local chunks, nchunks = {}, 0 -- bytecode -> chunk
local MAX_CHUNKS = 256

local function shared_chunk(bytecode, chunk_name)
    local chunk = chunks[bytecode]
    if chunk ~= nil then return chunk end
    local err
    chunk, err = load(bytecode, "=" .. chunk_name, "b", CHUNK_ENV)
    if not chunk then return nil, err end
    if nchunks >= MAX_CHUNKS then chunks, nchunks = {}, 0 end
    chunks[bytecode] = chunk
    nchunks = nchunks + 1
    return chunk
end

-- setup(entry_id, modules (list), method, bytecode, chunk_name, max_commands, max_instructions, prelude)
-- prelude: the bytecode starts with the prelude above (a workflow entry's); else the chunk is
-- loaded with the run's globals as its _ENV (a caller's function entry).
function K.setup(entry_id, mods, method, bytecode, chunk_name, max_cmds, max_instructions, prelude)
    local r = R
    r.ENTRY_ID = entry_id
    -- The main thread is hooked too: the kernel calls into values the code made (__tostring,
    -- __index, __eq of errors and payloads) outside the workflow's coroutines.
    r.hook_calls, r.hook_max = 0, (max_instructions or 50000000) // HOOK_EVERY
    sethook(hook, "", HOOK_EVERY)
    local names = {}
    local env = r.env
    for i = 1, #mods do
        local name = mods[i]
        names[#names + 1] = name
        if modules[name] then
            local m = r.modules[name]
            if m == nil then
                m = copy_module(modules[name])
                r.modules[name] = m
            end
            env[name] = m
        end
    end
    r.MODULE_NAMES = concat(names, ", ")
    r.max_commands = max_cmds
    local chunk, err
    if prelude then
        chunk, err = shared_chunk(bytecode, chunk_name)
    else
        chunk, err = load(bytecode, "=" .. chunk_name, "b", env)
    end
    if not chunk then return nil, err end
    r.entry = { chunk, method, chunk_name }
    return true, nil
end

function K.start(args)
    local r = R
    local chunk, method, chunk_name = unpack(r.entry, 1, 3)
    local env = r.env
    r.entry = nil
    r.main_thread = spawn(function(...)
        local mod = chunk()
        local fn
        if type(mod) == "function" then fn = mod
        elseif type(mod) == "table" then fn = rawget(mod, method) end
        if fn == nil then fn = rawget(env, method) end
        if type(fn) ~= "function" then
            error(sformat("%s: method %q not found: the source must return a function, a table with %q, " ..
                "or define a global function %q", chunk_name, method, method, method), 0)
        end
        return fn(...)
    end, unpack(args, 1, args.n))
end

function K.begin(now, is_replaying)
    local r = R
    r.now_ms, r.replaying, r.ncommands, r.hook_calls = now, is_replaying, 0, 0
    sethook(hook, "", HOOK_EVERY)
end

-- Run every ready coroutine until all are blocked.
-- Returns "blocked" | "done", value, err | "error", message, kind, retryable, details, source
--       | "fatal", cause, message, source | "continue", workflow type or nil, args (packed), source
function K.run(max_instructions)
    local r = R
    r.hook_calls, r.hook_max = 0, max_instructions // HOOK_EVERY
    if r.link_down ~= nil then
        -- a linked workflow ended abnormally and this one does not trap links: it ends too
        return "done", nil, r.link_down
    end
    local rq_t, rq_v = r.rq_t, r.rq_v
    while r.rq_head <= r.rq_tail do
        local head = r.rq_head
        local t, v = rq_t[head], rq_v[head]
        rq_t[head], rq_v[head] = nil, nil
        r.rq_head = head + 1
        r.current = t
        local res
        if v then res = pack(co_resume(t.co, unpack(v, 1, v.n))) else res = pack(co_resume(t.co)) end
        r.current = nil
        if r.fatal_cause then
            return "fatal", r.fatal_cause, r.fatal_message, r.fatal_source
        end
        if not res[1] then
            local e = res[2]
            if e == "not enough memory" then
                return "fatal", "LIMIT_EXCEEDED", "the workflow ran out of Lua memory (limits.lua_memory_bytes)",
                    co_user_frame(t.co)
            end
            return "error", describe_error(e, t.co)
        end
        if r.continue_as_new ~= nil then
            local c = r.continue_as_new
            return "continue", c.source, c.args, c.line
        end
        if co_status(t.co) == "dead" then
            if t == r.main_thread then
                return "done", res[2], res[3]
            end
        elseif res[2] ~= BLOCK then
            return "error", "coroutine.yield was called outside a coroutine made with coroutine.create; " ..
                "use channels to wait in workflow code", KIND.INTERNAL, false, nil, co_user_frame(t.co)
        end
    end
    return "blocked"
end

function K.is_error(v) return is_error(v) end

-- The running run's coroutines and where each is: {id, main, status, frames = {{source, line,
-- name}...}} with the workflow code's own frames, innermost first (the kernel's are left out).
function K.stacks()
    local out = {}
    for t in pairs(rawget(R, "threads") or {}) do
        local status = co_status(t.co)
        if status ~= "dead" then
            local frames = {}
            local level = 0
            while true do
                local info = getinfo(t.co, level, "Sln")
                if info == nil then break end
                if info.what ~= "C" and not own_source(info.source) and info.currentline and info.currentline > 0 then
                    frames[#frames + 1] = { source = info.short_src, line = info.currentline, name = info.name }
                end
                level = level + 1
            end
            out[#out + 1] = { id = t.id, main = t == R.main_thread, status = status, frames = frames }
        end
    end
    tsort(out, function(a, b) return a.id < b.id end)
    return out
end

protect(CH, SPAWNER, TIMER, FUTURE, EXEC, getmetatable(BLOCK), getmetatable(FATAL), getmetatable(CLOSED))
sethook(hook, "", HOOK_EVERY)
return K
