"""Durations as users write them: "30s", "5m", "1h30m", "250ms", or a number of milliseconds."""

from __future__ import annotations

import re

_UNITS_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0,
             "d": 86_400_000.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")


def parse_duration_ms(value: object, what: str = "duration") -> int:
    """Return milliseconds; raise ValueError naming `what` for anything that is not a duration."""
    if isinstance(value, bool):
        raise ValueError(f"{what}: expected a duration such as \"5s\" or a number of milliseconds, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{what}: a duration cannot be negative ({value})")
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        pos, total = 0, 0.0
        for m in _PART.finditer(text):
            if m.start() != pos:
                break
            total += float(m.group(1)) * _UNITS_MS[m.group(2)]
            pos = m.end()
        if text and pos == len(text):
            return int(round(total))
    raise ValueError(f"{what}: {value!r} is not a duration (use e.g. \"250ms\", \"30s\", \"5m\", \"24h\", "
                     "or milliseconds)")


def format_duration_ms(ms: int) -> str:
    if ms % 3_600_000 == 0 and ms:
        return f"{ms // 3_600_000}h"
    if ms % 60_000 == 0 and ms:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"
