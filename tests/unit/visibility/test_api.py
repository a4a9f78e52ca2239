"""ListWorkflows and CountWorkflows through the API: frontend validation (a bad query never
reaches the store), and the gRPC round trip against a real frontend and SQLite visibility store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from frontend.grpc_server import bound_port, serve
from frontend.service import MAX_QUERY_LENGTH, Frontend
from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore
from legato import api, wire
from legato.client import GrpcClient
from legato.config import Config
from legato.errors import InvalidArgument
from legato.query import QueryError

S = api.WorkflowStatus


class Unused:
    """History and matching: these tests must not reach them."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected call of {name}")


class FakeVisibility:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    async def upsert(self, info: api.WorkflowExecutionInfo) -> None:
        self.calls.append(("upsert", info))

    async def list(self, req: api.ListWorkflowsRequest) -> api.ListWorkflowsResponse:
        self.calls.append(("list", req))
        return api.ListWorkflowsResponse([])

    async def count(self, namespace: str, query: str) -> int:
        self.calls.append(("count", (namespace, query)))
        return 7

    async def count_by_status(self, namespace: str, query: str) -> dict[api.WorkflowStatus, int]:
        self.calls.append(("count_by_status", (namespace, query)))
        return {S.RUNNING: 4, S.COMPLETED: 0, S.FAILED: 3}


@pytest.fixture
def fe() -> tuple[Frontend, FakeVisibility]:
    vis = FakeVisibility()
    return Frontend(Unused(), Unused(), vis, Config()), vis  # type: ignore[arg-type]


# ------------------------------------------------------------------ frontend

async def test_count_is_routed_to_the_store(fe: tuple[Frontend, FakeVisibility]) -> None:
    frontend, vis = fe
    got = await frontend.count_workflows(api.CountWorkflowsRequest("shop", "WorkflowType = 'a'"))
    assert got == api.CountWorkflowsResponse(7)
    assert vis.calls == [("count", ("shop", "WorkflowType = 'a'"))]


async def test_count_group_by_status(fe: tuple[Frontend, FakeVisibility]) -> None:
    frontend, vis = fe
    got = await frontend.count_workflows(api.CountWorkflowsRequest(query="GROUP BY ExecutionStatus"))
    assert got == api.CountWorkflowsResponse(7, [api.CountGroup("RUNNING", 4), api.CountGroup("FAILED", 3)])
    assert vis.calls == [("count_by_status", ("default", "GROUP BY ExecutionStatus"))]


async def test_list_with_a_good_query_is_routed(fe: tuple[Frontend, FakeVisibility]) -> None:
    frontend, vis = fe
    req = api.ListWorkflowsRequest(query="customer = 'ann' ORDER BY StartTime ASC", page_size=5)
    await frontend.list_workflows(req)
    assert vis.calls == [("list", req)]


BAD: list[tuple[str, Any, str]] = [
    ("list: syntax", api.ListWorkflowsRequest(query="WorkflowType = 'a' OR"), "at position 22: expected a field"),
    ("list: group by", api.ListWorkflowsRequest(query="GROUP BY ExecutionStatus"), "GROUP BY is only for counting"),
    ("list: status", api.ListWorkflowsRequest(query="ExecutionStatus = 'Asleep'"),
     "'Asleep' is not an ExecutionStatus"),
    ("list: too long", api.ListWorkflowsRequest(query="a = 1 OR " * 2000), f"the limit is {MAX_QUERY_LENGTH}"),
    ("list: not text", api.ListWorkflowsRequest(query=5), "query must be a string"),  # type: ignore[arg-type]
    ("count: syntax", api.CountWorkflowsRequest(query="StartTime > 'soon'"), "at position 13: StartTime takes"),
    ("count: too long", api.CountWorkflowsRequest(query="x" * (MAX_QUERY_LENGTH + 1)), "the limit is"),
    ("count: not text", api.CountWorkflowsRequest(query=None), "query must be a string"),  # type: ignore[arg-type]
    ("count: namespace", api.CountWorkflowsRequest(namespace=""), "namespace"),
    ("count: namespace type", api.CountWorkflowsRequest(namespace=3), "namespace"),  # type: ignore[arg-type]
    ("count: no request", None, "count request is required"),
]


@pytest.mark.parametrize(("what", "req", "message"), BAD, ids=[b[0] for b in BAD])
async def test_bad_requests_never_reach_the_store(fe: tuple[Frontend, FakeVisibility], what: str, req: Any,
                                                  message: str) -> None:
    frontend, vis = fe
    call = frontend.list_workflows if what.startswith("list") else frontend.count_workflows
    with pytest.raises(InvalidArgument) as info:
        await call(req)
    assert message in info.value.message, info.value.message
    assert vis.calls == []


def test_query_errors_carry_the_invalid_query_reason() -> None:
    assert issubclass(QueryError, InvalidArgument)


START = api.StartWorkflowRequest("wf", "app:main", "queue")


