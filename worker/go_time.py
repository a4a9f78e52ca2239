"""Go's time layouts ("2006-01-02T15:04:05Z07:00"), for Lua's `Time:format(layout)` and
`time.parse(layout, text)` as Wippy has them.

A layout is text in which Go's reference time (Mon Jan 2 15:04:05 MST 2006) stands for the
fields: "2006" the year, "01" the month, "Jan" its name, "15" the hour, ".000" milliseconds,
"Z07:00" the zone... Legato's times are instants with millisecond precision, each in a location:
formatting writes the wall clock, offset and abbreviation the kernel passes (the time's own zone);
parsing reads any offset and converts, and keeps at most milliseconds of a fraction. Parsing in a
location (`time.parse(layout, text, loc)`) resolves the zone as Go's time.ParseInLocation does.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from worker import time_zones
from worker.host_args import OpError

MONTHS = [calendar.month_name[i] for i in range(1, 13)]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Go's layout constants (time.RFC3339, ...), as the Lua module exposes them.
LAYOUTS = {
    "LAYOUT": "01/02 03:04:05PM '06 -0700",
    "ANSIC": "Mon Jan _2 15:04:05 2006",
    "UNIX_DATE": "Mon Jan _2 15:04:05 MST 2006",
    "RUBY_DATE": "Mon Jan 02 15:04:05 -0700 2006",
    "RFC822": "02 Jan 06 15:04 MST",
    "RFC822Z": "02 Jan 06 15:04 -0700",
    "RFC850": "Monday, 02-Jan-06 15:04:05 MST",
    "RFC1123": "Mon, 02 Jan 2006 15:04:05 MST",
    "RFC1123Z": "Mon, 02 Jan 2006 15:04:05 -0700",
    "RFC3339": "2006-01-02T15:04:05Z07:00",
    "RFC3339NANO": "2006-01-02T15:04:05.999999999Z07:00",
    "KITCHEN": "3:04PM",
    "STAMP": "Jan _2 15:04:05",
    "STAMP_MILLI": "Jan _2 15:04:05.000",
    "STAMP_MICRO": "Jan _2 15:04:05.000000",
    "STAMP_NANO": "Jan _2 15:04:05.000000000",
    "DATE_TIME": "2006-01-02 15:04:05",
    "DATE_ONLY": "2006-01-02",
    "TIME_ONLY": "15:04:05",
}

# The tokens, longest first where one is a prefix of another (Go's own precedence).
_TOKENS = ["January", "Jan", "Monday", "Mon", "MST", "2006", "002", "06", "01", "02", "_2", "__2", "15", "03",
           "04", "05", "1", "2", "3", "4", "5", "PM", "pm", "Z07:00:00", "Z070000", "Z07:00", "Z0700", "Z07",
           "-07:00:00", "-070000", "-07:00", "-0700", "-07"]
_FRACTION = re.compile(r"[.,](0+|9+)(?![0-9])")
_TOKEN_RE = re.compile("|".join(re.escape(t) for t in sorted(_TOKENS, key=len, reverse=True)))


def _chunks(layout: str) -> list[tuple[str, str]]:
    """The layout as ("text", s) and ("token", t) pieces; fractions are ("frac", ".000")."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(layout):
        f = _FRACTION.match(layout, i)
        if f:  # fractional seconds: ".000" (always that many digits) or ".999" (trailing zeros dropped)
            out.append(("frac", f.group(0)))
            i = f.end()
            continue
        m = _TOKEN_RE.match(layout, i)
        if m:
            out.append(("token", m.group(0)))
            i = m.end()
            continue
        out.append(("text", layout[i]))
        i += 1
    return out


def _format_zone(t: str, offset: int, abbr: str) -> str:
    """A zone token as Go writes it: "MST" the abbreviation (or "-0700" when there is none); the
    "Z" forms write "Z" for offset 0; seconds only where the token has them."""
    if t == "MST":
        if abbr:
            return abbr
        t = "-0700"
    if t.startswith("Z") and offset == 0:
        return "Z"
    sign = "-" if offset < 0 else "+"
    minutes = abs(offset) // 60
    out = f"{sign}{minutes // 60:02d}"
    spec = t.lstrip("Z-")  # 07:00:00, 070000, 07:00, 0700, 07
    colon = ":" if ":" in spec else ""
    if len(spec.replace(":", "")) >= 4:
        out += f"{colon}{minutes % 60:02d}"
    if len(spec.replace(":", "")) == 6:
        out += f"{colon}{abs(offset) % 60:02d}"
    return out


