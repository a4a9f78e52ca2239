"""Queries across several matching nodes (issue 14, legato/routing.py): the router asks every node,
the node where the worker polls hands the query out with an id naming that node, the worker's
answer is routed there, and the other node's wait is withdrawn. Two real InProcessMatching nodes
behind their gRPC servers; the cluster view is given (as ZooKeeper's watches would keep it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from legato import api
from legato.config import Config
from legato.errors import NotFound
from legato.grpc_serving import bound_port
from legato.internal_clients import GrpcMatchingClient
from legato.membership import ClusterView, MemberInfo
from legato.routing import MatchingRouter
from matching.grpc_server import serve
from matching.service import InProcessMatching


class _NoHistory:
    async def record_workflow_task_started(self, *args: Any) -> api.WorkflowTask:
        raise AssertionError("a query is never recorded in history")

    record_activity_task_started = record_workflow_task_started


Nodes = tuple[MatchingRouter, list[InProcessMatching], list[str], list[grpc.aio.Server]]


@pytest.fixture
async def nodes() -> AsyncIterator[Nodes]:
    matchings = [InProcessMatching(_NoHistory(), Config()) for _ in range(2)]  # type: ignore[arg-type]
    servers = [await serve(m, "127.0.0.1", 0) for m in matchings]
    addresses = [f"127.0.0.1:{bound_port(s)}" for s in servers]
    view = ClusterView()
    view.members = {f"matching-{i}": MemberInfo(f"matching-{i}", {"matching": a}) for i, a in enumerate(addresses)}
    membership = SimpleNamespace(view=view, identity="frontend-1")
    router = MatchingRouter(membership, 5_000, 30_000)  # type: ignore[arg-type]
    try:
        yield router, matchings, addresses, servers
    finally:
        await router.close()
        for s in servers:
            await s.stop(None)
        for m in matchings:
            await m.stop()


async def test_the_node_where_the_worker_polls_answers(nodes: Nodes) -> None:
    router, matchings, addresses, _ = nodes
    request = api.QueryTaskRequest("default", "q", "order-1", "run-1", "app:order",
                                   api.QueryTask("abc", api.STACK_TRACE_QUERY), "worker-1", 5_000)
    asking = asyncio.ensure_future(router.query_workflow(request))
    async with GrpcMatchingClient(addresses[1]) as node1:  # the worker's polls reach node 1
        task = await node1.poll_workflow_task(api.PollRequest("q", identity="worker-1", timeout_ms=5_000))
        assert task is not None and task.query is not None
        assert task.query.query_id == "matching-1/abc" and task.task_token == b"matching-1/abc"
        answer = api.RespondQueryTaskCompletedRequest(task.task_token, {"coroutines": []}, source="worker-cache",
                                                      identity="worker-1")
        await router.respond_query_task_completed(answer)  # routed to node 1 by the id
    got = await asking
    assert got.task_token == b"matching-1/abc" and got.source == "worker-cache"
    assert not matchings[1]._queries  # answered (node 0's wait is cancelled with its call)
    with pytest.raises(NotFound) as e:
        await router.respond_query_task_completed(
            api.RespondQueryTaskCompletedRequest(b"matching-9/abc", identity="worker-1"))
    assert e.value.reason == "QueryNotWaiting" and "matching-9" in e.value.message


async def test_a_poll_whose_node_goes_away_waits_only_what_is_left_on_the_next(nodes: Nodes) -> None:
    """A task poll routed to a matching node that is killed mid-wait goes to the other node with
    what is left of its wait (not a whole wait again): a worker's poll ends when it should."""
    router, matchings, _, servers = nodes
    wait_s = 3.0
    loop = asyncio.get_running_loop()
    began = loop.time()
    poll = asyncio.ensure_future(router.poll_workflow_task(api.PollRequest("q", timeout_ms=int(wait_s * 1000))))

    def polled(m: InProcessMatching) -> bool:
        return m.pollers("default", "q", api.TaskKind.WORKFLOW) == 1

    await until(lambda: any(polled(m) for m in matchings), "the poll waits on a node")
    first = next(i for i, m in enumerate(matchings) if polled(m))
    await asyncio.sleep(1.0)  # the scenario: the poll has waited a while when its node goes
    await servers[first].stop(None)  # as a killed node's calls end: Unavailable
    await until(lambda: polled(matchings[1 - first]), "the poll waits on the other node")
    moved_after = loop.time() - began
    assert await poll is None
    took = loop.time() - began
    assert wait_s * 0.9 <= took < wait_s + moved_after / 2, (took, moved_after)


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.01)
