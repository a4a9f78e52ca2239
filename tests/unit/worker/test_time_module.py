"""Lua's `time` module with Go's units and layouts (issue 15): durations are nanoseconds, times
format and parse with Go layouts, tickers and resettable timers are durable timers, and
histories recorded when numbers meant milliseconds still replay."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.unit.worker.helpers import Sim, make_app, types
from worker.activity import ActivityRunner, CallContext
from worker.entries import Registry
from worker.time_zones import TZDATA_VERSION

START_MS = 1_700_000_000_123  # 2023-11-14T22:13:20.123Z, a Tuesday

VALUES = """\
return function()
    local t = time.now()
    local d = time.parse_duration("1m30s")
    local parsed, err = time.parse(time.RFC3339, "2023-11-14T23:13:20+01:00")
    local bad, bad_err = time.parse(time.DATE_ONLY, "14/11/2023")
    return {
        units = {time.NANOSECOND, time.MICROSECOND, time.MILLISECOND, time.SECOND, time.MINUTE, time.HOUR},
        d = {d:seconds(), d:milliseconds(), d:nanoseconds(), tostring(d), tostring(time.duration(1500)),
             tostring(time.duration(2 * time.MILLISECOND))},
        fields = {t:year(), t:month(), t:day(), t:hour(), t:minute(), t:second(), t:nanosecond(), t:weekday()},
        unix = {t:unix(), t:unix_nano(), t:utc() == t},
        rfc3339 = t:format(time.RFC3339), nano = t:format(time.RFC3339NANO), kitchen = t:format(time.KITCHEN),
        custom = t:format("Mon, 02 Jan 2006 15:04:05.000 MST"), strftime = t:format("%Y/%m/%d"),
        later = t:add(90 * time.SECOND):format(time.DATE_TIME), diff = t:add("2s"):sub(t):milliseconds(),
        parsed = parsed and parsed:unix(), parse_err = err, bad = bad == nil, bad_kind = bad_err and bad_err:kind(),
        before = t:before(t:add(time.MILLISECOND)), after = t:after(t:add(time.MILLISECOND)),
        same = t:equal(t:add(1)),  -- times are milliseconds: a nanosecond is lost
    }
end
"""
SLEEPS = """\
return function()
    time.sleep(5 * time.SECOND)
    time.sleep(1500000)  -- 1.5 ms: timers are whole milliseconds, rounded up
    time.sleep("250ms")
    return "done"
end
"""
TICKER = """\
return function()
    local tk = time.ticker("1s")
    local seen = {}
    for i = 1, 3 do seen[i] = tk:channel():receive():unix() end
    tk:stop()
    local tm = time.timer("1h")
    local had = tm:reset("2s")
    local fired = tm:channel():receive()
    return {seen = seen, reset = had, fired = fired:unix()}
end
"""
EXTRAS = """\
return function()
    local t = time.date(2024, time.JANUARY, 31, 22, 30, 15, 500000000, time.utc)
    local y, mo, d = t:date()
    local h, mi, se = t:clock()
    local hour = time.parse_duration("1h")
    local bad, bad_err = time.parse_duration("soon")
    local loc, loc_err = time.load_location("Europe/Pariss")
    local tm = time.timer("1s")
    return {
        rfc = t:format_rfc3339(), date = {y, mo, d}, clock = {h, mi, se},
        month_end = t:add_date(0, 1, 0):format(time.DATE_ONLY),  -- Feb 31 carries to Mar 2, as in Go
        leap = time.date(2024, 2, 29, 0, 0, 0, 0):add_date(1, 0, 0):format(time.DATE_ONLY),
        back = t:add_date(0, 0, -31):format(time.DATE_ONLY),
        truncated = t:truncate(hour):format(time.TIME_ONLY), rounded = t:round(hour):format(time.TIME_ONLY),
        weekday = t:weekday() == time.WEDNESDAY, zero = time.date(1, 1, 1, 0, 0, 0, 0):is_zero(),
        bad = bad == nil, bad_kind = bad_err:kind(), utc = t:location():string(),
        utc_loaded = time.load_location("UTC"):string() == "UTC" and time.utc:string() == "UTC",
        loc = loc == nil, loc_kind = loc_err:kind(),
        same_channel = tm:response() == tm:channel(), ns = time.parse_duration(5 * time.SECOND):seconds(),
    }
