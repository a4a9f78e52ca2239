"""A timer whose fire keeps failing (the store is down) is retried with doubling delays that stop
growing at `history.retries.RETRY_MAX_S`, so it fires soon after the store answers again, and it
warns on the first failure and every WARN_EVERYth, not on each."""

from __future__ import annotations

import itertools
import logging

import pytest

from history.queues import TimerQueueProcessor, TimerTask
from history.retries import RETRY_FIRST_S, RETRY_MAX_S, WARN_EVERY, Backoff, retry_delay_s
from history.state import TM_USER_TIMER
from legato.errors import Unavailable
from legato.events import EventType as E
from tests.unit.history.conftest import close_env, make_env, timer

FAILURES = WARN_EVERY + 5  # past the second warning, and long past the cap


def test_delays_double_from_the_first_and_stop_at_the_cap() -> None:
    delays = [retry_delay_s(n) for n in range(1, 40)]
    assert delays[0] == RETRY_FIRST_S and delays[1] == 2 * RETRY_FIRST_S
    assert max(delays) == RETRY_MAX_S == delays[-1]
    assert delays == sorted(delays)


async def test_a_backoff_counts_failures_and_starts_over_once_reset() -> None:
    b = Backoff()
    assert b.loud()
    await b.wait()
    assert b.failures == 1 and not b.loud()
    b.reset()
    assert b.failures == 0 and b.loud()


async def test_a_timer_failing_through_an_outage_is_retried_within_the_cap_and_fires_once_it_ends(
        caplog: pytest.LogCaptureFixture) -> None:
    env = await make_env(None)
    try:
        await env.start("wf-1")
        await env.run_wf("wf-1", timer("t", 1_000))
        q = env.history.shard(env.history.shard_for("default", "wf-1")).timers
        assert isinstance(q, TimerQueueProcessor)
        real_fire = q._fire
        attempts: list[int] = []
        down = True

        async def fire(t: TimerTask) -> None:
            if down and t.data.get("k") == TM_USER_TIMER:
                attempts.append(env.clock.now)
                raise Unavailable("the store is down")
            await real_fire(t)

        q._fire = fire
        caplog.set_level(logging.DEBUG, logger="legato.history")
        await env.fire(1_000)
        while len(attempts) < FAILURES:
            due = q.next_due_ms
            assert due is not None, "the failed timer was dropped"
            await env.fire(due - env.clock.now)
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert gaps == [int(retry_delay_s(n) * 1000) for n in range(1, FAILURES)]
        assert max(gaps) == RETRY_MAX_S * 1000
        warned = [r for r in caplog.records if r.levelno == logging.WARNING and "timer" in r.getMessage()]
        assert [r.getMessage().split("(attempt ")[1].split(")")[0] for r in warned] == ["1", str(WARN_EVERY)]

        down = False  # the store answers again: the timer fires at its next retry, within the cap
        due = q.next_due_ms
        assert due is not None and due - attempts[-1] <= RETRY_MAX_S * 1000
        assert await env.fire(due - env.clock.now) >= 1
        assert [e.event_type for e in await env.history_of("wf-1")].count(E.TimerFired) == 1
    finally:
        await close_env(env)
