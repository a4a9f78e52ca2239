"""history.timer_fires_in_flight: a shard fires at most that many timers at once, and every timer
of a backlog still fires (the rest wait for a free slot, woken by a fire's end, not by polling)."""

from __future__ import annotations

import asyncio

from history.queues import TimerQueueProcessor
from legato.events import EventType as E
from tests.unit.history.conftest import Env, close_env, count_in_flight, make_config, make_env, timer

LIMIT = 3
BACKLOG = 12


async def backlog_on_one_shard(env: Env) -> tuple[list[str], TimerQueueProcessor]:
    """BACKLOG workflows of one shard, each with a timer due at the same moment."""
    sid = env.history.shard_for("default", "wf-0")
    ids = [w for w in (f"wf-{i}" for i in range(1000)) if env.history.shard_for("default", w) == sid][:BACKLOG]
    for wid in ids:
        await env.start(wid)
        await env.run_wf(wid, timer("t", 5_000))
    q = env.history.shard(sid).timers
    assert isinstance(q, TimerQueueProcessor)
    return ids, q


async def test_a_backlog_of_due_timers_fires_a_few_at_a_time_and_entirely() -> None:
    env = await make_env(None, make_config(timer_fires_in_flight=LIMIT))
    try:
        ids, q = await backlog_on_one_shard(env)
        seen = count_in_flight(q)
        assert await env.fire(5_000) == BACKLOG
        assert seen[1] == LIMIT, seen  # never more at once (and the limit was reached: a backlog)
        for wid in ids:
            assert [e.event_type for e in await env.history_of(wid)].count(E.TimerFired) == 1
    finally:
        await close_env(env)


async def test_the_background_loop_drains_a_backlog_too() -> None:
    """Without fire_due (the service's own loop, as in production): every timer fires, at most
    LIMIT at once; the loop is woken by each fire's end."""
    env = await make_env(None, make_config(timer_fires_in_flight=LIMIT))
    try:
        ids, q = await backlog_on_one_shard(env)
        seen = count_in_flight(q)
        env.clock.advance(5_000)
        env.history.poke_timers()

        async def all_fired() -> None:
            while True:
                counts = [[e.event_type for e in await env.history_of(w)].count(E.TimerFired) for w in ids]
                if counts == [1] * len(ids):
                    return
                await asyncio.sleep(0.01)

        await asyncio.wait_for(all_fired(), 30)
        assert 1 <= seen[1] <= LIMIT, seen
    finally:
        await close_env(env)