@pytest.mark.parametrize(("attrs", "message"), [
    ({"a": {"b": 1}}, "search_attributes.a: a search attribute value must be text, a number, true/false"),
    ({"a": [["x"]]}, "search_attributes.a"),
    ({"": 1}, "a name that is not a non-empty string"),
])
async def test_start_refuses_search_attributes_that_cannot_be_indexed(attrs: dict[str, Any], message: str) -> None:
    class History:
        calls = 0

        async def start_workflow(self, req: api.StartWorkflowRequest) -> api.StartWorkflowResponse:
            History.calls += 1
            return api.StartWorkflowResponse("r", True)

    frontend = Frontend(History(), Unused(), FakeVisibility(), Config())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace(")", r"\)")):
        await frontend.start_workflow(api.StartWorkflowRequest("wf", "app:main", "queue", search_attributes=attrs))
    assert History.calls == 0
    await frontend.start_workflow(api.StartWorkflowRequest(
        "wf", "app:main", "queue", search_attributes={"a": "x", "n": 1.5, "b": True, "l": ["x", 2], "z": None}))
    assert History.calls == 1


# ------------------------------------------------------------------ wire and gRPC

def test_count_messages_convert_both_ways() -> None:
    req = api.CountWorkflowsRequest("shop", "a = 1 GROUP BY ExecutionStatus")
    assert wire.count_request_from_pb(wire.count_request_to_pb(req)) == req
    assert wire.count_request_from_pb(wire.pb.CountWorkflowsRequest()) == api.CountWorkflowsRequest()  # defaults
    resp = api.CountWorkflowsResponse(2**40, [api.CountGroup("RUNNING", 2**40)])
    assert wire.count_response_from_pb(wire.count_response_to_pb(resp)) == resp


@pytest.fixture
async def served() -> AsyncIterator[tuple[GrpcClient, SqliteVisibilityStore]]:
    store = SqliteStore(None)
    await store.open()
    vis = SqliteVisibilityStore(store)
    server = await serve(Frontend(Unused(), Unused(), vis, Config()), "127.0.0.1", 0)  # type: ignore[arg-type]
    client = GrpcClient(f"127.0.0.1:{bound_port(server)}")
    try:
        yield client, vis
    finally:
        await client.close()
        await server.stop(None)
        await store.close()


async def test_count_and_list_over_grpc(served: tuple[GrpcClient, SqliteVisibilityStore]) -> None:
    client, vis = served
    statuses = [S.RUNNING, S.RUNNING, S.COMPLETED, S.FAILED, S.RUNNING]
    for i, status in enumerate(statuses):
        await vis.upsert(api.WorkflowExecutionInfo(
            "default", f"wf-{i}", f"run-{i}", "app:order" if i % 2 == 0 else "app:ship", "q", status,
            1_000 + i, 0 if status is S.RUNNING else 2_000 + i, 3, {"m": i}, {"customer": ["ann", "bob"][i % 2],
                                                                              "total": i * 10}))
    await vis.upsert(api.WorkflowExecutionInfo("shop", "wf-x", "run-x", "app:order", "q", S.RUNNING, 5))

    assert await client.count_workflows(api.CountWorkflowsRequest()) == api.CountWorkflowsResponse(5)
    assert await client.count_workflows(api.CountWorkflowsRequest("shop")) == api.CountWorkflowsResponse(1)
    got = await client.count_workflows(api.CountWorkflowsRequest(query="customer = 'ann' AND total >= 10"))
    assert got == api.CountWorkflowsResponse(2)
    got = await client.count_workflows(api.CountWorkflowsRequest(query="GROUP BY ExecutionStatus"))
    assert got == api.CountWorkflowsResponse(5, [api.CountGroup("RUNNING", 3), api.CountGroup("COMPLETED", 1),
                                                 api.CountGroup("FAILED", 1)])
    got = await client.count_workflows(api.CountWorkflowsRequest(query="customer = 'nobody' GROUP BY ExecutionStatus"))
    assert got == api.CountWorkflowsResponse(0, [])

    page = await client.list_workflows(api.ListWorkflowsRequest(query="WorkflowType = 'app:order'", page_size=2))
    assert [e.workflow_id for e in page.executions] == ["wf-4", "wf-2"]
    assert page.executions[0].search_attributes == {"customer": "ann", "total": 40}
    page = await client.list_workflows(api.ListWorkflowsRequest(query="WorkflowType = 'app:order'", page_size=2,
                                                                next_page_token=page.next_page_token))
    assert [e.workflow_id for e in page.executions] == ["wf-0"] and page.next_page_token == b""

    with pytest.raises(InvalidArgument) as info:
        await client.count_workflows(api.CountWorkflowsRequest(query="total >> 3"))
    assert info.value.reason == "InvalidQuery"
    assert "at position 8" in info.value.message
    with pytest.raises(InvalidArgument, match="belongs to another query"):
        first = await client.list_workflows(api.ListWorkflowsRequest(page_size=1))
        await client.list_workflows(api.ListWorkflowsRequest(query="total > 0", page_size=1,
                                                             next_page_token=first.next_page_token))
