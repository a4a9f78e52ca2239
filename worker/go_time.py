"""Go's time layouts ("2006-01-02T15:04:05Z07:00"), for Lua's `Time:format(layout)` and
`time.parse(layout, text)` as Wippy has them.

A layout is text in which Go's reference time (Mon Jan 2 15:04:05 MST 2006) stands for the
fields: "2006" the year, "01" the month, "Jan" its name, "15" the hour, ".000" milliseconds,
"Z07:00" the zone... Legato's times are UTC instants with millisecond precision: formatting
writes UTC (zone "UTC", offset "Z" or "+00:00"); parsing reads any offset and converts, and
keeps at most milliseconds of a fraction.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

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


def _format_token(t: str, dt: datetime) -> str:
    hour12 = dt.hour % 12 or 12
    table: dict[str, Callable[[], str]] = {
        "January": lambda: MONTHS[dt.month - 1], "Jan": lambda: MONTHS[dt.month - 1][:3],
        "Monday": lambda: DAYS[dt.weekday()], "Mon": lambda: DAYS[dt.weekday()][:3], "MST": lambda: "UTC",
        "2006": lambda: f"{dt.year:04d}", "06": lambda: f"{dt.year % 100:02d}",
        "01": lambda: f"{dt.month:02d}", "1": lambda: str(dt.month),
        "02": lambda: f"{dt.day:02d}", "2": lambda: str(dt.day), "_2": lambda: f"{dt.day:2d}",
        "002": lambda: f"{dt.timetuple().tm_yday:03d}", "__2": lambda: f"{dt.timetuple().tm_yday:3d}",
        "15": lambda: f"{dt.hour:02d}", "03": lambda: f"{hour12:02d}", "3": lambda: str(hour12),
        "04": lambda: f"{dt.minute:02d}", "4": lambda: str(dt.minute),
        "05": lambda: f"{dt.second:02d}", "5": lambda: str(dt.second),
        "PM": lambda: "PM" if dt.hour >= 12 else "AM", "pm": lambda: "pm" if dt.hour >= 12 else "am",
    }
    if t in table:
        return table[t]()
    if t.startswith("Z"):
        return "Z"  # UTC
    return {"-07:00:00": "+00:00:00", "-070000": "+000000", "-07:00": "+00:00", "-0700": "+0000", "-07": "+00"}[t]


def format_ms(ms: int, layout: str) -> str:
    try:
        dt = datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=ms)
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


def parse_ms(layout: str, text: str) -> int:
    """The instant `text` names in `layout`, in ms since the Unix epoch (raises OpError)."""
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
                      int(g.get("second", 0)), micro, tzinfo=_zone(g.get("offset")))
        if "yday" in g and "day" not in g:
            dt = dt.replace(month=1, day=1) + timedelta(days=int(g["yday"]) - 1)
    except ValueError as err:
        raise OpError(f"time.parse: {text[:80]!r}: {err}") from None
    return (dt - datetime.fromtimestamp(0, UTC)) // timedelta(milliseconds=1)


def _zone(offset: str | None) -> timezone:
    if not offset:
        return UTC
    digits = offset[1:].replace(":", "")
    h, mnt, s = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    delta = timedelta(hours=h, minutes=mnt, seconds=s)
    return timezone(-delta if offset[0] == "-" else delta)
