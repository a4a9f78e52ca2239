-- Legato's Lua kernel: time values (durations, times, the calendar) and the constants and
-- constructors of the time module that need no clock (time_constants). Loaded by worker/kernel.lua.

local S, H = ...
local type, pairs, ipairs, tostring, error, rawget, setmetatable, getmetatable =
    type, pairs, ipairs, tostring, error, rawget, setmetatable, debug.getmetatable
local sformat, sfind = string.format, string.find
local floor, mtype, ceil = math.floor, math.type, math.ceil
local os_date = os.date
local make_error, KIND = S.make_error, S.KIND
local _ENV = S.NO_GLOBALS

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

S.protect(DUR, TIME)
S.NS_PER_MS, S.DUR, S.TIME, S.new_time, S.new_duration = NS_PER_MS, DUR, TIME, new_time, new_duration
S.duration_ns, S.duration_ms, S.time_constants = duration_ns, duration_ms, time_constants
