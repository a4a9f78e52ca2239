"""worker/time_zones.py: zones from the pinned tzdata package, offsets and Go's time.Date rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from legato.errors import Kind
from worker.host_args import OpError
from worker.time_zones import TZDATA_VERSION, offset_at, wall_to_ms, zone


def ms(*fields: int) -> int:
    return int(datetime(*fields, tzinfo=UTC).timestamp() * 1000)


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
