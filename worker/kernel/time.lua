-- Legato's Lua kernel: time values (durations, times, the calendar) and the constants and
-- constructors of the time module that need no clock (time_constants). Loaded by worker/kernel.lua.

local S, H = ...
local type, pairs, ipairs, tostring, error, setmetatable, getmetatable =
    type, pairs, ipairs, tostring, error, setmetatable, debug.getmetatable
local sformat, sfind = string.format, string.find
local floor, mtype, ceil = math.floor, math.type, math.ceil
local os_date = os.date
local make_error, KIND = S.make_error, S.KIND
local _ENV = S.NO_GLOBALS

-- Durations are Go's: integers of nanoseconds (time.NANOSECOND == 1, time.SECOND == 1e9), so a
-- plain number given as a duration is nanoseconds, `10 * time.MILLISECOND` reads as it says, and
-- strings ("250ms", "5m") are as before. Timers fire with millisecond resolution (a history
-- records milliseconds: histories written when numbers meant milliseconds replay, the recorded
-- durations being what they were). Times are instants in milliseconds, each in a location.

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

-- Locations: UTC (time.utc; time.localtz is UTC too, so a result is the same on every machine), a
-- zone of the pinned tz database (time.load_location, worker/time_zones.py) or a fixed offset
-- (time.fixed_zone). _location is the name; _offset the seconds east of UTC of a fixed zone (nil
-- for a database zone). Each is made for one run (code may write its fields): none is shared.
local LOC = { __name = "location" }
LOC.__index = LOC
local function new_location(name, offset, utc) return setmetatable({ _location = name, _offset = offset, _utc = utc }, LOC) end
local function utc_location() return new_location("UTC", 0, true) end
function LOC:string() return self._location end
LOC.__tostring = LOC.string
LOC.__eq = function(a, b) return a._location == b._location and a._offset == b._offset end
local function check_location(loc, what, level)
    if getmetatable(loc) ~= LOC then
        error(what .. ": expected a location (time.utc, time.load_location(name) or time.fixed_zone(name, offset))",
            level + 1)
    end
    return loc
end
-- A zone operation of the host (pure: the pinned tz database); its error names the time's call.
local function zone_op(level, op, loc, ms)
    local r, msg = H.crypto(op, "u" .. loc._location, ms)
    if r == nil then error(msg, level + 1) end
    return r
end

-- A time: _ms the instant; in UTC nothing else (as every time was before zones, so a history's
-- values are what they were), else _loc its location, _off its offset (seconds) and _abbr its
-- zone's abbreviation at that instant, which its fields and formats read.
local TIME = { __name = "time" }
TIME.__index = TIME
local function new_time(ms) return setmetatable({ _ms = ms }, TIME) end
-- The time at instant ms in location loc (nil: UTC).
local function time_in(loc, ms, level)
    if loc == nil or loc._utc then return new_time(ms) end
    local off, abbr = loc._offset, loc._location
    if off == nil then
        local r = zone_op(level + 1, "time.zone_at", loc, ms)
        off, abbr = r[1], r[2]
    end
    return setmetatable({ _ms = ms, _loc = loc, _off = off, _abbr = abbr }, TIME)
end
-- The time a wall clock (wall_ms: its fields read as UTC) names in loc, by Go's time.Date rule
-- for a wall time a transition skips or repeats (worker/time_zones.py, wall_to_ms).
local function wall_in(loc, wall_ms, level)
    if loc == nil or loc._utc then return new_time(wall_ms) end
    if loc._offset ~= nil then return time_in(loc, wall_ms - loc._offset * 1000, level + 1) end
    return time_in(loc, zone_op(level + 1, "time.zone_wall", loc, wall_ms), level + 1)
end
local function check_time(o, what, level)
    if getmetatable(o) ~= TIME then error(what .. ": expected a time value", level + 1) end
    return o._ms