def _format_token(t: str, dt: datetime) -> str:
    hour12 = dt.hour % 12 or 12
    table: dict[str, Callable[[], str]] = {
        "January": lambda: MONTHS[dt.month - 1], "Jan": lambda: MONTHS[dt.month - 1][:3],
        "Monday": lambda: DAYS[dt.weekday()], "Mon": lambda: DAYS[dt.weekday()][:3],
        "2006": lambda: f"{dt.year:04d}", "06": lambda: f"{dt.year % 100:02d}",
        "01": lambda: f"{dt.month:02d}", "1": lambda: str(dt.month),
        "02": lambda: f"{dt.day:02d}", "2": lambda: str(dt.day), "_2": lambda: f"{dt.day:2d}",
        "002": lambda: f"{dt.timetuple().tm_yday:03d}", "__2": lambda: f"{dt.timetuple().tm_yday:3d}",
        "15": lambda: f"{dt.hour:02d}", "03": lambda: f"{hour12:02d}", "3": lambda: str(hour12),
        "04": lambda: f"{dt.minute:02d}", "4": lambda: str(dt.minute),
        "05": lambda: f"{dt.second:02d}", "5": lambda: str(dt.second),
        "PM": lambda: "PM" if dt.hour >= 12 else "AM", "pm": lambda: "pm" if dt.hour >= 12 else "am",
    }
    return table[t]()


def format_ms(ms: int, layout: str, offset: int = 0, abbr: str = "UTC") -> str:
    """Instant `ms` written in `layout` as a clock `offset` seconds east of UTC, named `abbr`, shows it."""
    try:
        dt = datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=ms + offset * 1000)
    except (OverflowError, ValueError):
        raise OpError(f"time:format: the time {ms} ms from 1970 is outside the years 1 to 9999 that a "
                      "layout can write") from None
    out = []
    for kind, piece in _chunks(layout):
        if kind == "text":
            out.append(piece)
        elif kind == "frac":
            digits = f"{dt.microsecond:06d}000"[:len(piece) - 1]
            if piece[1] == "9":  # trailing zeros dropped, and the point with them
                digits = digits.rstrip("0")
                out.append(piece[0] + digits if digits else "")
            else:
                out.append(piece[0] + digits)
        elif piece == "MST" or piece[0] in "Z-":
            out.append(_format_zone(piece, offset, abbr))
        else:
            out.append(_format_token(piece, dt))
    return "".join(out)


_PARSE: dict[str, str] = {
    "January": "(?P<month_name>" + "|".join(MONTHS) + ")",
    "Jan": "(?P<month_abbr>" + "|".join(m[:3] for m in MONTHS) + ")",
    "Monday": "(?:" + "|".join(DAYS) + ")", "Mon": "(?:" + "|".join(d[:3] for d in DAYS) + ")",
    "MST": r"(?P<zone_name>[A-Z]{3,5})",
    "2006": r"(?P<year>\d{4})", "06": r"(?P<year2>\d{2})", "01": r"(?P<month>\d{2})", "1": r"(?P<month>\d{1,2})",
    "02": r"(?P<day>\d{2})", "2": r"(?P<day>\d{1,2})", "_2": r" ?(?P<day>\d{1,2})",
    "002": r"(?P<yday>\d{3})", "__2": r" {0,2}(?P<yday>\d{1,3})",
    "15": r"(?P<hour>\d{2})", "03": r"(?P<hour12>\d{2})", "3": r"(?P<hour12>\d{1,2})",
    "04": r"(?P<minute>\d{2})", "4": r"(?P<minute>\d{1,2})", "05": r"(?P<second>\d{2})", "5": r"(?P<second>\d{1,2})",
    "PM": r"(?P<ampm>AM|PM)", "pm": r"(?P<ampm>am|pm)",
}
_OFFSET = r"(?P<offset>[+-]\d{2}(?::?\d{2}(?::?\d{2})?)?)"


def _pattern(layout: str) -> re.Pattern[str]:
    parts = []
    seen: set[str] = set()
    for kind, piece in _chunks(layout):
        if kind == "text":
            parts.append(re.escape(piece))
            continue
        if kind == "frac":
            parts.append(r"(?:[.,](?P<frac>\d+))" + ("?" if piece[1] == "9" else ""))
            continue
        rx = _PARSE.get(piece)
        if rx is None:  # a zone offset
            rx = ("(?:(?P<z>Z)|" + _OFFSET + ")") if piece.startswith("Z") else _OFFSET
        for name in re.findall(r"\?P<(\w+)>", rx):
            if name in seen:  # the same field twice: the second only has to match
                rx = rx.replace(f"?P<{name}>", "?:")
            seen.add(name)
        parts.append(rx)
    return re.compile("".join(parts) + r"\Z")


