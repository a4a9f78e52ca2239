"""IANA time zones for Lua's `time` module, from the pinned `tzdata` package (never the host's
/usr/share/zoneinfo): a zone's offset at an instant, and the instant a wall-clock time names in a
zone, are pure functions of the pinned tz database, so a workflow's replay gets the same answers on
any machine. Upgrading `tzdata` can change them for instants whose rules changed (README, time).

Not yet wired into the kernel's time module (issue 15, open): the building block for it.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from importlib import resources
from zoneinfo import ZoneInfo

import tzdata

from legato.errors import Kind
from worker.host_args import OpError

TZDATA_VERSION: str = tzdata.IANA_VERSION
# Parsed zones kept per process (each a few KB): a workflow loads a handful.
ZONE_CACHE_SIZE = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


@functools.cache
def zone_names() -> frozenset[str]:
    """Every zone name of the pinned tz database."""
    return frozenset(resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split())


@functools.lru_cache(maxsize=ZONE_CACHE_SIZE)
def zone(name: str) -> ZoneInfo:
    """The zone `name` (raises OpError: Invalid for an empty name, NotFound for an unknown one)."""
    if name == "":
        raise OpError("time.load_location: the zone name is empty (expected an IANA name such as \"Europe/Berlin\")")
    if name not in zone_names():
        raise OpError(f"time.load_location({name[:80]!r}): no such time zone in the tz database {TZDATA_VERSION} "
                      "(expected an IANA name such as \"Europe/Berlin\")", Kind.NOT_FOUND)
    path = resources.files("tzdata.zoneinfo").joinpath(*name.split("/"))
    with path.open("rb") as f:
        return ZoneInfo.from_file(f, key=name)


def _instant(ms: int, what: str) -> datetime:
    try:
        return _EPOCH + ms * _MS
    except OverflowError:
        raise OpError(f"{what}: the time {ms} ms from 1970 is outside the years 1 to 9999") from None


def offset_at(name: str, ms: int) -> tuple[int, str]:
    """(offset east of UTC in seconds, abbreviation such as "CET") of zone `name` at instant `ms`."""
    local = _instant(ms, "time:in_location").astimezone(zone(name))
    off = local.utcoffset() or timedelta(0)
    return int(off.total_seconds()), local.tzname() or ""


def wall_to_ms(name: str, wall_ms: int) -> int:
    """The instant a wall-clock time (`wall_ms`: its fields read as if UTC) names in zone `name`, by
    Go's time.Date rule: in a gap (spring forward) the offset from before the transition applies
    (02:30 becomes 03:30 summer time); in an overlap (fall back) the later offset applies."""
    off1, _ = offset_at(name, wall_ms)
    utc = wall_ms - off1 * 1000
    off2, _ = offset_at(name, utc)
    return utc if off2 == off1 else wall_ms - off2 * 1000
