"""IANA time zones for Lua's `time` module, from the pinned `tzdata` package (never the host's
/usr/share/zoneinfo): a zone's offset at an instant, and the instant a wall-clock time names in a
zone, are pure functions of the pinned tz database, so a workflow's replay gets the same answers on
any machine. Upgrading `tzdata` can change them for instants whose rules changed (README, time).

A location as the kernel passes it is a name and, for a fixed zone (time.fixed_zone), its offset
in seconds; a name without an offset is a zone of the database (time.load_location).
"""

from __future__ import annotations

import functools
import struct
from datetime import UTC, datetime, timedelta
from importlib import resources
from io import BytesIO
from zoneinfo import ZoneInfo

import tzdata

from legato.errors import Kind
from worker.host_args import OpError

TZDATA_VERSION: str = tzdata.IANA_VERSION
# Parsed zones kept per process (each a few KB): a workflow loads a handful.
ZONE_CACHE_SIZE = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# TZif (RFC 8536): a 44-byte header whose last 24 bytes are six counts, then the data they size.
_TZIF_HEADER = 44
_TZIF_COUNTS = struct.Struct(">6l")
_TZIF_TYPE = struct.Struct(">lBB")  # offset east of UTC, is-DST, index of the abbreviation


@functools.cache
def zone_names() -> frozenset[str]:
    """Every zone name of the pinned tz database."""
    return frozenset(resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split())


@functools.lru_cache(maxsize=ZONE_CACHE_SIZE)
def _zone_file(name: str) -> bytes:
    """The TZif data of zone `name` (raises OpError: Invalid for an empty name, NotFound for an unknown one)."""
    if name == "":
        raise OpError("time.load_location: the zone name is empty (expected an IANA name such as \"Europe/Berlin\")")
    if name not in zone_names():  # only names of the database: never a path
        raise OpError(f"time.load_location({name[:80]!r}): no such time zone in the tz database {TZDATA_VERSION} "
                      "(expected an IANA name such as \"Europe/Berlin\")", Kind.NOT_FOUND)
    return resources.files("tzdata.zoneinfo").joinpath(*name.split("/")).read_bytes()


@functools.lru_cache(maxsize=ZONE_CACHE_SIZE)
def zone(name: str) -> ZoneInfo:
    """The zone `name` (raises OpError as _zone_file)."""
    return ZoneInfo.from_file(BytesIO(_zone_file(name)), key=name)


@functools.lru_cache(maxsize=ZONE_CACHE_SIZE)
def zone_types(name: str) -> tuple[tuple[int, str], ...]:
    """The (offset, abbreviation) pairs zone `name` has ever used, in the file's order: Go's
    Location.zone list, which parsing an abbreviation ("CEST") searches."""
    data = _zone_file(name)
    isut, isstd, leap, times, types, chars = _TZIF_COUNTS.unpack_from(data, 20)
    at, time_size = _TZIF_HEADER, 4
    if data[4:5] != b"\0":  # version 2+: skip the 32-bit block for the 64-bit one, which is complete
        at += times * 5 + types * 6 + chars + leap * 8 + isstd + isut
        isut, isstd, leap, times, types, chars = _TZIF_COUNTS.unpack_from(data, at + 20)
        at, time_size = at + _TZIF_HEADER, 8
    types_at = at + times * (time_size + 1)
    abbrs = data[types_at + types * _TZIF_TYPE.size:types_at + types * _TZIF_TYPE.size + chars]
    out = []
    for i in range(types):
        offset, _dst, index = _TZIF_TYPE.unpack_from(data, types_at + i * _TZIF_TYPE.size)
        out.append((offset, abbrs[index:abbrs.index(b"\0", index)].decode("ascii")))
    return tuple(out)


def _instant(ms: int, what: str) -> datetime:
    try:
        return _EPOCH + ms * _MS
    except OverflowError:
        raise OpError(f"{what}: the time {ms} ms from 1970 is outside the years 1 to 9999") from None


def offset_at(name: str, ms: int, fixed: int | None = None) -> tuple[int, str]:
    """(offset east of UTC in seconds, abbreviation such as "CET") of a location at instant `ms`."""
    if fixed is not None:
        return fixed, name
    local = _instant(ms, "time: a time in " + name).astimezone(zone(name))
    off = local.utcoffset() or timedelta(0)
    return int(off.total_seconds()), local.tzname() or ""


def wall_to_ms(name: str, wall_ms: int, fixed: int | None = None) -> int:
    """The instant a wall-clock time (`wall_ms`: its fields read as if UTC) names in a location, by
    Go's time.Date: take the offset in effect at the wall time read as UTC; if the instant that
    gives is in a period with another offset, take that period's offset. So in a gap (spring
    forward) Berlin's 02:30 becomes 03:30 CEST but New York's becomes 01:30 EST, and in an overlap
    (fall back) Berlin's 02:30 is the later one (CET) but New York's 01:30 the earlier one (EDT)."""
    off1, _ = offset_at(name, wall_ms, fixed)
    utc = wall_ms - off1 * 1000
    off2, _ = offset_at(name, utc, fixed)
    return utc if off2 == off1 else wall_ms - off2 * 1000


def offset_named(name: str, abbr: str, wall_ms: int, fixed: int | None = None) -> int | None:
    """The offset abbreviation `abbr` ("EST") stands for in a location at wall time `wall_ms`, or
    None when the location never uses it (Go's Location.lookupName): preferably one of the periods
    so named in effect then (Sydney calls both its offsets "EST"), else the first so named."""
    if fixed is not None:
        return fixed if abbr == name else None
    named = [off for off, a in zone_types(name) if a == abbr]
    for off in named:
        real_off, real_abbr = offset_at(name, wall_ms - off * 1000)
        if real_abbr == abbr:
            return real_off
    return named[0] if named else None