end
"""
# Zones (the pinned tz database): every expected value below is what Go 1.x's time package gives.
ZONES = """\
local L = "2006-01-02 15:04:05 -0700 MST"
return function()
    local berlin = assert(time.load_location("Europe/Berlin"))
    local ny = assert(time.load_location("America/New_York"))
    local ist = time.fixed_zone("IST", 5 * 3600 + 30 * 60)
    local t = time.date(2024, time.JULY, 15, 12, 0, 0, 0, time.utc)
    local b = t:in_location(berlin)
    local x = time.date(2024, 1, 15, 12, 47, 0, 0, ist)
    local spring = time.date(2024, 3, 30, 12, 0, 0, 0, berlin)
    local hour, day = time.parse_duration("1h"), time.parse_duration("24h")
    local parsed = {}
    local MST = "2006-01-02 15:04 MST"
    for i, c in ipairs({{"2006-01-02 15:04", "2024-07-01 12:00"}, {MST, "2024-07-01 12:00 CET"},
                        {"2006-01-02 15:04 -0700", "2024-07-01 12:00 +0300"}, {time.RFC3339, "2024-07-01T12:00:00Z"},
                        {MST, "2024-07-01 12:00 EST"}, {MST, "1880-01-01 12:00 LMT"}}) do
        local p = assert(time.parse(c[1], c[2], berlin))
        parsed[i] = p:format(L) .. " " .. p:location():string()
    end
    local bad, bad_err = time.load_location("Mars/Olympus_Mons")
    local empty, empty_err = time.load_location("")
    local plain = time.parse("2006-01-02 15:04 MST", "2024-07-01 12:00 CEST")
    return {
        fields = {b:year(), b:month(), b:day(), b:hour(), b:minute(), b:second(), b:weekday(), b:year_day()},
        date = {b:date()}, clock = {b:clock()}, unix = b:unix() == t:unix(),
        names = {b:location():string(), tostring(b:location()), b:utc():location():string(),
                 b:in_local():location():string(), time.localtz:string(), t:location():string()},
        format = b:format("Mon Jan 2 15:04:05 MST 2006 -0700 -07:00 Z07:00 Z0700"), rfc = b:format_rfc3339(),
        str = tostring(b), ist = x:format("MST -07:00 Z0700"), ist_str = tostring(x),
        gap = {time.date(2024, 3, 31, 2, 30, 0, 0, berlin):format(L),
               time.date(2024, 3, 10, 2, 30, 0, 0, ny):format(L)},
        twice = {time.date(2024, 10, 27, 2, 30, 0, 0, berlin):format(L),
                 time.date(2024, 11, 3, 1, 30, 0, 0, ny):format(L)},
        parsed = parsed, plain = {plain:format(L), plain:unix()},
        same = {b == t, b:equal(t), b:before(t), b < t:add(1000000), b:sub(t):seconds()},
        add_date = spring:add_date(0, 0, 1):format(L), add = spring:add(24 * time.HOUR):format(L),
        rounding = {x:truncate(hour):format(L), x:round(hour):format(L), x:truncate(day):format(L)},
        bad = {bad == nil, bad_err:kind(), bad_err:message()}, empty = {empty == nil, empty_err:kind()},
        fixed_eq = time.fixed_zone("IST", 19800) == ist and time.load_location("UTC") == time.utc,
        -- the methods' tables are out of reach (changing them would change every run's)
        sealed = b.__index == nil and ist.__index == nil and hour.__index == nil,
    }
end
"""
OLD = """\
return function()
    time.sleep(100)  -- written when a number meant milliseconds
    return "woke"
