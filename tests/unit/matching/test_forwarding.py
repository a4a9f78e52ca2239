"""Tasks between matching nodes (matching/forwarding.py): a task with no poll on its node goes to a
poll waiting on another node, keeps its request id, and stays home when the other node cannot
hand it out. Two InProcessMatching nodes, the second reached through its real gRPC API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from legato import api
from legato.config import Config, MatchingConfig
from legato.errors import NotFound, Unavailable
from legato.grpc_serving import bound_port
from legato.internal_clients import GrpcMatchingClient
from matching.forwarding import Forwarder
from matching.grpc_server import serve
from matching.service import InProcessMatching
from tests.unit.matching.fakes import FakeHistory, raiser

WF = api.TaskKind.WORKFLOW
WAIT_S = 5.0


def task(n: int, queue: str = "q") -> api.TaskInfo:
    return api.TaskInfo(WF, "default", queue, f"wf-{n}", f"run-{n}", scheduled_event_id=n)


def poll(queue: str = "q", identity: str = "w-b", timeout_ms: int = 10_000) -> api.PollRequest:
    return api.PollRequest(task_queue=queue, identity=identity, timeout_ms=timeout_ms)


class Pair:
    """Node A (its tasks have no poll) forwards to node B (reached over gRPC)."""

    def __init__(self) -> None:
        cfg = Config.model_validate({"matching": {"forward_after_ms": 0, "forward_backoff_ms": 100}})
        self.history_a, self.history_b = FakeHistory(), FakeHistory()
        self.a = InProcessMatching(self.history_a, cfg)  # type: ignore[arg-type]
        self.b = InProcessMatching(self.history_b, cfg)  # type: ignore[arg-type]
        self.cfg = cfg
        self.server: Any = None
        self.client: GrpcMatchingClient | None = None
        self.forwarder: Forwarder | None = None

    async def start(self) -> None:
        self.server = await serve(self.b, "127.0.0.1", 0, config=self.cfg)
        self.client = GrpcMatchingClient(f"127.0.0.1:{bound_port(self.server)}")
        client = self.client
        self.forwarder = Forwarder(self.a.task_queues, lambda: [("b", client)], self.cfg.matching)
        self.forwarder.start()

    async def stop(self) -> None:
        if self.forwarder is not None:
            await self.forwarder.stop()
        if self.client is not None:
            await self.client.close()
        if self.server is not None:
            await self.server.stop(None)
        await self.a.stop()
        await self.b.stop()


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    p = Pair()
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


async def test_a_task_without_a_local_poll_goes_to_a_poll_on_another_node(pair: Pair) -> None:
    waiting = asyncio.ensure_future(pair.b.poll_workflow_task(poll()))
    adds = [asyncio.ensure_future(pair.a.add_task(task(n))) for n in range(3)]
    got = [await asyncio.wait_for(waiting, WAIT_S)]
    for _ in range(2):
        got.append(await asyncio.wait_for(pair.b.poll_workflow_task(poll()), WAIT_S))
    await asyncio.wait_for(asyncio.gather(*adds), WAIT_S)  # node A is done with each: taken elsewhere
    assert sorted(t.workflow_id for t in got if t) == ["wf-0", "wf-1", "wf-2"]
    assert [c[1] for c in pair.history_b.calls] == [t.workflow_id for t in got if t]  # B recorded them
    assert pair.history_a.calls == []
    assert pair.a.backlog("default", "q", WF) == 0
    assert pair.forwarder is not None and pair.forwarder.forwarded == 3


async def test_a_local_poll_takes_the_task_before_anyone_else(pair: Pair) -> None:
    waiting_b = asyncio.ensure_future(pair.b.poll_workflow_task(poll(identity="w-b", timeout_ms=300)))
    waiting_a = asyncio.ensure_future(pair.a.poll_workflow_task(poll(identity="w-a")))
    await asyncio.sleep(0)
    await pair.a.add_task(task(1))
    assert (await waiting_a) is not None
    assert (await waiting_b) is None  # B's poll ran out empty: the task never left A
    assert pair.history_b.calls == []


async def test_a_task_whose_handout_fails_on_the_other_node_comes_back_with_its_request_id(pair: Pair) -> None:
    pair.history_b.behaviour["wf-1"] = raiser(Unavailable("history restarting"))
    waiting_b = asyncio.ensure_future(pair.b.poll_workflow_task(poll()))
    add = asyncio.ensure_future(pair.a.add_task(task(1)))
    with pytest.raises(Unavailable):
        await asyncio.wait_for(waiting_b, WAIT_S)
    # back on A (not lost, not on B): a poll on A gets it, recorded with the same request id
    assert pair.b.backlog("default", "q", WF) == 0
    got = await asyncio.wait_for(pair.a.poll_workflow_task(poll(identity="w-a")), WAIT_S)
    assert got is not None and got.workflow_id == "wf-1"
    await asyncio.wait_for(add, WAIT_S)
    assert pair.history_b.request_ids == pair.history_a.request_ids


async def test_a_stale_task_found_on_the_other_node_is_done(pair: Pair) -> None:
    pair.history_b.behaviour["wf-1"] = raiser(NotFound("stale task", reason="StaleTask"))
    waiting_b = asyncio.ensure_future(pair.b.poll_workflow_task(poll(timeout_ms=2_000)))
    await asyncio.sleep(0)
    await asyncio.wait_for(pair.a.add_task(task(1)), WAIT_S)  # done: history said stale
    assert pair.a.backlog("default", "q", WF) == 0
    waiting_b.cancel()


async def test_no_poll_anywhere_keeps_the_task_home(pair: Pair) -> None:
    add = asyncio.ensure_future(pair.a.add_task(task(1)))
    assert pair.forwarder is not None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    # Offered twice (after B's quiet period), B having no poll each time, and back home: an offer
    # takes the task out of A's queue until B answers, so the backlog is read between offers.
    while pair.forwarder.offers < 2 or pair.a.backlog("default", "q", WF) != 1:
        assert loop.time() < deadline, (f"the forwarder made {pair.forwarder.offers} offers and A's backlog "
                                        f"is {pair.a.backlog('default', 'q', WF)}: no second offer, or the task "
                                        "did not come back")
        await asyncio.sleep(0.01)
    assert not add.done()
    got = await asyncio.wait_for(pair.b.poll_workflow_task(poll()), WAIT_S)  # a poll on B appears
    assert got is not None and got.workflow_id == "wf-1"
    await asyncio.wait_for(add, WAIT_S)


def test_matching_config_has_forwarding_bounds() -> None:
    cfg = MatchingConfig()
    assert cfg.forward_after_ms >= 0 and cfg.forward_backoff_ms > 0 and cfg.forward_concurrency > 0