end
-- The wall clock of a time, as ms whose UTC fields are its own.
local function wall_ms(self) return self._ms + (self._off or 0) * 1000 end
function TIME:sub(other) return new_duration((self._ms - check_time(other, "time:sub", 2)) * NS_PER_MS) end
function TIME:add(d) return time_in(self._loc, self._ms + duration_ns(d, "time:add", 2) // NS_PER_MS, 2) end
function TIME:unix() return self._ms // 1000 end
function TIME:unix_milli() return self._ms end
function TIME:unix_nano() return self._ms * NS_PER_MS end
function TIME:utc() return self._loc == nil and self or new_time(self._ms) end
TIME.in_local = TIME.utc  -- time.localtz is UTC
function TIME:in_location(loc) return time_in(check_location(loc, "time:in_location", 2), self._ms, 2) end
function TIME:location() return self._loc or utc_location() end
-- Comparisons are of instants (Go's Equal, Before, After), whatever the locations.
function TIME:before(o) return self._ms < check_time(o, "time:before", 2) end
function TIME:after(o) return self._ms > check_time(o, "time:after", 2) end
function TIME:equal(o) return self._ms == check_time(o, "time:equal", 2) end
local function fields(self) return os_date("!*t", wall_ms(self) // 1000) end
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
function TIME:format_rfc3339() return self:format("2006-01-02T15:04:05Z07:00") end
do
    local function whole_duration_ms(d, what)
        if getmetatable(d) ~= DUR then error(what .. ": expected a duration (time.parse_duration)", 3) end
        local ms = d._ns // NS_PER_MS
        return ms > 0 and ms or nil
    end
    -- As Go's: of the instant since the zero time, not of the wall clock (in a zone whose offset
    -- is not whole hours, truncating to the hour leaves minutes); the result keeps the location.
    function TIME:truncate(d)
        local ms = whole_duration_ms(d, "time:truncate")
        if ms == nil then return self end
        return time_in(self._loc, self._ms - (self._ms - CAL.ZERO_MS) % ms, 2)
    end
    function TIME:round(d)
        local ms = whole_duration_ms(d, "time:round")
        if ms == nil then return self end
        local r = (self._ms - CAL.ZERO_MS) % ms
        return time_in(self._loc, self._ms - r + (r + r >= ms and ms or 0), 2)
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
    -- on the wall clock, as Go's: the same time of day, in the time's own zone
    local f = fields(self)
    local day_ms = wall_ms(self) % CAL.DAY_MS
    return wall_in(self._loc, CAL.days_from_civil(f.year + years, f.month + months, f.day + days) * CAL.DAY_MS
        + day_ms, 2)
end
-- A Go layout ("2006-01-02T15:04:05Z07:00", time.RFC3339, ...); a strftime layout ("%Y-%m-%d",
-- Legato's older form) when it has a "%".
function TIME:format(layout)
    if layout == nil then layout = "2006-01-02T15:04:05Z07:00" end
    if layout == "RFC3339" then layout = "2006-01-02T15:04:05Z07:00" end
    if type(layout) ~= "string" then error("time:format: expected a layout string such as time.RFC3339", 2) end
    if sfind(layout, "%", 1, true) then return os_date("!" .. layout, wall_ms(self) // 1000) end
    local s, msg = H.crypto("time.format", self._ms, "u" .. layout, self._off or 0, "u" .. (self._abbr or "UTC"))
    if s == nil then error(msg, 2) end
    return s
end
-- RFC 3339, with milliseconds when there are any: "2024-03-31T03:30:00+02:00".
TIME.__tostring = function(self)
    local frac, off = self._ms % 1000, self._off or 0
    local zone = "Z"
    if self._loc ~= nil and off ~= 0 then
        local a = off < 0 and -off or off
        zone = sformat("%s%02d:%02d", off < 0 and "-" or "+", a // 3600, a % 3600 // 60)
        if a % 60 ~= 0 then zone = zone .. sformat(":%02d", a % 60) end
    end
    local clock = os_date("!%Y-%m-%dT%H:%M:%S", wall_ms(self) // 1000)
    if frac == 0 then return clock .. zone end
    return clock .. sformat(".%03d", frac) .. zone
end
TIME.__eq = function(a, b) return a._ms == b._ms end
TIME.__lt = function(a, b) return a._ms < b._ms end
TIME.__le = function(a, b) return a._ms <= b._ms end

local function time_constants(t)
    local MONTHS = { "JANUARY", "FEBRUARY", "MARCH", "APRIL", "MAY", "JUNE", "JULY", "AUGUST", "SEPTEMBER",
        "OCTOBER", "NOVEMBER", "DECEMBER" }
    local WEEKDAYS = { "SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY" }
    t.NANOSECOND = 1
    t.MICROSECOND = 1000
    t.MILLISECOND = NS_PER_MS
    t.SECOND = 1000 * NS_PER_MS
    t.MINUTE = 60 * t.SECOND
    t.HOUR = 60 * t.MINUTE
    for name, layout in pairs(H.time_layouts) do t[name] = layout end
    for i, name in ipairs(MONTHS) do t[name] = i end
    for i, name in ipairs(WEEKDAYS) do t[name] = i - 1 end
    t.utc = utc_location()
    t.localtz = utc_location()  -- UTC on every machine: a workflow's replay must not depend on the host
    -- time.load_location(name): a zone of the pinned tz database ("Europe/Berlin"; "UTC" and
    -- "Local" are time.utc), or nil, err (NotFound for an unknown name, Invalid for an empty one)
    t.load_location = function(name)
        if name == "UTC" or name == "Local" then return utc_location() end
        if type(name) ~= "string" then
            return nil, make_error("time.load_location: expected a zone name (a string such as \"Europe/Berlin\"), got "
                .. type(name), KIND.INVALID, false)
        end
        local ok, msg, kind = H.crypto("time.zone_load", "u" .. name)
        if ok == nil then return nil, make_error(msg, kind, false) end
        return new_location(name, nil)
    end
    -- time.fixed_zone(name, offset): a zone always offset seconds east of UTC, called name
    t.fixed_zone = function(name, offset)
        if type(name) ~= "string" then error("time.fixed_zone: expected a name (a string such as \"IST\")", 2) end
        if mtype(offset) ~= "integer" or offset <= -86400 or offset >= 86400 then
            error("time.fixed_zone: expected an offset in whole seconds east of UTC, less than a day either way "
                .. "(5*3600 + 30*60 for +05:30)", 2)
        end
        return new_location(name, offset)
    end
    -- time.date(year, month, day, hour, min, sec, nsec [, loc]): out-of-range parts carry over; a
    -- wall time a transition skips or repeats resolves as in Go. Without loc: time.localtz (UTC).
    t.date = function(year, month, day, hour, min, sec, nsec, loc)
        if loc ~= nil then check_location(loc, "time.date", 2) end
        for _, v in ipairs({ year, month, day, hour or 0, min or 0, sec or 0, nsec or 0 }) do
            if mtype(v) ~= "integer" then error("time.date: expected whole numbers", 2) end
        end
        return wall_in(loc, CAL.days_from_civil(year, month, day) * CAL.DAY_MS + (hour or 0) * 3600000
            + (min or 0) * 60000 + (sec or 0) * 1000 + (nsec or 0) // NS_PER_MS, 2)
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
    -- time.parse(layout, text [, loc]): the time, or nil, err (kind Invalid). Without loc (or
    -- with time.utc) a UTC time, as always; in loc as Go's ParseInLocation: a text without a zone
    -- is a wall time in loc, one whose offset or abbreviation loc does not have is in a fixed zone.
    t.parse = function(layout, text, loc)
        if loc ~= nil then check_location(loc, "time.parse", 2) end
        if type(layout) ~= "string" or type(text) ~= "string" then
            return nil, make_error("time.parse: expected a layout and a text (strings)", KIND.INVALID, false)
        end
        if loc == nil or loc._utc then
            local ms, msg, kind = H.crypto("time.parse", "u" .. layout, "u" .. text)
            if ms == nil then return nil, make_error(msg, kind, false) end
            return new_time(ms)
        end
        local r, msg, kind = H.crypto("time.parse_in", "u" .. layout, "u" .. text, "u" .. loc._location, loc._offset)
        if r == nil then return nil, make_error(msg, kind, false) end
        local ms, where = r[1], r[2]
        if where == "utc" then return new_time(ms) end
        if where == "fixed" then loc = new_location(r[3], r[4]) end
        return time_in(loc, ms, 2)
    end
    return t
end

-- (S.protect serves their methods from tables of their own: `v.__index` is nil)
S.protect(DUR, TIME, LOC)
S.NS_PER_MS, S.DUR, S.TIME, S.new_time, S.new_duration = NS_PER_MS, DUR, TIME, new_time, new_duration
S.duration_ns, S.duration_ms, S.time_constants = duration_ns, duration_ms, time_constants
