"""worker/time_zones.py: zones from the pinned tzdata package, offsets and Go's time.Date rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from legato.errors import Kind
from worker.go_time import format_ms, parse_in, parse_ms
from worker.host_args import OpError
from worker.time_zones import TZDATA_VERSION, offset_at, offset_named, wall_to_ms, zone, zone_types


def ms(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp() * 1000)


def test_offsets_and_abbreviations_of_a_named_zone() -> None:
    assert offset_at("Europe/Berlin", ms(2024, 1, 15, 12)) == (3600, "CET")
    assert offset_at("Europe/Berlin", ms(2024, 7, 15, 12)) == (7200, "CEST")
    assert offset_at("Asia/Kolkata", ms(2024, 7, 15, 12)) == (19800, "IST")


def test_wall_times_follow_go_in_gaps_and_overlaps() -> None:
    assert wall_to_ms("Europe/Berlin", ms(2024, 1, 15, 12)) == ms(2024, 1, 15, 11)
    # 2024-03-31 02:30 does not exist in Berlin: Go gives 03:30 CEST (01:30Z)
    assert wall_to_ms("Europe/Berlin", ms(2024, 3, 31, 2, 30)) == ms(2024, 3, 31, 1, 30)
    # 2024-10-27 02:30 happens twice: Go gives the later one, 02:30 CET (01:30Z)
    assert wall_to_ms("Europe/Berlin", ms(2024, 10, 27, 2, 30)) == ms(2024, 10, 27, 1, 30)
    # west of Greenwich Go's rule lands the other way: 02:30 in the gap is 01:30 EST, 01:30 twice is EDT
    assert wall_to_ms("America/New_York", ms(2024, 3, 10, 2, 30)) == ms(2024, 3, 10, 6, 30)
    assert wall_to_ms("America/New_York", ms(2024, 11, 3, 1, 30)) == ms(2024, 11, 3, 5, 30)
    assert wall_to_ms("IST", ms(2024, 1, 15, 12), fixed=19800) == ms(2024, 1, 15, 6, 30)


def test_abbreviations_name_offsets_as_go_finds_them() -> None:
    assert (3600, "CET") in zone_types("Europe/Berlin") and (7200, "CEST") in zone_types("Europe/Berlin")
    assert zone_types("Europe/Berlin")[0] == (3208, "LMT")  # the first type of the file: local mean time
    assert offset_named("Europe/Berlin", "CEST", ms(2024, 7, 1, 12)) == 7200
    assert offset_named("Europe/Berlin", "CET", ms(2024, 7, 1, 12)) == 3600  # named, though not in effect
    assert offset_named("Europe/Berlin", "EST", ms(2024, 7, 1, 12)) is None
    assert offset_named("IST", "IST", 0, fixed=19800) == 19800 and offset_named("IST", "UTC", 0, fixed=19800) is None


def test_layouts_write_the_zone_of_the_time() -> None:
    at = ms(2024, 7, 15, 12)
    assert format_ms(at, "15:04 MST -0700 -07:00 Z07:00 -07 -07:00:00", 7200, "CEST") \
        == "14:00 CEST +0200 +02:00 +02:00 +02 +02:00:00"
    assert format_ms(at, "15:04 MST Z07:00", -12600, "") == "08:30 -0330 -03:30"  # no abbreviation: the offset
    assert format_ms(at, "15:04 MST Z07:00 -0700") == "12:00 UTC Z +0000"


def test_parsing_in_a_location_follows_go() -> None:
    layout = "2006-01-02 15:04 MST"
    assert parse_in(layout, "2024-07-01 12:00 CEST", "Europe/Berlin", None) == (ms(2024, 7, 1, 10), "loc", "", 0)
    assert parse_in(layout, "2024-07-01 12:00 EST", "Europe/Berlin", None) == (ms(2024, 7, 1, 12), "fixed", "EST", 0)
    assert parse_in(layout, "2024-07-01 12:00 UTC", "Europe/Berlin", None) == (ms(2024, 7, 1, 12), "utc", "", 0)
    assert parse_in("2006-01-02 15:04 -07:00", "2024-07-01 12:00 +03:00", "Europe/Berlin", None) \
        == (ms(2024, 7, 1, 9), "fixed", "", 10800)
    assert parse_in("2006-01-02 15:04", "2024-01-01 12:00", "PST", -28800) == (ms(2024, 1, 1, 20), "loc", "", 0)
    # without a location, as before zones: an abbreviation is UTC, an offset converts
    assert parse_ms(layout, "2024-07-01 12:00 CEST") == ms(2024, 7, 1, 12)
    assert parse_ms("2006-01-02 15:04 -07:00", "2024-07-01 12:00 +03:00") == ms(2024, 7, 1, 9)
    with pytest.raises(OpError, match="a day or more"):
        parse_ms("2006-01-02 15:04 -07:00", "2024-07-01 12:00 +24:00")


def test_unknown_and_empty_zone_names_are_clear_errors() -> None:
    with pytest.raises(OpError) as e:
        zone("Mars/Olympus_Mons")
    assert e.value.kind == Kind.NOT_FOUND and "Mars/Olympus_Mons" in str(e.value) and TZDATA_VERSION in str(e.value)
    with pytest.raises(OpError) as e:
        zone("../../etc/passwd")  # only names of the database: never a path
    assert e.value.kind == Kind.NOT_FOUND
    with pytest.raises(OpError) as e:
        zone("")
    assert e.value.kind == Kind.INVALID
