"""SqliteVisibilityStore: every field and operator, search attributes of each type, paging that
stays right while runs are added, counts, and agreement with the reference semantics
(`legato.query.matches`) on many generated queries."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore, compile_where
from legato import codec
from legato.api import ListWorkflowsRequest, WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument
from legato.query import matches, parse

S = WorkflowStatus
T0 = 1_795_255_200_000  # 2026-11-21T10:00:00Z


@pytest.fixture
async def store() -> AsyncIterator[SqliteStore]:
    s = SqliteStore(None)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
def vis(store: SqliteStore) -> SqliteVisibilityStore:
    return SqliteVisibilityStore(store)


def info(i: int, wf_type: str = "app:order", status: S = S.RUNNING, *, start: int | None = None, close: int = 0,
         sa: dict[str, Any] | None = None, length: int = 2, ns: str = "default", queue: str = "q",
         wf_id: str | None = None) -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo(ns, wf_id or f"wf-{i:02d}", f"run-{i:02d}", wf_type, queue, status,
                                 start_time_ms=T0 + i * 1000 if start is None else start, close_time_ms=close,
                                 history_length=length, memo={"i": i}, search_attributes=sa or {})


async def list_all(vis: SqliteVisibilityStore, query: str = "", page_size: int = 1000,
                   ns: str = "default") -> list[WorkflowExecutionInfo]:
    out: list[WorkflowExecutionInfo] = []
    token = b""
    while True:
        page = await vis.list(ListWorkflowsRequest(ns, query, page_size, token))
        out += page.executions
        token = page.next_page_token
        if not token:
            return out


async def ids(vis: SqliteVisibilityStore, query: str) -> list[str]:
    return [e.workflow_id for e in await list_all(vis, query)]


# ------------------------------------------------------------------ the dataset

STATUSES = list(S)
SA_VALUES: list[dict[str, Any]] = [
    {"customer": "ann", "total": 100, "vip": True, "tags": ["red", "blue"]},
    {"customer": "bob", "total": 250.5, "vip": False, "tags": ["blue"]},
    {"customer": "cy", "total": "100", "tags": []},  # total as text: never a number
    {"total": -3, "vip": True, "tags": "red"},
    {"customer": "Ann", "nested": {"x": 1}, "tags": [1, "red", True]},
    {},
    {"customer": "it's", "total": 0, "vip": False, "score": 1e300},
]


def dataset() -> list[WorkflowExecutionInfo]:
    rows = []
    for i in range(42):
        status = STATUSES[i % len(STATUSES)]
        start = T0 + (i // 2) * 1000  # pairs share a start time: ties are broken by run id
        close = 0 if status is S.RUNNING else start + 500 + i
        rows.append(info(i, ["app:order", "app:ship", "app:bill"][i % 3], status, start=start, close=close,
                         sa=SA_VALUES[i % len(SA_VALUES)], queue=["q1", "q2"][i % 2]))
    return rows


@pytest.fixture
async def loaded(vis: SqliteVisibilityStore) -> tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]:
    rows = dataset()
    for r in rows:
        await vis.upsert(r)
    await vis.upsert(info(99, ns="other", sa={"customer": "ann"}))
    return vis, rows


def expected(rows: list[WorkflowExecutionInfo], query: str) -> list[str]:
    q = parse(query)
    hits = [r for r in rows if matches(q.where, r)]
    hits.sort(key=lambda r: (r.start_time_ms, r.run_id), reverse=q.order_by.descending)
    return [r.workflow_id for r in hits]


# ------------------------------------------------------------------ fields and operators

OPS = ["=", "!=", "<", ">", "<=", ">="]
FIELD_QUERIES = (
    [f"WorkflowId {op} 'wf-20'" for op in OPS]
    + [f"WorkflowType {op} 'app:order'" for op in OPS]
    + [f"RunId {op} 'run-07'" for op in OPS]
    + [f"TaskQueue {op} 'q1'" for op in OPS]
    + [f"ExecutionStatus {op} '{s}'" for op in ("=", "!=") for s in
       ("Running", "Completed", "Failed", "Canceled", "Terminated", "ContinuedAsNew", "TimedOut")]
    + [f"StartTime {op} {T0 + 10_000}" for op in OPS]
    + [f"StartTime {op} '2026-11-21T10:00:10Z'" for op in OPS]
    + [f"CloseTime {op} {T0 + 10_530}" for op in OPS]
    + [f"CloseTime {op} '2026-11-21T10:00:10.530Z'" for op in OPS]
    + [f"customer {op} 'ann'" for op in OPS]
    + [f"total {op} 100" for op in OPS]
    + [f"total {op} 100.0" for op in OPS]
    + [f"total {op} '100'" for op in OPS]
    + [f"vip {op} {v}" for op in ("=", "!=") for v in ("true", "false")]
    + [f"tags {op} 'red'" for op in OPS]
    + [f"tags {op} true" for op in ("=", "!=")]
    + [f"score {op} 1e300" for op in OPS]
    + [f"nested {op} 1" for op in OPS]
    + [f"missing {op} 'x'" for op in OPS]
)


@pytest.mark.parametrize("query", FIELD_QUERIES)
async def test_each_field_and_operator(loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]],
                                       query: str) -> None:
    vis, rows = loaded
    want = expected(rows, query)
    assert await ids(vis, query) == want
    assert await vis.count("default", query) == len(want)


async def test_spot_checks_of_the_semantics(
        loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    """The reference semantics, stated outright (so that the oracle itself is checked)."""
    vis, rows = loaded
    by_id = {r.workflow_id: r for r in rows}

    async def got(q: str) -> set[str]:
        return set(await ids(vis, q))

    assert await got("WorkflowId = 'wf-20'") == {"wf-20"}
    assert await got("ExecutionStatus = 'Running'") == {w for w, r in by_id.items() if r.status is S.RUNNING}
    assert len(await got("ExecutionStatus = 'Running'")) == 6
    # CloseTime of a running workflow is absent: no comparison is true for it, not even !=
    assert not {w for w in await got("CloseTime != 1") if by_id[w].status is S.RUNNING}
    assert await got("CloseTime > 0") == {w for w, r in by_id.items() if r.status is not S.RUNNING}
    # search attributes are typed: 100 matches 100 and 100.0, never the text '100'
    assert await got("total = 100") == await got("total = 100.0") == {"wf-00", "wf-07", "wf-14", "wf-21",
                                                                      "wf-28", "wf-35"}
    assert await got("total = '100'") == {"wf-02", "wf-09", "wf-16", "wf-23", "wf-30", "wf-37"}
    assert await got("total < 0") == {"wf-03", "wf-10", "wf-17", "wf-24", "wf-31", "wf-38"}
    # text is case-sensitive and quotes are data
    assert await got("customer = 'ann'") == {"wf-00", "wf-07", "wf-14", "wf-21", "wf-28", "wf-35"}
    assert await got("customer = 'it''s'") == {"wf-06", "wf-13", "wf-20", "wf-27", "wf-34", "wf-41"}
    # a list matches when one element does; a scalar is a list of one
    assert await got("tags = 'red'") == {w for w, r in by_id.items() if r.search_attributes.get("tags") in
                                         (["red", "blue"], "red", [1, "red", True])}
    assert await got("tags = true") == {"wf-04", "wf-11", "wf-18", "wf-25", "wf-32", "wf-39"}
    # a missing attribute satisfies nothing, but NOT of it does
    assert await got("vip != true") == await got("vip = false")
    assert await got("NOT vip = true") == set(by_id) - await got("vip = true")
    assert await got("nested = 1") == set()
    assert await got("missing != 'x'") == set()


@pytest.mark.parametrize("query", [
    "WorkflowType = 'app:order' AND ExecutionStatus = 'Running'",
    "WorkflowType = 'app:order' OR ExecutionStatus = 'Failed'",
    "NOT (WorkflowType = 'app:order' OR customer = 'ann')",
    "(customer = 'ann' OR vip = true) AND StartTime >= '2026-11-21T10:00:05Z' AND NOT tags = 'blue'",
    "ExecutionStatus IN ('Failed', 'TimedOut') AND CloseTime BETWEEN 1795255205000 AND 1795255215000",
    "WorkflowId NOT IN ('wf-01', 'wf-02') AND TaskQueue = 'q2' ORDER BY StartTime ASC",
    "customer >= 'b' OR total > 100 ORDER BY StartTime DESC",
    "total = 100 OR total = '100' OR total = -3.0 OR vip = true OR total = 0",  # mixed kinds on one name
    "tags IN ('red', 'blue', 'green') AND WorkflowType NOT IN ('app:ship', 'app:bill')",
    "CloseTime IN (1795255200500, 1795255201503) OR RunId IN ('run-05', 'run-06') OR customer > 'b'",
    "NOT ExecutionStatus IN ('Running', 'Failed', 'Canceled') AND (score = 1e300 OR customer = 'Ann')",
    "ORDER BY StartTime ASC",
])
async def test_combinations(loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]], query: str) -> None:
    vis, rows = loaded
    want = expected(rows, query)
    assert want, "a combination that matches nothing tests little"
    for size in (1, 4, 1000):
        assert [e.workflow_id for e in await list_all(vis, query, size)] == want


def _random_query(rng: random.Random, depth: int = 0) -> str:
    if depth >= 3 or rng.random() < 0.35:
        return rng.choice([*FIELD_QUERIES, "ExecutionStatus IN ('Running', 'Completed')", "total BETWEEN -5 AND 100",
                           "WorkflowType NOT IN ('app:ship')", "customer IN ('ann', 'Ann', 'bob')"])
    kind = rng.choice(["AND", "OR", "NOT", "()"])
    if kind == "NOT":
        return "NOT " + _random_query(rng, depth + 1)
    if kind == "()":
        return "(" + _random_query(rng, depth + 1) + ")"
    left, right = _random_query(rng, depth + 1), _random_query(rng, depth + 1)
    return f"({left}) {kind} ({right})" if rng.random() < 0.5 else f"{left} {kind} {right}"


async def test_agrees_with_the_reference_semantics_on_generated_queries(
        loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    vis, rows = loaded
    rng = random.Random(20261121)
    nonempty = 0
    for _ in range(300):
        query = _random_query(rng) + rng.choice(["", " ORDER BY StartTime ASC"])
        want = expected(rows, query)
        nonempty += bool(want)
        assert await ids(vis, query) == want, query
        assert await vis.count("default", query) == len(want), query
    assert nonempty > 100


# ------------------------------------------------------------------ paging

async def test_newest_first_with_ties_broken_by_run_id_and_namespaces_apart(
        loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    vis, rows = loaded
    got = await list_all(vis, page_size=5)
    assert [e.run_id for e in got] == sorted((r.run_id for r in rows), key=lambda x: (
        next(r.start_time_ms for r in rows if r.run_id == x), x), reverse=True)
    assert got[0].memo == {"i": 41} and got[0].search_attributes == SA_VALUES[41 % len(SA_VALUES)]
    other = await list_all(vis, ns="other")
    assert [e.workflow_id for e in other] == ["wf-99"]
    assert await vis.count("other", "customer = 'ann'") == 1
    assert await vis.count("nowhere", "") == 0


async def test_paging_is_stable_while_runs_are_added(vis: SqliteVisibilityStore) -> None:
    for i in range(0, 40, 2):  # even start times 0, 2, ..., 38 (seconds after T0)
        await vis.upsert(info(i, sa={"k": "v"}))
    query = "k = 'v'"
    seen: list[str] = []
    token = b""
    added = 0
    while True:
        page = await vis.list(ListWorkflowsRequest(query=query, page_size=3, next_page_token=token))
        seen += [e.workflow_id for e in page.executions]
        token = page.next_page_token
        if not token:
            break
        # between pages: a newer run (sorts before the token: never seen), an older one (sorts
        # after it: seen once, in its place), one with the very start time of the page's last row
        # and a smaller run id (after it), and an update of a run already listed
        last = page.executions[-1]
        added += 1
        await vis.upsert(info(100 + added, start=T0 + 60_000 + added, sa={"k": "v"}))
        await vis.upsert(info(200 + added, start=last.start_time_ms - 1, sa={"k": "v"}))
        await vis.upsert(WorkflowExecutionInfo("default", f"tie-{added}", "run-" + "0" * added, "t", "q",
                                               S.RUNNING, last.start_time_ms, search_attributes={"k": "v"}))
        first = page.executions[0]
        await vis.upsert(dataclasses.replace(first, status=S.COMPLETED, close_time_ms=T0 + 99_000,
                                             history_length=first.history_length + 1))
    assert len(seen) == len(set(seen)), "no run is listed twice"
    originals = {f"wf-{i:02d}" for i in range(0, 40, 2)}
    assert originals <= set(seen), "every run that was there from the start is listed"
    assert not any(w.startswith("wf-1") and len(w) == 6 and int(w[3:]) > 100 for w in seen), "newer runs are not"
    assert {f"wf-{200 + k}" for k in range(1, added)} <= set(seen)
    all_now = await list_all(vis, query)
    assert [e.workflow_id for e in all_now if e.workflow_id in set(seen)] == seen, "in order"


async def test_paging_ascending(loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    vis, rows = loaded
    got = [e.workflow_id for e in await list_all(vis, "ORDER BY StartTime ASC", page_size=4)]
    assert got == expected(rows, "ORDER BY StartTime ASC")
    assert got == list(reversed(await ids(vis, "")))


async def test_page_token_is_opaque_and_bound_to_its_query(
        loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    vis, _ = loaded
    page = await vis.list(ListWorkflowsRequest(query="ExecutionStatus != 'Running'", page_size=2))
    assert page.next_page_token
    # the same query written differently is the same query
    again = await vis.list(ListWorkflowsRequest(query="NOT ExecutionStatus = 'RUNNING'".replace(
        "NOT ExecutionStatus = 'RUNNING'", "ExecutionStatus <> 'running'"), page_size=2,
        next_page_token=page.next_page_token))
    assert again.executions
    for other in ("ExecutionStatus = 'Running'", "ExecutionStatus != 'Running' ORDER BY StartTime ASC"):
        with pytest.raises(InvalidArgument, match="belongs to another query"):
            await vis.list(ListWorkflowsRequest(query=other, page_size=2, next_page_token=page.next_page_token))
    with pytest.raises(InvalidArgument, match="belongs to another query"):
        await vis.list(ListWorkflowsRequest(namespace="other", query="ExecutionStatus != 'Running'",
                                            next_page_token=page.next_page_token))
    for bad in (b"zzz", base64.urlsafe_b64encode(b"[1, 2]"), base64.urlsafe_b64encode(b'[9, 1, "r", "x"]')):
        with pytest.raises(InvalidArgument, match="malformed next_page_token"):
            await vis.list(ListWorkflowsRequest(next_page_token=bad))


async def test_page_size_is_bounded(loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    vis, _ = loaded
    assert len((await vis.list(ListWorkflowsRequest(page_size=0))).executions) == 42  # default 100
    assert len((await vis.list(ListWorkflowsRequest(page_size=10))).executions) == 10


# ------------------------------------------------------------------ counting

async def test_count_and_count_by_status(loaded: tuple[SqliteVisibilityStore, list[WorkflowExecutionInfo]]) -> None:
    vis, rows = loaded
    assert await vis.count("default", "") == 42
    assert await vis.count("default", "WorkflowType = 'app:order' ORDER BY StartTime ASC") == 14
    assert await vis.count("default", "GROUP BY ExecutionStatus") == 42
    groups = await vis.count_by_status("default", "")
    assert groups == {s: 6 for s in S}
    assert list(groups) == list(S)  # in the enum's order
    groups = await vis.count_by_status("default", "WorkflowType = 'app:order' GROUP BY ExecutionStatus")
    want: dict[S, int] = {}
    for r in rows:
        if r.workflow_type == "app:order":
            want[r.status] = want.get(r.status, 0) + 1
    assert groups == want and sum(groups.values()) == 14
    assert await vis.count_by_status("default", "customer = 'nobody'") == {}


async def test_bad_queries_and_namespaces_are_refused(vis: SqliteVisibilityStore) -> None:
    with pytest.raises(InvalidArgument, match="at position 3"):
        await vis.list(ListWorkflowsRequest(query="a LIKE 'x'"))
    with pytest.raises(InvalidArgument, match="GROUP BY is only for counting"):
        await vis.list(ListWorkflowsRequest(query="GROUP BY ExecutionStatus"))
    with pytest.raises(InvalidArgument, match="at position 5"):
        await vis.count("default", "a = ")
    with pytest.raises(InvalidArgument, match="namespace"):
        await vis.count("", "")
    with pytest.raises(InvalidArgument, match="namespace"):
        await vis.list(ListWorkflowsRequest(namespace=""))


# ------------------------------------------------------------------ writing

async def test_upsert_never_goes_backwards_search_attributes_included(vis: SqliteVisibilityStore) -> None:
    await vis.upsert(info(1, status=S.COMPLETED, length=9, close=T0 + 5000, sa={"stage": "done"}))
    await vis.upsert(info(1, status=S.RUNNING, length=2, sa={"stage": "new"}))  # a late start record
    got = await list_all(vis)
    assert [(e.status, e.history_length, e.search_attributes) for e in got] == [(S.COMPLETED, 9, {"stage": "done"})]
    assert await ids(vis, "stage = 'done'") == ["wf-01"]
    assert await ids(vis, "stage = 'new'") == []


async def test_changed_search_attributes_replace_the_old_ones(vis: SqliteVisibilityStore) -> None:
    await vis.upsert(info(1, sa={"stage": "new", "tags": ["a", "b"]}))
    await vis.upsert(info(1, length=5, sa={"stage": "paid", "tags": ["b"]}))
    assert await ids(vis, "stage = 'paid'") == ["wf-01"]
    assert await ids(vis, "stage = 'new' OR tags = 'a'") == []
    assert await ids(vis, "tags = 'b'") == ["wf-01"]
    await vis.upsert(info(1, length=6))
    assert await ids(vis, "tags = 'b'") == []


async def test_many_upserts_at_once(vis: SqliteVisibilityStore) -> None:
    await asyncio.gather(*(vis.upsert(info(i, sa={"n": i})) for i in range(600)))  # more than one batch
    assert await vis.count("default", "n >= 0") == 600
    assert await vis.count("default", "n >= 300 AND n < 310") == 10


async def test_search_attribute_queries_use_the_index(store: SqliteStore, vis: SqliteVisibilityStore) -> None:
    await vis.upsert(info(1, sa={"customer": "ann"}))
    where, args = compile_where(parse("customer = 'ann'").where, "default")

    def plan(c: sqlite3.Connection) -> str:
        rows = c.execute("EXPLAIN QUERY PLAN SELECT run_id FROM visibility WHERE " + where, args).fetchall()
        return " | ".join(str(r[-1]) for r in rows)

    text = await store.call(plan)
    assert "visibility_search_attributes_by_value" in text, text
    assert "SCAN visibility_search_attributes" not in text, text


async def test_runs_written_before_the_index_existed_are_indexed(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    s = SqliteStore(path)
    await s.open()
    await SqliteVisibilityStore(s).upsert(info(1, sa={"customer": "ann", "tags": ["x"]}))

    def make_old(c: sqlite3.Connection) -> None:  # as a database of the build before the side table
        c.execute("DROP TABLE visibility_search_attributes")
        c.execute("DELETE FROM cluster_metadata WHERE key = 'visibility_search_index'")
        c.execute("UPDATE visibility SET search_attributes = ? WHERE run_id = 'run-01'",
                  (codec.dumps({"customer": "ann", "tags": ["x"]}),))

    await s.call(make_old)
    await s.close()
    s = SqliteStore(path)
    await s.open()
    try:
        vis = SqliteVisibilityStore(s)
        assert await ids(vis, "customer = 'ann' AND tags = 'x'") == ["wf-01"]
        # done once: the marker is recorded
        assert await SqliteVisibilityStore(s).count("default", "customer = 'ann'") == 1
    finally:
        await s.close()
