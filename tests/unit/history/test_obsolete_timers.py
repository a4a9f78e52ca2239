"""Timers in the store's rows that no run will expect (a workflow task's timeout once the task
completed, any timer of a closed run) come due without being fired: no task, no read of the run,
and their rows are deleted like those of fired timers. Timers that something still waits for
fire as before, and so does a timer whose run is not in memory (judged on the stored state)."""

from __future__ import annotations

from typing import Any

import pytest

from history import queues
from history.queues import TimerQueueProcessor, TimerTask
from history.state import TM_DELETE_HISTORY, TM_USER_TIMER, TM_WFT_TIMEOUT
from legato import codec
from legato.config import ConfigError, load_config
from legato.events import EventType as E
from tests.unit.history.conftest import Env, close_env, complete_wf, make_config, make_env, timer

DUE_MS = 60_000  # past every workflow task's timeout (10 s) and the user timer below


def same_shard_ids(env: Env, n: int) -> list[str]:
    sid = env.history.shard_for("default", "wf-0")
    return [w for w in (f"wf-{i}" for i in range(1000)) if env.history.shard_for("default", w) == sid][:n]


def record_fires(q: Any) -> list[TimerTask]:
    fired: list[TimerTask] = []
    fire = q._fire

    async def recorded(t: TimerTask) -> None:
        fired.append(t)
        await fire(t)

    q._fire = recorded
    return fired


async def stored_timer_kinds(env: Env, sid: int, until_ms: int) -> list[str]:
    return [codec.loads(r.data)["k"] for r in await env.store.read_timer_tasks(sid, (0, 0), until_ms, 1000)]


async def test_timers_of_finished_work_are_dropped_unfired_and_the_awaited_one_fires() -> None:
    env = await make_env(None, make_config())
    try:
        closed, waiting = same_shard_ids(env, 2)
        await env.start(closed)
        await env.run_wf(closed, complete_wf())  # closed: its task's timeout timer is obsolete
        await env.start(waiting)
        await env.run_wf(waiting, timer("t", 5_000))  # open, its task completed: that timeout is too
        sid = env.history.shard_for("default", closed)
        q = env.history.shard(sid).timers
        assert isinstance(q, TimerQueueProcessor)
        fired = record_fires(q)
        now = env.clock()
        assert (await stored_timer_kinds(env, sid, now + DUE_MS)).count(TM_WFT_TIMEOUT) == 2

        assert await env.fire(DUE_MS) == 3  # both timeouts came due, and the user timer
        assert [t.data["k"] for t in fired] == [TM_USER_TIMER]  # only what a run waits for was fired
        assert [e for _, e in await env.events(waiting)].count(E.TimerFired) == 1
        assert q.ack_level() > now + 10_000  # the dropped ones do not hold the ack level back
        await env.history.flush()
        assert await stored_timer_kinds(env, sid, now + DUE_MS) == []  # their rows are gone too
        assert TM_DELETE_HISTORY in await stored_timer_kinds(env, sid, 1 << 60)  # retention still waits
    finally:
        await close_env(env)


async def test_a_timer_of_a_run_not_in_memory_is_fired_and_found_obsolete_on_the_stored_state() -> None:
    """With no cached state (and no closed-run id remembered), nothing is judged obsolete: the timer
    fires, and the run's stored state says it is not expected (no event is added)."""
    env = await make_env(None, make_config(mutable_state_cache_size=0, closed_runs_remembered=0))
    try:
        (wid,) = same_shard_ids(env, 1)
        await env.start(wid)
        await env.run_wf(wid, complete_wf())
        before = await env.events(wid)
        q = env.history.shard(env.history.shard_for("default", wid)).timers
        fired = record_fires(q)
        assert await env.fire(DUE_MS) == 1
        assert [t.data["k"] for t in fired] == [TM_WFT_TIMEOUT]
        assert await env.events(wid) == before
    finally:
        await close_env(env)


async def test_a_long_run_of_obsolete_timers_is_dropped_in_turns() -> None:
    """More obsolete timers due at once than DROPS_PER_TURN: all are dropped, a turn at a time
    (the event loop runs others between turns; the shard's own timer loop may take some turns)."""
    env = await make_env(None, make_config())
    try:
        (wid,) = same_shard_ids(env, 1)
        sid = env.history.shard_for("default", wid)
        q = env.history.shard(sid).timers
        assert isinstance(q, TimerQueueProcessor)
        fired = record_fires(q)
        await q._maybe_load()  # the horizon: the timers below are in the window it covers
        due = env.clock() - 1
        n = queues.DROPS_PER_TURN * 2 + 5
        q.add([TimerTask(due, 10_000_000 + i, {"k": TM_WFT_TIMEOUT, "ns": "default", "wf": wid, "run": f"gone-{i}"})
               for i in range(n)])
        shard = env.history.shard(sid)
        for i in range(n):
            shard.closed_runs.put(f"gone-{i}", True)
        assert q._start_due() == queues.DROPS_PER_TURN  # one turn
        await q.fire_due()
        assert fired == [] and q.pending == 0
        assert len(q.take_deletes()) == n
    finally:
        await close_env(env)


def test_timers_due_close_together_share_one_wake_up() -> None:
    """history.timer_batch_ms: the loop sleeps at least that long before a timer due sooner (which
    then fires with those due meanwhile); a later one is waited for exactly; 0 keeps each alone."""
    def wait_for_timer_due_in(delta_ms: int, batch_ms: int) -> int:
        q = TimerQueueProcessor(0, None, lambda: 0, 60_000, _never, batch_ms=batch_ms)  # type: ignore[arg-type]
        q._horizon = q._known = 60_000
        q.add([TimerTask(1_000 + delta_ms, 1, {"k": TM_USER_TIMER})])
        return q._wait_ms(1_000)

    assert wait_for_timer_due_in(2, batch_ms=5) == 5
    assert wait_for_timer_due_in(7, batch_ms=5) == 7
    assert wait_for_timer_due_in(2, batch_ms=0) == 2
    assert wait_for_timer_due_in(0, batch_ms=5) == 0  # due: fired at once, never delayed further
    assert make_config().history.timer_batch_ms == 5


async def _never(t: TimerTask) -> None:
    raise AssertionError("no timer fires here")


@pytest.mark.parametrize("value", ["-1", "1001", "soon"])
def test_a_timer_batch_out_of_bounds_is_refused_by_name(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(env={"LEGATO_HISTORY__TIMER_BATCH_MS": value})
    assert "timer_batch_ms" in str(e.value) and "Traceback" not in str(e.value)
    assert load_config(env={"LEGATO_HISTORY__TIMER_BATCH_MS": "0"}).history.timer_batch_ms == 0
