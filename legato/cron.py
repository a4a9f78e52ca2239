"""Cron schedules as the API takes them: the standard 5 fields (minute hour day-of-month month
day-of-week), in UTC, read by croniter. Checked where a schedule enters (a start request, a
child workflow's options), so that a schedule that is malformed, or valid but never fires
(`0 0 30 2 *`: February has no 30th), is refused there with InvalidArgument instead of failing
later when history computes the next fire time.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from croniter import CroniterError, croniter

# A schedule with no fire time within this many years is taken as one that never fires (the
# longest real gap, a leap day on a given weekday, is 28 years).
CRON_HORIZON_YEARS = 50


def check_cron(expr: str) -> str | None:
    """Why `expr` is not a usable cron schedule (not 5 valid fields, or never fires), or None;
    the answer starts with `expr` quoted, to follow the name of the field."""
    if len(expr.split()) != 5 or not croniter.is_valid(expr):
        return (f"{expr!r} is not a cron schedule: use the standard 5 fields (minute hour day-of-month month "
                "day-of-week, UTC), e.g. \"0 */6 * * *\"")
    if next_fire_ms(expr, int(time.time() * 1000)) is None:
        return f"{expr!r} never fires (no such time in the next {CRON_HORIZON_YEARS} years)"
    return None


def next_fire_ms(expr: str, after_ms: int) -> int | None:
    """The first fire time of `expr` (UTC, epoch milliseconds) strictly after `after_ms`; None
    when there is none within `CRON_HORIZON_YEARS` (or `expr` is not valid)."""
    try:
        it = croniter(expr, datetime.fromtimestamp(after_ms / 1000, tz=UTC),
                      max_years_between_matches=CRON_HORIZON_YEARS)
        return int(round(it.get_next(float) * 1000))
    except (CroniterError, ValueError, OverflowError):  # CroniterBadDateError: no such date
        return None