class _Parsed(NamedTuple):
    wall_ms: int  # the fields read, as if UTC
    offset: int | None  # seconds east of UTC, when the text has a numeric offset
    zone_name: str  # an abbreviation ("CEST") the text has, or ""
    utc: bool  # the text says UTC: "Z" where the layout has a Z07:00 form, or "UTC" for MST


def _parse(layout: str, text: str) -> _Parsed:
    m = _pattern(layout).match(text)
    if m is None:
        raise OpError(f"time.parse: {text[:80]!r} does not match the layout {layout!r}")
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    try:
        year = int(g["year"]) if "year" in g else (2000 + int(g["year2"]) if int(g["year2"]) < 69 else 1900
                                                  + int(g["year2"])) if "year2" in g else 0
        if "month_name" in g:
            month = MONTHS.index(g["month_name"]) + 1
        elif "month_abbr" in g:
            month = [x[:3] for x in MONTHS].index(g["month_abbr"]) + 1
        else:
            month = int(g.get("month", 1))
        hour = int(g.get("hour", 0))
        if "hour12" in g:
            hour = int(g["hour12"]) % 12 + (12 if g.get("ampm", "").upper() == "PM" else 0)
        frac = g.get("frac", "")
        micro = int((frac + "000000")[:6]) if frac else 0
        dt = datetime(year or 1, month, int(g.get("day", 1)), hour, int(g.get("minute", 0)),
                      int(g.get("second", 0)), micro, tzinfo=UTC)
        if "yday" in g and "day" not in g:
            dt = dt.replace(month=1, day=1) + timedelta(days=int(g["yday"]) - 1)
        offset = _offset_seconds(g["offset"]) if "offset" in g else None
    except ValueError as err:
        raise OpError(f"time.parse: {text[:80]!r}: {err}") from None
    zone_name = g.get("zone_name", "")
    wall_ms = (dt - datetime.fromtimestamp(0, UTC)) // timedelta(milliseconds=1)
    return _Parsed(wall_ms, offset, zone_name, "z" in g or zone_name == "UTC")


def parse_ms(layout: str, text: str) -> int:
    """The instant `text` names in `layout`, in ms since the Unix epoch (raises OpError). Without a
    location a zone abbreviation counts as UTC: Legato's `time.parse(layout, text)` always did."""
    p = _parse(layout, text)
    return p.wall_ms - (p.offset or 0) * 1000


def parse_in(layout: str, text: str, name: str, fixed: int | None) -> tuple[int, str, str, int]:
    """`text` in `layout` read in a location (time_zones: `name`, and `fixed` for a fixed zone), as
    Go's time.ParseInLocation: (instant in ms, where, zone name, offset). `where` is "loc" (the time
    is in the location), "utc" (the text said UTC), or "fixed" (the text has an offset or an
    abbreviation the location does not have then: a fixed zone of that name and offset)."""
    p = _parse(layout, text)
    if p.utc:
        return p.wall_ms - (p.offset or 0) * 1000, "utc", "", 0
    if p.offset is not None:
        ms = p.wall_ms - p.offset * 1000
        off, abbr = time_zones.offset_at(name, ms, fixed)
        if off == p.offset and p.zone_name in ("", abbr):
            return ms, "loc", "", 0
        return ms, "fixed", p.zone_name, p.offset
    if p.zone_name:
        named = time_zones.offset_named(name, p.zone_name, p.wall_ms, fixed)
        if named is not None:
            return p.wall_ms - named * 1000, "loc", "", 0
        return p.wall_ms, "fixed", p.zone_name, 0  # Go too: an abbreviation it cannot place is offset 0
    return time_zones.wall_to_ms(name, p.wall_ms, fixed), "loc", "", 0


def _offset_seconds(offset: str) -> int:
    digits = offset[1:].replace(":", "")
    h, mnt, s = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    seconds = h * 3600 + mnt * 60 + s
    if seconds >= 86400:
        raise ValueError(f"the offset {offset} is a day or more")
    return -seconds if offset[0] == "-" else seconds
