"""Checks that a history records every step exactly once."""

from __future__ import annotations

from collections import Counter

from legato.events import EventType as E
from legato.events import HistoryEvent


def assert_steps_recorded_once(events: list[HistoryEvent]) -> None:
    ids = [e.event_id for e in events]
    assert ids == list(range(1, len(events) + 1)), f"event ids not contiguous: {ids}"
    by_type: dict[E, list[HistoryEvent]] = {}
    for e in events:
        by_type.setdefault(e.event_type, []).append(e)

    scheduled = by_type.get(E.ActivityTaskScheduled, [])
    activity_ids = [e.attrs["activity_id"] for e in scheduled]
    assert len(activity_ids) == len(set(activity_ids)), f"an activity was scheduled twice: {activity_ids}"
    closed = Counter(e.attrs["scheduled_event_id"] for t in (E.ActivityTaskCompleted, E.ActivityTaskFailed,
                                                             E.ActivityTaskTimedOut) for e in by_type.get(t, []))
    assert all(n == 1 for n in closed.values()), f"an activity closed twice: {closed}"
    assert set(closed) <= {e.event_id for e in scheduled}

    timers = [e.attrs["timer_id"] for e in by_type.get(E.TimerStarted, [])]
    assert len(timers) == len(set(timers)), f"a timer was started twice: {timers}"
    fired = Counter(e.attrs["timer_id"] for e in by_type.get(E.TimerFired, []))
    assert all(n == 1 for n in fired.values()), f"a timer fired twice: {fired}"

    closes = [e for e in events if e.event_type in (E.WorkflowExecutionCompleted, E.WorkflowExecutionFailed)]
    assert len(closes) == 1 and closes[0] is events[-1], "the workflow must close exactly once, last"

    started = Counter(e.attrs["scheduled_event_id"] for e in by_type.get(E.WorkflowTaskStarted, []))
    assert all(n == 1 for n in started.values()), f"a workflow task was started twice: {started}"
