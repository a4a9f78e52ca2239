"""Visibility: upsert (never backwards), newest first, paging, the small query language."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore, parse_query
from legato.api import ListWorkflowsRequest, WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument


@pytest.fixture
async def vis() -> AsyncIterator[SqliteVisibilityStore]:
    s = SqliteStore(None)
    await s.open()
    try:
        yield SqliteVisibilityStore(s)
    finally:
        await s.close()


def _info(i: int, wf_type: str = "app:order", status: WorkflowStatus = WorkflowStatus.RUNNING,
          length: int = 2, ns: str = "default") -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo(ns, f"wf-{i}", f"run-{i}", wf_type, "q", status, start_time_ms=1000 + i,
                                 history_length=length, memo={"i": i})


async def test_list_newest_first_with_paging(vis: SqliteVisibilityStore) -> None:
    for i in range(7):
        await vis.upsert(_info(i))
    await vis.upsert(_info(99, ns="other"))
    seen: list[str] = []
    token = b""
    while True:
        page = await vis.list(ListWorkflowsRequest(page_size=3, next_page_token=token))
        seen += [e.workflow_id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
    assert seen == [f"wf-{i}" for i in range(6, -1, -1)]
    assert (await vis.list(ListWorkflowsRequest(namespace="other"))).executions[0].memo == {"i": 99}


async def test_filters(vis: SqliteVisibilityStore) -> None:
    await vis.upsert(_info(1, "a"))
    await vis.upsert(_info(2, "b"))
    await vis.upsert(_info(3, "a", WorkflowStatus.COMPLETED, length=5))

    async def ids(q: str) -> list[str]:
        return [e.workflow_id for e in (await vis.list(ListWorkflowsRequest(query=q))).executions]

    assert await ids("") == ["wf-3", "wf-2", "wf-1"]
    assert await ids("WorkflowType = 'a'") == ["wf-3", "wf-1"]
    assert await ids("WorkflowType = 'a' AND ExecutionStatus = 'Running'") == ["wf-1"]
    assert await ids('ExecutionStatus="COMPLETED"') == ["wf-3"]
    assert await ids("WorkflowId = 'wf-2' and WorkflowType = 'b'") == ["wf-2"]
    assert await ids("ExecutionStatus = 'TimedOut'") == []


async def test_upsert_never_goes_backwards(vis: SqliteVisibilityStore) -> None:
    await vis.upsert(_info(1, status=WorkflowStatus.COMPLETED, length=9))
    await vis.upsert(_info(1, status=WorkflowStatus.RUNNING, length=2))  # a late start record
    got = (await vis.list(ListWorkflowsRequest())).executions
    assert [(e.status, e.history_length) for e in got] == [(WorkflowStatus.COMPLETED, 9)]


@pytest.mark.parametrize(("query", "message"), [
    ("StartTime > 5", "unexpected '>'"),
    ("Foo = 'x'", "unsupported query field 'Foo'"),
    ("WorkflowType = 'a' OR WorkflowId = 'b'", "expected AND after clause 1"),
    ("WorkflowType 'a'", "expected Field = 'value' at clause 1"),
    ("WorkflowType = 'a' AND", "expected Field = 'value' at clause 2"),
    ("ExecutionStatus = 'Sleeping'", "unknown ExecutionStatus 'Sleeping'"),
])
def test_unsupported_queries_are_refused_clearly(query: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_query(query)


def test_quotes_in_values() -> None:
    assert [(f.column, f.value) for f in parse_query("WorkflowId = 'it''s'")] == [("workflow_id", "it's")]


async def test_bad_page_token(vis: SqliteVisibilityStore) -> None:
    with pytest.raises(InvalidArgument, match="malformed next_page_token"):
        await vis.list(ListWorkflowsRequest(next_page_token=b"zzz"))
