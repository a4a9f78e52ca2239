"""A shard handed over (history/ownership.py drives it): requests in flight finish within the drain
timeout, new ones are refused naming the new owner, the shard is released; a closed write gate
holds writes and refuses new requests; a lost session drops every shard at once."""

from __future__ import annotations

import asyncio

import pytest

from legato.api import ExecutionRef, SignalWorkflowRequest
from legato.errors import ShardOwnershipLost, Unavailable
from tests.unit.history.conftest import Env, close_env, make_config, make_env

WAIT_S = 5.0


@pytest.fixture
async def env() -> Env:
    e = await make_env(None, make_config(num_shards=1))
    e.history.owner_hint = lambda _sid: "10.0.0.9:7234"
    yield e  # type: ignore[misc]
    await close_env(e)


async def test_drain_waits_for_requests_in_flight_and_refuses_new_ones(env: Env) -> None:
    await env.start("wf-1")
    shard = env.history.shard(0)
    held = shard.lock("default", "wf-1")
    await held.__aenter__()  # a request in flight on the shard
    assert await shard.drain(0.05) is False  # still running after the timeout
    with pytest.raises(ShardOwnershipLost, match=r"being handed over.*10\.0\.0\.9:7234") as e:
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
    assert (e.value.reason, e.value.owner) == ("ShardMoving", "10.0.0.9:7234")
    drained = asyncio.ensure_future(shard.drain(WAIT_S))
    await asyncio.sleep(0)
    assert not drained.done()
    await held.__aexit__(None, None, None)
    assert await asyncio.wait_for(drained, WAIT_S) is True


async def test_release_hands_the_shard_over_and_names_the_owner(env: Env) -> None:
    await env.start("wf-1")
    await env.history.release_shard(0, drain_timeout_s=WAIT_S)
    assert env.history.owned_shards() == []
    with pytest.raises(ShardOwnershipLost, match=r"not owned by this history node.*its owner is 10\.0\.0\.9:7234"):
        await env.history.describe_workflow(ExecutionRef("wf-1"))
    await env.history.acquire_shard(0)  # and back: a new range, the run is there
    assert env.history.owned_shards() == [0]
    assert (await env.history.describe_workflow(ExecutionRef("wf-1"))).info.workflow_id == "wf-1"


async def test_a_closed_write_gate_holds_writes_and_refuses_new_requests(env: Env) -> None:
    await env.start("wf-1")
    gate = env.history.write_gate
    shard = env.history.shard(0)
    commits = shard.commits
    # a signal admitted before the gate closes waits at the gate instead of writing
    signal = asyncio.ensure_future(env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "a")))
    await asyncio.sleep(0)
    gate.close("the ZooKeeper connection is suspended")
    with pytest.raises(Unavailable, match="writes are paused") as e:
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "b"))
    assert e.value.reason == "WritesPaused"
    for _ in range(10):
        await asyncio.sleep(0)
    assert shard.commits == commits and not signal.done()
    gate.open()
    await asyncio.wait_for(signal, WAIT_S)
    assert shard.commits == commits + 1


async def test_dropping_every_shard_stops_writing_at_once(env: Env) -> None:
    await env.start("wf-1")
    env.history.drop_all_shards("this node's ZooKeeper session was lost")
    assert env.history.owned_shards() == []
    with pytest.raises(ShardOwnershipLost, match="no longer owned"):
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
    await env.history.forget_lost_shards()
    with pytest.raises(ShardOwnershipLost, match="not owned by this history node"):
        await env.history.signal_workflow(SignalWorkflowRequest(ExecutionRef("wf-1"), "go"))
