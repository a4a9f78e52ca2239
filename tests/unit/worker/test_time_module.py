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
    local loc, loc_err = time.load_location("Europe/Paris")
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
OLD = """\
return function()
    time.sleep(100)  -- written when a number meant milliseconds
    return "woke"
end
"""


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    tmp = tmp_path_factory.mktemp("time")
    return make_app(tmp, {"values": VALUES, "sleeps": SLEEPS, "ticker": TICKER, "old": OLD, "extras": EXTRAS},
                    {"fvalues": VALUES}, modules="[time]", function_modules="[time]")


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
