"""The bookkeeping of the timer queues, without a broker: fire lags, the Kafka queue's committable
offset, and the bounds on what it keeps for timers that already fired."""

from __future__ import annotations

from history.fire_lags import FireLags, percentile
from history.kafka_timers import COMPACT_SLACK, OffsetTracker, _Held, _push
from history.queues import TimerTask


def test_fire_lags_keep_a_bounded_window_and_give_percentiles() -> None:
    lags = FireLags(capacity=100)
    for v in range(1, 201):
        lags.record(v)
    assert lags.count == 200 and lags.samples() == list(range(101, 201))
    assert percentile(lags.samples(), 50) == 150 and percentile(lags.samples(), 99) == 199
    assert percentile(lags.samples(), 100) == 200 and percentile([], 50) is None


def test_the_committable_offset_is_the_oldest_open_one() -> None:
    t = OffsetTracker()
    assert t.low(7) == 7  # nothing open: everything read is done
    for o in (3, 5, 9):
        t.open(o)
    assert t.low(10) == 3
    t.done(5)
    assert t.low(10) == 3  # 3 still holds it back
    t.done(3)
    assert t.low(10) == 9 and len(t) == 1
    t.done(9)
    t.done(9)  # twice is harmless
    assert t.low(12) == 12 and len(t) == 0


def test_offsets_done_behind_a_long_open_one_do_not_pile_up() -> None:
    t = OffsetTracker()
    t.open(0)  # a timer held for a long time
    for o in range(1, 20_000):
        t.open(o)
        t.done(o)
    assert t.low(20_000) == 0
    assert len(t._heap) <= 2 + COMPACT_SLACK + 1  # internal heap: rebuilt from the open offsets
    t.done(0)
    assert t.low(20_000) == 20_000


def test_heap_entries_of_fired_timers_are_dropped_once_they_outnumber_the_live_ones() -> None:
    held = {1: _Held(TimerTask(5, 1, {}), offset=0, due_at=5, limit_at=100)}
    heap: list[tuple[int, int]] = [(100, 1)]
    for tid in range(2, 10_000):  # timers that came and fired, their entries left behind
        heap = _push(heap, (100 + tid, tid), held, lambda h: h.limit_at)
    assert len(heap) <= 2 * len(held) + COMPACT_SLACK + 1
    assert (100, 1) in heap  # the live timer's entry survives every rebuild
