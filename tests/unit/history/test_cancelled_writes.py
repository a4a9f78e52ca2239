"""A request cancelled while its write is on its way (the client went away, or a history node
handing a shard over cancelled the transfer task that made the request): the write still
happens, so the run's cached state must be the written one, and nobody may load the old state
into the cache meanwhile. Seen in a cluster as a workflow task matching dropped as "no longer
pending": a reader cached the old state while the write was in flight, and the workflow
waited for ever."""

from __future__ import annotations

import asyncio

import pytest

from legato.api import ExecutionRef, SignalWorkflowRequest
from tests.unit.history.conftest import Env, HeldCommits, close_env, make_config, make_env

WAIT_S = 5.0


@pytest.fixture
async def env() -> Env:
    e = await make_env(None, make_config(num_shards=1))
    yield e  # type: ignore[misc]
    await close_env(e)


async def test_a_cancelled_request_leaves_the_cache_as_the_store_has_it(env: Env) -> None:
    await env.start("wf-1")
    shard = env.history.shard(0)
    held = HeldCommits.hold(env)

    signal = asyncio.create_task(env.history.signal_workflow(
        SignalWorkflowRequest(ExecutionRef("wf-1"), "go", [1], request_id="sig-1")))
    await asyncio.wait_for(held.entered.wait(), WAIT_S)  # the write is being made
    signal.cancel()
    # A reader comes while the write is on its way (it takes no lock).
    reader = asyncio.create_task(env.history.describe_workflow(ExecutionRef("wf-1")))
    # Until the reader is done (it got in: the bug) or waits for the run's lock behind the write.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not reader.done() and shard._locks.get(("default", "wf-1"), [None, 0])[1] < 2:
        assert loop.time() < deadline, "the reader neither ran nor waited for the lock"
        await asyncio.sleep(0.001)
    held.release.set()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(signal, WAIT_S)
    await asyncio.wait_for(reader, WAIT_S)

    stored = await env.state("wf-1")
    cached = await shard.load("default", "wf-1", stored.run_id)
    assert cached is not None
    assert cached.state.next_event_id == stored.next_event_id  # the signal is there in both
    # And the run goes on from what is written: the signal is delivered once.
    await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go", [1], request_id="sig-1"))
    signals = [e for e in await env.history_of("wf-1") if e.event_type.value == "WorkflowExecutionSignaled"]
    assert len(signals) == 1
