"""Updates of one run that queue while it is being written are committed together, in arrival
order, as if one by one (history/update_queue.py): one failing alone does not take the others
down, one that fails half-way leaves no trace, a run closed by one is closed for those after it,
and a caller that gives up while queued is not applied."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest

from history.shard import CacheEntry
from history.state import Mutation
from legato.api import ExecutionRef, SignalWorkflowRequest, TerminateWorkflowRequest
from legato.errors import InvalidArgument, NotFound, ShardOwnershipLost
from legato.events import EventType
from tests.unit.history.conftest import Env, HeldCommits, close_env, make_config, make_env, timer

WAIT_S = 5.0
E = EventType


@pytest.fixture
async def env() -> Env:
    e = await make_env(None, make_config(num_shards=1))
    yield e  # type: ignore[misc]
    await close_env(e)


def _signal(env: Env, name: str, wf: str = "wf-1") -> asyncio.Task[None]:
    return asyncio.create_task(env.history.signal_workflow(
        SignalWorkflowRequest(ExecutionRef(wf), name, [name], request_id=f"req-{name}")))


async def _hold(env: Env) -> HeldCommits:
    """Hold the shard's commits with one signal ("s0") in flight."""
    held = HeldCommits.hold(env)
    _signal(env, "s0")
    await asyncio.wait_for(held.entered.wait(), WAIT_S)
    return held


async def _queued(env: Env, n: int) -> None:
    """Until n updates wait in the queue (each caller's task ran up to its submit)."""
    for _ in range(1000):
        if env.history.runs.updates.waiting() >= n:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{n} updates never queued")


async def _signals_in_history(env: Env) -> list[str]:
    return [e.attrs["signal_name"] for e in await env.history_of("wf-1")
            if e.event_type is E.WorkflowExecutionSignaled]


async def test_updates_queued_behind_a_write_are_committed_as_one_in_order(env: Env) -> None:
    await env.start("wf-1")
    held = await _hold(env)
    late = [_signal(env, f"s{i}") for i in range(1, 10)]
    await _queued(env, 9)
    held.release.set()
    await asyncio.wait_for(asyncio.gather(*late), WAIT_S)
    assert await _signals_in_history(env) == [f"s{i}" for i in range(10)]
    assert len(held.writes) == 2  # s0, then s1..s9 together
    assert [len(w.runs) for w in held.writes] == [1, 1]


async def test_the_limit_on_updates_per_write_is_kept(env: Env) -> None:
    await close_env(env)
    env = await make_env(None, make_config(num_shards=1, max_coalesced_updates=3))
    try:
        await env.start("wf-1")
        held = await _hold(env)
        late = [_signal(env, f"s{i}") for i in range(1, 8)]
        await _queued(env, 7)
        held.release.set()
        await asyncio.wait_for(asyncio.gather(*late), WAIT_S)
        assert await _signals_in_history(env) == [f"s{i}" for i in range(8)]
        assert len(held.writes) == 4  # s0 | s1-s3 | s4-s6 | s7
    finally:
        await close_env(env)


def _refuse(m: Mutation, entry: CacheEntry) -> None:
    raise InvalidArgument("refused before changing anything")


def _half(m: Mutation, entry: CacheEntry) -> None:
    m.event(E.WorkflowExecutionSignaled, {"signal_name": "half", "input": []})
    raise InvalidArgument("failed after changing the state")


@pytest.mark.parametrize("bad_fn", [_refuse, _half], ids=["before-changing", "half-way"])
async def test_a_failing_update_fails_alone_and_leaves_no_trace(env: Env, bad_fn: Any) -> None:
    """Between two signals in one batch: the others are written (after one that failed half-way,
    on a fresh copy of the state), and nothing of it is."""
    await env.start("wf-1")
    held = await _hold(env)
    a = _signal(env, "a")
    bad = asyncio.create_task(env.history.runs.update("default", "wf-1", "", bad_fn))
    b = _signal(env, "b")
    await _queued(env, 3)
    held.release.set()
    await asyncio.wait_for(asyncio.gather(a, b), WAIT_S)
    with pytest.raises(InvalidArgument, match=r"refused before changing anything|failed after changing the state"):
        await bad
    events = await env.history_of("wf-1")
    assert await _signals_in_history(env) == ["s0", "a", "b"]
    assert [e.event_id for e in events] == list(range(1, len(events) + 1))  # no gap where "half" was
    assert (await env.state("wf-1")).next_event_id == len(events) + 1


async def test_a_run_closed_in_a_batch_is_closed_for_the_updates_after_it(env: Env) -> None:
    await env.start("wf-1")
    held = await _hold(env)
    a = _signal(env, "a")
    term = asyncio.create_task(env.history.terminate_workflow(
        TerminateWorkflowRequest(ExecutionRef("wf-1"), reason="enough", request_id="t-1")))
    late = _signal(env, "late")
    await _queued(env, 3)
    held.release.set()
    await asyncio.wait_for(asyncio.gather(a, term), WAIT_S)
    with pytest.raises(NotFound, match="already closed"):
        await asyncio.wait_for(late, WAIT_S)
    types = await env.types("wf-1")
    assert types[-1] is E.WorkflowExecutionTerminated
    assert await _signals_in_history(env) == ["s0", "a"]


async def test_a_caller_gone_while_queued_is_not_applied(env: Env) -> None:
    await env.start("wf-1")
    held = await _hold(env)
    a = _signal(env, "a")
    gone = _signal(env, "gone")
    b = _signal(env, "b")
    await _queued(env, 3)
    gone.cancel()
    held.release.set()
    await asyncio.wait_for(asyncio.gather(a, b), WAIT_S)
    assert gone.cancelled()
    assert await _signals_in_history(env) == ["s0", "a", "b"]


async def test_updates_of_other_workflows_do_not_wait_for_each_other(env: Env) -> None:
    await env.start("wf-1")
    await env.start("wf-2")
    held = HeldCommits.hold(env)
    one = _signal(env, "x", wf="wf-1")
    two = _signal(env, "y", wf="wf-2")
    await asyncio.wait_for(held.entered.wait(), WAIT_S)
    held.release.set()
    await asyncio.wait_for(asyncio.gather(one, two), WAIT_S)
    assert len(held.writes) <= 2
    assert sum(len(w.runs) for w in held.writes) == 2


async def test_updates_cancelled_with_a_dropped_shard_leave_no_error_behind() -> None:
    """Timer fires writing when their shard is dropped (its ZooKeeper session lost) are cancelled
    with it; their updates' futures are cancelled, not left holding a CancelledError that asyncio
    logs as "Future exception was never retrieved" (one ERROR per fire: 36,547 of them when a
    node lost a shard during a backlog of timers)."""
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(str(context.get("message"))))
    try:
        env = await make_env(None, make_config(num_shards=1))
        try:
            for i in range(5):
                await env.start(f"wf-{i}")
                await env.run_wf(f"wf-{i}", timer("t", 1000))
            held = HeldCommits.hold(env)
            env.clock.advance(1000)
            env.history.poke_timers()
            await asyncio.wait_for(held.entered.wait(), WAIT_S)  # the fires are writing
            env.history.shard(0).lose(ShardOwnershipLost("this node's ZooKeeper session was lost"))
            held.release.set()
        finally:
            await close_env(env)
        del env
        gc.collect()
        assert [m for m in reported if "never retrieved" in m] == []
    finally:
        loop.set_exception_handler(previous)
