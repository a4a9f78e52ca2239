"""Durations as users write them: "30s", "5m", "1h30m", "250ms", or a number of milliseconds."""

from __future__ import annotations

import re

# The longest duration anything accepts (timeouts, delays, retry intervals, sleeps): 100 years.
# Far beyond any real use, and small enough that a time plus a few such durations stays far
# inside the 64-bit integers the stores keep times in (2^63 ms is 292 million years).
MAX_DURATION_MS = 100 * 365 * 86_400_000

_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0,
             "d": 86_400_000.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration_ms(value: object, what: str = "duration") -> int:
    """Return milliseconds; raise ValueError naming `what` for anything that is not a duration,
    or one longer than `MAX_DURATION_MS` (100 years)."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as \"5s\" or a number of milliseconds, got {value!r}")
    if isinstance(value, int | float):
        if value != value:  # NaN
            raise ValueError(f"{what}: {value!r} is not a duration")
        if value < 0:
            raise ValueError(f"{what}: a duration cannot be negative ({value})")
        return _bounded(value, what)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return _bounded(int(text) if len(text) < 30 else float("inf"), what, text)
        pos, total = 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS_MS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return _bounded(round(total) if total < MAX_DURATION_MS else total, what, text)
    raise ValueError(f"{what}: {value!r} is not a duration (use e.g. \"250ms\", \"30s\", \"5m\", \"24h\", "
                     "or milliseconds)")


NS_PER_MS = 1_000_000


def lua_duration_ms(value: object, what: str = "duration") -> int:
    """A duration as Lua code gives it, in whole milliseconds (rounded up): a number is
    nanoseconds (Go's unit, as Lua's `time` module has it: `5 * time.SECOND`), a `time.*`
    duration value arrives as its table {_ns = n}, a string is as `parse_duration_ms` reads it."""
    if isinstance(value, dict) and set(value) == {"_ns"}:
        value = value["_ns"]
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value != value:  # NaN
            raise ValueError(f"{what}: {value!r} is not a duration")
        if value < 0:
            raise ValueError(f"{what}: a duration cannot be negative ({value} ns)")
        return _bounded(-(-value // NS_PER_MS), what, f"{value} ns")
    if isinstance(value, str):
        return parse_duration_ms(value, what)
    raise ValueError(f"{what}: expected a duration such as \"5s\", a number of nanoseconds or a time.* value, "
                     f"got {value!r}")


def _bounded(ms: int | float, what: str, shown: str = "") -> int:
    if ms > MAX_DURATION_MS:
        raise ValueError(f"{what}: {_show(shown or ms)} is too long; the longest duration is 36500d (100 years, "
                         f"{MAX_DURATION_MS} ms)")
    return int(ms)


def _show(ms: int | float | str) -> str:
    """A value in a message: a long one cut short."""
    text = repr(ms) if isinstance(ms, str) else f"{ms:.3g} ms" if isinstance(ms, float) else f"{ms} ms"
    return text if len(text) < 40 else f"{text[:20]}... ({len(text)} characters)"


def check_duration_ms(value: object, what: str, minimum: int = 0) -> int:
    """A number of milliseconds from the API: a whole number between `minimum` and
    `MAX_DURATION_MS`; ValueError naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer (milliseconds), got {type(value).__name__}")
    if value < minimum or value > MAX_DURATION_MS:
        shown = str(value) if len(str(value)) < 40 else f"{str(value)[:20]}... ({len(str(value))} digits)"
        raise ValueError(f"{what} is {shown}; it must be between {minimum} and {MAX_DURATION_MS} "
                         "(milliseconds: 100 years)")
    return value


def format_duration_ms(ms: int) -> str:
    if ms % 3_600_000 == 0 and ms:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0 and ms:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