end
"""


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("time")
    return make_app(tmp, {"values": VALUES, "sleeps": SLEEPS, "ticker": TICKER, "old": OLD, "extras": EXTRAS,
                     "zones": ZONES}, {"fvalues": VALUES, "fzones": ZONES}, modules="[time]", function_modules="[time]")


def result(cmds: list[Any]) -> Any:
    assert types(cmds) == ["CompleteWorkflowExecution"], cmds
    return cmds[0].attrs["result"]


def check_values(r: dict[str, Any], now_ms: int) -> None:
    assert r["units"] == [1, 1000, 1_000_000, 10**9, 60 * 10**9, 3600 * 10**9]
    assert r["d"] == [90.0, 90_000, 90 * 10**9, "90s", "1500ns", "2ms"]
    dt = datetime.fromtimestamp(now_ms / 1000, UTC)
    assert r["fields"] == [dt.year, dt.month, dt.day, dt.hour, dt.minute, dt.second, now_ms % 1000 * 10**6,
                           (dt.weekday() + 1) % 7]
    assert r["unix"] == [now_ms // 1000, now_ms * 10**6, True]
    assert r["rfc3339"] == dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert r["nano"] == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now_ms % 1000:03d}".rstrip("0") + "Z" \
        if now_ms % 1000 else r["rfc3339"]
    assert r["kitchen"] == dt.strftime("%I:%M%p").lstrip("0")
    assert r["custom"] == dt.strftime("%a, %d %b %Y %H:%M:%S.") + f"{now_ms % 1000:03d} UTC"
    assert r["strftime"] == dt.strftime("%Y/%m/%d")
    assert r["diff"] == 2000 and r["before"] is True and r["after"] is False and r["same"] is True
    assert r["parsed"] == 1_700_000_000  # 23:13:20+01:00 is 22:13:20Z
    assert r["bad"] is True and r["bad_kind"] == "Invalid"


def test_time_values_in_a_workflow(reg: Registry) -> None:
    r = result(Sim(reg, "app:values", start_ms=START_MS).step())
    check_values(r, START_MS)
    assert r["later"] == "2023-11-14 22:14:50"


def test_time_values_in_an_activity(reg: Registry) -> None:
    out = ActivityRunner(reg, lambda ctx, details: False).call("app:fvalues", [], CallContext(activity_type="x"))
    assert out.ok, out.failure
    r = out.result
    # the activity's clock is the machine's: check against its own reading
    check_values(r, r["unix"][1] // 10**6)


def test_numbers_are_nanoseconds(reg: Registry) -> None:
    sim = Sim(reg, "app:sleeps")
    fired = []
    for _ in range(3):
        cmds = sim.step()
        assert types(cmds) == ["StartTimer"]
        fired.append(cmds[0].attrs["start_to_fire_timeout_ms"])
        sim.complete(cmds)
        sim.h.tick(fired[-1]).timer_fired(cmds[0].attrs["timer_id"]).next_task()
    assert fired == [5000, 2, 250]
    assert result(sim.step()) == "done"


def test_ticker_and_timer_reset_are_durable_timers(reg: Registry) -> None:
    sim = Sim(reg, "app:ticker", start_ms=START_MS)
    cmds = sim.step()
    for _ in range(3):  # each tick fires the period's timer and starts the next one
        assert types(cmds) == ["StartTimer"] and cmds[0].attrs["start_to_fire_timeout_ms"] == 1000
        sim.complete(cmds)
        sim.h.tick(1000).timer_fired(cmds[0].attrs["timer_id"]).next_task()
        cmds = sim.step()
    # stop: the pending period is canceled; the timer: started, reset (canceled, started again)
    assert types(cmds) == ["StartTimer", "CancelTimer", "StartTimer", "CancelTimer", "StartTimer"]
    assert [c.attrs.get("start_to_fire_timeout_ms") for c in cmds] == [1000, None, 3_600_000, None, 2000]
    sim.complete(cmds)
    sim.h.tick(2000).timer_fired(cmds[-1].attrs["timer_id"]).next_task()
    r = result(sim.step())
    assert r["seen"] == [(START_MS + 1000 * i) // 1000 for i in (1, 2, 3)]
    assert r["reset"] is True and r["fired"] == (START_MS + 5000) // 1000


def test_a_history_recorded_in_milliseconds_replays(reg: Registry) -> None:
    """`time.sleep(100)` once started a 100 ms timer; now it means 100 ns (a 1 ms timer). The
    recorded history keeps its 100 ms, and replaying it with the same code is not an error."""
    sim = Sim(reg, "app:old")
    cmds = sim.step()
    assert cmds[0].attrs["start_to_fire_timeout_ms"] == 1
    cmds[0].attrs["start_to_fire_timeout_ms"] = 100  # what the old code recorded
    sim.complete(cmds)
    started = sim.h.events[-1]
    assert started.attrs["start_to_fire_timeout_ms"] == 100
    sim.h.tick(100).timer_fired(cmds[0].attrs["timer_id"]).next_task()
    assert result(sim.step()) == "woke"  # Sim also replays the whole history from scratch


def test_bad_durations_name_the_unit(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": "return function() time.sleep(true) end"}, modules="[time]")
    with pytest.raises(Exception) as e:
        Sim(reg, "app:w").step()
    assert "a number of nanoseconds" in str(e.value)


def test_a_time_no_layout_can_write_is_a_clear_error(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """return function()
        local s = time.unix(1e12):format(time.RFC3339)
        return s
    end"""}, modules="[time]")
    with pytest.raises(Exception) as e:
        Sim(reg, "app:w").step()
    assert "outside the years 1 to 9999 that a layout can write" in str(e.value)


def test_calendar_and_durations_as_wippy_has_them(reg: Registry) -> None:
    sim = Sim(reg, "app:extras")
    cmds = sim.step()
    assert types(cmds)[0] == "StartTimer"
    r = cmds[-1].attrs["result"]
    assert r["rfc"] == "2024-01-31T22:30:15Z" and r["date"] == [2024, 1, 31] and r["clock"] == [22, 30, 15]
    assert r["month_end"] == "2024-03-02" and r["leap"] == "2025-03-01" and r["back"] == "2023-12-31"
    assert r["truncated"] == "22:00:00" and r["rounded"] == "23:00:00"
    assert r["weekday"] is True and r["zero"] is True
    assert r["bad"] is True and r["bad_kind"] == "Invalid" and r["utc"] == "UTC" and r["utc_loaded"] is True
    assert r["loc"] is True and r["loc_kind"] == "NotFound" and r["same_channel"] is True and r["ns"] == 5.0


def check_zones(r: dict[str, Any]) -> None:
    assert r["fields"] == [2024, 7, 15, 14, 0, 0, 1, 197] and r["date"] == [2024, 7, 15] and r["clock"] == [14, 0, 0]
    assert r["unix"] is True
    assert r["names"] == ["Europe/Berlin", "Europe/Berlin", "UTC", "UTC", "UTC", "UTC"]
    assert r["format"] == "Mon Jul 15 14:00:00 CEST 2024 +0200 +02:00 +02:00 +0200"
    assert r["rfc"] == r["str"] == "2024-07-15T14:00:00+02:00"
    assert r["ist"] == "IST +05:30 +0530" and r["ist_str"] == "2024-01-15T12:47:00+05:30"
    # 02:30 does not exist on these days (clocks spring forward), and happens twice on these (fall back)
    assert r["gap"] == ["2024-03-31 03:30:00 +0200 CEST", "2024-03-10 01:30:00 -0500 EST"]
    assert r["twice"] == ["2024-10-27 02:30:00 +0100 CET", "2024-11-03 01:30:00 -0400 EDT"]
    assert r["parsed"] == [
        "2024-07-01 12:00:00 +0200 CEST Europe/Berlin",  # no zone in the text: a wall time in Berlin
        "2024-07-01 13:00:00 +0200 CEST Europe/Berlin",  # CET, though July is summer time: +01:00
        "2024-07-01 12:00:00 +0300 +0300 ",  # an offset Berlin does not have then: a fixed zone, no name
        "2024-07-01 12:00:00 +0000 UTC UTC",
        "2024-07-01 12:00:00 +0000 EST EST",  # an abbreviation Berlin never used: Go's offset 0
        "1880-01-01 12:00:00 +0053 LMT Europe/Berlin",  # Berlin's local mean time, +00:53:28
    ]
    assert r["plain"] == ["2024-07-01 12:00:00 +0000 UTC", 1_719_835_200]  # without a location: UTC, as always
    assert r["same"] == [True, True, False, True, 0.0]
    # a calendar day across the spring-forward night is 23 hours; 24 hours is 13:00
    assert r["add_date"] == "2024-03-31 12:00:00 +0200 CEST" and r["add"] == "2024-03-31 13:00:00 +0200 CEST"
    # Go rounds the instant, not the wall clock: in a +05:30 zone whole hours are at :30
    assert r["rounding"] == ["2024-01-15 12:30:00 +0530 IST", "2024-01-15 12:30:00 +0530 IST",
                             "2024-01-15 05:30:00 +0530 IST"]
    assert r["bad"][:2] == [True, "NotFound"]
    assert r["bad"][2] == (f"time.load_location('Mars/Olympus_Mons'): no such time zone in the tz database "
                           f"{TZDATA_VERSION} (expected an IANA name such as \"Europe/Berlin\")")
    assert r["empty"] == [True, "Invalid"] and r["fixed_eq"] is True and r["sealed"] is True


def test_time_zones_in_a_workflow(reg: Registry) -> None:
    check_zones(result(Sim(reg, "app:zones", start_ms=START_MS).step()))  # Sim replays it in full too


def test_time_zones_in_an_activity(reg: Registry) -> None:
    out = ActivityRunner(reg, lambda ctx, details: False).call("app:fzones", [], CallContext(activity_type="x"))
    assert out.ok, out.failure
    check_zones(out.result)


def test_zone_arguments_are_checked(tmp_path: Path) -> None:
    reg = make_app(tmp_path, {"w": """return function()
        return time.now():in_location("Europe/Berlin")
    end""", "f": """return function()
        return time.fixed_zone("X", 1.5)
    end"""}, modules="[time]")
    with pytest.raises(Exception) as e:
        Sim(reg, "app:w").step()
    assert "time:in_location: expected a location (time.utc, time.load_location(name)" in str(e.value)
    with pytest.raises(Exception) as e:
        Sim(reg, "app:f").step()
    assert "time.fixed_zone: expected an offset in whole seconds" in str(e.value)
