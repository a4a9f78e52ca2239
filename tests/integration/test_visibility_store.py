"""Both visibility stores (SQLite, and Cassandra on the real node): every field and operator,
search attributes of each type, paging that stays right while runs are added, counts, and
agreement with the reference semantics (`legato.query.matches`) on many generated queries. Then
what is particular to each: SQLite's index plans; Cassandra's buckets, pushdown plans and
bounded pages.

The Cassandra store runs with buckets of a few seconds and tiny read chunks, so that the dataset
(runs over 21 seconds) lies in several buckets and every listing reads several chunks and merges
branches across them. The read-only dataset is written once per module and store (writing it for
each of the hundreds of read-only tests would cost more than the tests); tests that write get an
emptied keyspace (the `cassandra` fixture). LEGATO_TEST_VISIBILITY_KEYSPACE=name runs them in a
keyspace of their own that holds only the visibility tables (made if absent, kept afterwards), away
from other test runs that share the node and empty the test keyspace meanwhile."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import os
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from history.store.cql import Cql
from history.store.sqlite import SqliteStore
from history.visibility import SqliteVisibilityStore, compile_where
from history.visibility_cassandra import (
    VISIBILITY_SCHEMA,
    VISIBILITY_TABLES,
    Branch,
    CassandraVisibilityStore,
    plan,
    sa_value_texts,
)
from legato import codec
from legato.api import ListWorkflowsRequest, VisibilityStore, WorkflowExecutionInfo, WorkflowStatus
from legato.config import StoreConfig
from legato.errors import InvalidArgument
from legato.query import matches, parse
from tests.conftest import TEST_KEYSPACE

S = WorkflowStatus
T0 = 1_795_255_200_000  # 2026-11-21T10:00:00Z
BUCKET_MS = 4_000  # the dataset's 21 seconds lie in 6 buckets
KINDS = ["sqlite", "cassandra"]
OWN_KEYSPACE = os.environ.get("LEGATO_TEST_VISIBILITY_KEYSPACE", "")
KEYSPACE = OWN_KEYSPACE or TEST_KEYSPACE


def cassandra_store(cql: Cql, **kw: Any) -> CassandraVisibilityStore:
    """Small buckets, chunks and windows: every listing crosses buckets and reads several chunks."""
    opts: dict[str, Any] = {"bucket_ms": BUCKET_MS, "min_chunk": 3, "window": 5, **kw}
    return CassandraVisibilityStore(cql, KEYSPACE, **opts)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    s = SqliteStore(str(tmp_path / "visibility.db"))
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(scope="module")
async def own_keyspace(cassandra_node: StoreConfig) -> AsyncIterator[Cql]:
    from cassandra.query import SimpleStatement

    from history.store.cql import connect

    cluster, session = await asyncio.to_thread(connect, cassandra_node)
    try:
        cql = Cql(session)
        await cql.execute(SimpleStatement(f"CREATE KEYSPACE IF NOT EXISTS {KEYSPACE} WITH replication = "
                                          "{'class': 'SimpleStrategy', 'replication_factor': 1}"))
        for text in VISIBILITY_SCHEMA:
            await cql.execute(SimpleStatement(text.format(keyspace=KEYSPACE)))
        yield cql
    finally:
        await asyncio.to_thread(cluster.shutdown)


async def empty_visibility_tables(cql: Cql) -> None:
    for table in VISIBILITY_TABLES:
        await cql.execute(f"TRUNCATE {KEYSPACE}.{table}")


@pytest.fixture
async def own_keyspace_emptied(own_keyspace: Cql) -> Cql:
    await empty_visibility_tables(own_keyspace)
    return own_keyspace


@pytest.fixture(scope="module")
def session_cql(request: pytest.FixtureRequest) -> Cql:
    """The driver session of this module's Cassandra tests."""
    cql: Cql = request.getfixturevalue("own_keyspace" if OWN_KEYSPACE else "cassandra_admin")
    return cql


@pytest.fixture
def cql(request: pytest.FixtureRequest, session_cql: Cql) -> Cql:
    """The driver session, the visibility tables emptied."""
    request.getfixturevalue("own_keyspace_emptied" if OWN_KEYSPACE else "cassandra")
    return session_cql


@pytest.fixture(params=KINDS)
def vis(request: pytest.FixtureRequest) -> VisibilityStore:
    """An empty store of each kind (for tests that write)."""
    if request.param == "cassandra":
        return cassandra_store(request.getfixturevalue("cql"))
    return SqliteVisibilityStore(request.getfixturevalue("store"))


def info(i: int, wf_type: str = "app:order", status: S = S.RUNNING, *, start: int | None = None, close: int = 0,
         sa: dict[str, Any] | None = None, length: int = 2, ns: str = "default", queue: str = "q",
         wf_id: str | None = None) -> WorkflowExecutionInfo:
    return WorkflowExecutionInfo(ns, wf_id or f"wf-{i:02d}", f"run-{i:02d}", wf_type, queue, status,
                                 start_time_ms=T0 + i * 1000 if start is None else start, close_time_ms=close,
                                 history_length=length, memo={"i": i}, search_attributes=sa or {})


async def list_all(vis: VisibilityStore, query: str = "", page_size: int = 1000,
                   ns: str = "default") -> list[WorkflowExecutionInfo]:
    out: list[WorkflowExecutionInfo] = []
    token = b""
    while True:
        page = await vis.list(ListWorkflowsRequest(ns, query, page_size, token))
        out += page.executions
        token = page.next_page_token
        if not token:
            return out


async def ids(vis: VisibilityStore, query: str) -> list[str]:
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


async def load(vis: VisibilityStore) -> list[WorkflowExecutionInfo]:
    rows = dataset()
    await asyncio.gather(*(vis.upsert(r) for r in rows))
    await vis.upsert(info(99, ns="other", sa={"customer": "ann"}))
    return rows


@pytest.fixture(scope="module")
async def sqlite_loaded(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SqliteVisibilityStore]:
    s = SqliteStore(str(tmp_path_factory.mktemp("visibility") / "loaded.db"))
    await s.open()
    try:
        vis = SqliteVisibilityStore(s)
        await load(vis)
        yield vis
    finally:
        await s.close()


class CassandraDataset:
    """The dataset in the test keyspace, written again when another test emptied the keyspace."""

    def __init__(self, cql: Cql) -> None:
        self.cql = cql
        self.vis = cassandra_store(cql)

    async def ready(self) -> CassandraVisibilityStore:
        if await self.vis.count("default", "") == 42 and await self.vis.count("other", "") == 1:
            return self.vis
        await empty_visibility_tables(self.cql)
        self.vis = cassandra_store(self.cql)  # a new store: it forgets the buckets it wrote
        await load(self.vis)
        return self.vis


@pytest.fixture(scope="module")
def cassandra_dataset(session_cql: Cql) -> CassandraDataset:
    return CassandraDataset(session_cql)


Loaded = tuple[VisibilityStore, list[WorkflowExecutionInfo]]


@pytest.fixture
async def cassandra_loaded(cassandra_dataset: CassandraDataset) -> CassandraVisibilityStore:
    return await cassandra_dataset.ready()


@pytest.fixture(params=KINDS)
def loaded(request: pytest.FixtureRequest) -> Loaded:
    """A store of each kind with the dataset (read-only: shared by the tests of this module)."""
    return request.getfixturevalue(f"{request.param}_loaded"), dataset()


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
async def test_each_field_and_operator(loaded: Loaded,
                                       query: str) -> None:
    vis, rows = loaded
    want = expected(rows, query)
    assert await ids(vis, query) == want
    assert await vis.count("default", query) == len(want)


async def test_spot_checks_of_the_semantics(
        loaded: Loaded) -> None:
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
    # alternatives narrowed by the store, the rest filtered after: pages end inside merged reads
    "(WorkflowType = 'app:order' OR ExecutionStatus = 'Failed') AND customer > 'b'",
    "(WorkflowType = 'app:order' OR ExecutionStatus = 'Failed') AND customer > 'b' ORDER BY StartTime ASC",
])
async def test_combinations(loaded: Loaded, query: str) -> None:
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
        loaded: Loaded) -> None:
    vis, rows = loaded
    rng = random.Random(20261121)
    n = 120 if isinstance(vis, CassandraVisibilityStore) else 300  # Cassandra: ~30 ms a query (the plans
    nonempty = 0  # themselves are checked on thousands of queries below, without a server)
    for _ in range(n):
        query = _random_query(rng) + rng.choice(["", " ORDER BY StartTime ASC"])
        want = expected(rows, query)
        nonempty += bool(want)
        assert await ids(vis, query) == want, query
        assert await vis.count("default", query) == len(want), query
        if rng.random() < 0.2:
            assert await vis.count_by_status("default", query) == by_status(rows, query), query
    assert nonempty > n // 3


def by_status(rows: list[WorkflowExecutionInfo], query: str) -> dict[S, int]:
    where = parse(query).where
    found = [r.status for r in rows if matches(where, r)]
    return {s: found.count(s) for s in S if s in found}


# ------------------------------------------------------------------ paging

async def test_newest_first_with_ties_broken_by_run_id_and_namespaces_apart(
        loaded: Loaded) -> None:
    vis, rows = loaded
    got = await list_all(vis, page_size=5)
    assert [e.run_id for e in got] == sorted((r.run_id for r in rows), key=lambda x: (
        next(r.start_time_ms for r in rows if r.run_id == x), x), reverse=True)
    assert got[0].memo == {"i": 41} and got[0].search_attributes == SA_VALUES[41 % len(SA_VALUES)]
    other = await list_all(vis, ns="other")
    assert [e.workflow_id for e in other] == ["wf-99"]
    assert await vis.count("other", "customer = 'ann'") == 1
    assert await vis.count("nowhere", "") == 0


async def test_paging_is_stable_while_runs_are_added(vis: VisibilityStore) -> None:
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


async def test_paging_ascending(loaded: Loaded) -> None:
    vis, rows = loaded
    got = [e.workflow_id for e in await list_all(vis, "ORDER BY StartTime ASC", page_size=4)]
    assert got == expected(rows, "ORDER BY StartTime ASC")
    assert got == list(reversed(await ids(vis, "")))


async def test_page_token_is_opaque_and_bound_to_its_query(
        loaded: Loaded) -> None:
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


async def test_page_size_is_bounded(loaded: Loaded) -> None:
    vis, _ = loaded
    assert len((await vis.list(ListWorkflowsRequest(page_size=0))).executions) == 42  # default 100
    assert len((await vis.list(ListWorkflowsRequest(page_size=10))).executions) == 10


# ------------------------------------------------------------------ counting

async def test_count_and_count_by_status(loaded: Loaded) -> None:
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


async def test_bad_queries_and_namespaces_are_refused(vis: VisibilityStore) -> None:
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

async def test_upsert_never_goes_backwards_search_attributes_included(vis: VisibilityStore) -> None:
    await vis.upsert(info(1, status=S.COMPLETED, length=9, close=T0 + 5000, sa={"stage": "done"}))
    await vis.upsert(info(1, status=S.RUNNING, length=2, sa={"stage": "new"}))  # a late start record
    got = await list_all(vis)
    assert [(e.status, e.history_length, e.search_attributes) for e in got] == [(S.COMPLETED, 9, {"stage": "done"})]
    assert await ids(vis, "stage = 'done'") == ["wf-01"]
    assert await ids(vis, "stage = 'new'") == []


async def test_changed_search_attributes_replace_the_old_ones(vis: VisibilityStore) -> None:
    await vis.upsert(info(1, sa={"stage": "new", "tags": ["a", "b"]}))
    await vis.upsert(info(1, length=5, sa={"stage": "paid", "tags": ["b"]}))
    assert await ids(vis, "stage = 'paid'") == ["wf-01"]
    assert await ids(vis, "stage = 'new' OR tags = 'a'") == []
    assert await ids(vis, "tags = 'b'") == ["wf-01"]
    await vis.upsert(info(1, length=6))
    assert await ids(vis, "tags = 'b'") == []


async def test_delete_removes_the_record_and_its_search_attributes(vis: VisibilityStore) -> None:
    """Retention: a deleted run is neither listed, counted nor found by a search attribute; the
    other runs stay; deleting again is harmless. (A namespace of its own: on Cassandra a deletion's
    tombstone outlives the emptying of the tables between tests, which skips tables that read
    empty, and would hide a later test's record of the same run.)"""
    ns = f"deleted-{uuid.uuid4().hex[:8]}"

    async def names(query: str) -> list[str]:
        return [e.workflow_id for e in await list_all(vis, query, ns=ns)]

    await vis.upsert(info(1, status=S.COMPLETED, length=9, close=T0 + 5000, sa={"stage": "done", "tags": ["a"]},
                          ns=ns))
    await vis.upsert(info(2, status=S.COMPLETED, length=9, close=T0 + 6000, sa={"stage": "done"}, ns=ns))
    await vis.delete(ns, "run-01", T0 + 1000)
    assert [e.run_id for e in await list_all(vis, ns=ns)] == ["run-02"]
    assert await names("stage = 'done'") == ["wf-02"]
    assert await names("tags = 'a'") == []
    assert await vis.count(ns, "") == 1
    assert await vis.count_by_status(ns, "") == {S.COMPLETED: 1}
    await vis.delete(ns, "run-01", T0 + 1000)  # again (a retention timer fired twice)
    await vis.delete(ns, "run-09", T0 + 9000)  # never recorded
    assert [e.run_id for e in await list_all(vis, ns=ns)] == ["run-02"]


async def test_a_deleted_record_stays_deleted_on_cassandra(cql: Cql) -> None:
    """Cassandra's tombstone is above every upsert's timestamp: a late upsert of the run, even
    one with a longer history, does not bring the record back."""
    vis = cassandra_store(cql)
    ns = f"deleted-{uuid.uuid4().hex[:8]}"
    await vis.upsert(info(1, status=S.COMPLETED, length=9, close=T0 + 5000, sa={"stage": "done"}, ns=ns))
    assert len(await list_all(vis, ns=ns)) == 1
    await vis.delete(ns, "run-01", T0 + 1000)
    await vis.upsert(info(1, status=S.COMPLETED, length=50_000, close=T0 + 5000, sa={"stage": "done"}, ns=ns))
    assert await list_all(vis, ns=ns) == []
    assert await list_all(vis, "stage = 'done'", ns=ns) == []


async def test_at_equal_history_length_the_later_upsert_wins_whole(vis: VisibilityStore) -> None:
    await vis.upsert(info(1, status=S.RUNNING, length=5, sa={"a": "x", "tags": ["p", "q"]}))
    await vis.upsert(info(1, "app:other", S.COMPLETED, length=5, close=T0 + 9000, sa={"b": "y"}))
    (got,) = await list_all(vis)
    assert (got.workflow_type, got.status, got.close_time_ms, got.search_attributes) == (
        "app:other", S.COMPLETED, T0 + 9000, {"b": "y"})
    assert await ids(vis, "a = 'x' OR tags = 'p'") == []
    assert await ids(vis, "b = 'y' AND CloseTime > 0") == ["wf-01"]


async def test_upserts_arriving_in_any_order_keep_the_longest_history(vis: VisibilityStore) -> None:
    records = [info(i % 5, status=S.COMPLETED if n == 9 else S.RUNNING, length=n, close=T0 + 60_000 if n == 9 else 0,
                    sa={"step": n}) for i in range(5) for n in range(1, 10)]
    random.Random(7).shuffle(records)
    await asyncio.gather(*(vis.upsert(r) for r in records))
    got = await list_all(vis)
    assert [(e.workflow_id, e.history_length, e.status, e.search_attributes) for e in got] == [
        (f"wf-{i:02d}", 9, S.COMPLETED, {"step": 9}) for i in reversed(range(5))]
    assert await vis.count("default", "step < 9 OR ExecutionStatus = 'Running'") == 0


async def test_many_upserts_at_once(vis: VisibilityStore) -> None:
    await asyncio.gather(*(vis.upsert(info(i, sa={"n": i})) for i in range(600)))  # more than one batch
    assert await vis.count("default", "n >= 0") == 600
    assert await vis.count("default", "n >= 300 AND n < 310") == 10


# ------------------------------------------------------------------ SQLite only

async def test_search_attribute_queries_use_the_index(store: SqliteStore) -> None:
    await SqliteVisibilityStore(store).upsert(info(1, sa={"customer": "ann"}))
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


# ------------------------------------------------------------------ Cassandra only

def admits(b: Branch, r: WorkflowExecutionInfo) -> bool:
    """Whether a run satisfies a pushdown branch: what Cassandra evaluates, restated in Python."""
    fields = {"status": S(r.status).value, "workflow_id": r.workflow_id, "workflow_type": r.workflow_type,
              "task_queue": r.task_queue, "run_id": r.run_id}

    def within(v: int | None, span: tuple[int | None, int | None]) -> bool:
        return v is not None and (span[0] is None or v >= span[0]) and (span[1] is None or v <= span[1])

    return (all(fields[c] == v for c, v in b.eq)
            and b.values <= sa_value_texts(r.search_attributes)
            and (b.close == (None, None) or within(r.close_time_ms if r.close_time_ms > 0 else None, b.close))
            and within(r.start_time_ms, b.start))


def test_pushdown_plans_are_necessary_and_exact_when_they_say_so() -> None:
    """No server: on 2000 generated queries, every run that matches satisfies a branch of
    the plan, and when the plan says it is exact, every run that satisfies a branch matches."""
    edges: list[tuple[S, int, int, dict[str, Any]]] = [
        (S.RUNNING, 10_000, 0, {"total": 2**53 + 1}), (S.FAILED, 10_000, T0 + 10_530, {"total": float(2**53)}),
        (S.COMPLETED, -1, 1, {"customer": "x" * 300}), (S.TIMED_OUT, 20_000, T0 + 10_531, {"tags": [0, -0.0]})]
    rows = dataset() + [info(60 + i, status=s, start=T0 + t, close=c, sa=sa) for i, (s, t, c, sa) in enumerate(edges)]
    rng = random.Random(5)
    pushed = exact_count = 0
    for _ in range(2000):
        query = _random_query(rng)
        where = parse(query).where
        branches, exact = plan(where)
        pushed += branches != [Branch()]
        exact_count += exact
        for r in rows:
            hit = any(admits(b, r) for b in branches)
            if matches(where, r):
                assert hit, (query, r.workflow_id, branches)
            elif exact:
                assert not hit, (query, r.workflow_id, branches)
    assert pushed > 700 and exact_count > 450, (pushed, exact_count)  # the plans narrow, often exactly


class CountingCql(Cql):
    """A Cql that records each request's text and how many rows it returned."""

    def __init__(self, session: Any) -> None:
        super().__init__(session)
        self.log: list[tuple[str, int]] = []

    async def execute(self, stmt: Any, params: Any = None, *args: Any, **kw: Any) -> list[Any]:
        rows = await super().execute(stmt, params, *args, **kw)
        self.log.append((str(stmt), len(rows)))
        return rows

    @property
    def requests(self) -> int:
        return len(self.log)

    def rows(self, kind: str = "") -> int:
        """Rows returned: all, or those of requests whose text starts `SELECT <kind>` on visibility_runs."""
        return sum(n for text, n in self.log if text.startswith(f"SELECT {kind}") and "visibility_runs" in text)


async def test_pushdown_reads_only_the_candidates(cassandra_loaded: CassandraVisibilityStore,
                                                  session_cql: Cql) -> None:
    """What the indexes answer is evaluated by Cassandra (only matching rows come back); what they
    cannot answer is read and filtered in Python. Ascending, the window's keys are read too."""
    counting = CountingCql(session_cql.session)
    vis = cassandra_store(counting)
    rows = dataset()
    pushed = ["WorkflowId = 'wf-20'", "ExecutionStatus = 'Failed' AND customer = 'ann'", "RunId = 'run-07'",
              "customer = 'ann' AND TaskQueue = 'q1'", "CloseTime >= '2026-11-21T10:00:15Z'", "total = 100",
              "StartTime BETWEEN 1795255204000 AND 1795255207999", "ExecutionStatus != 'Running' AND vip = true"]
    for query in [*pushed, "customer > 'b'", "tags = 'red' ORDER BY StartTime ASC"]:
        counting.log.clear()
        want = expected(rows, query)
        assert await ids(vis, query) == want, query
        candidates = counting.rows("start_time_ms, run_id, workflow_id")
        if query in pushed:
            assert candidates == len(want), (query, counting.log)
        elif "ASC" in query:
            assert (candidates, counting.rows("start_time_ms, run_id FROM")) == (len(want), 42), counting.log
        else:
            assert candidates == 42, (query, counting.log)


async def test_runs_in_many_buckets_page_correctly(cql: Cql) -> None:
    """Runs over 40 buckets with gaps, at the first and last millisecond of a bucket and sharing
    start times across runs: every page size, both orders, with and without indexed restrictions."""
    vis = cassandra_store(cql)
    rng = random.Random(11)
    rows: list[WorkflowExecutionInfo] = []
    for i in range(90):
        bucket = T0 + rng.choice([b for b in range(60) if b % 3 != 1]) * BUCKET_MS
        start = bucket + rng.choice([0, 1, BUCKET_MS // 2, BUCKET_MS - 1])
        status = rng.choice([S.RUNNING, S.COMPLETED, S.FAILED])
        rows.append(WorkflowExecutionInfo("default", f"w{i:03d}", f"r{rng.randrange(1000):03d}-{i}", "t", "q", status,
                                          start, start + 5 if status is not S.RUNNING else 0, 3,
                                          search_attributes={"k": rng.choice(["a", "b"])}))
    await asyncio.gather(*(vis.upsert(r) for r in rows))
    stored = await cql.execute(f"SELECT bucket FROM {KEYSPACE}.visibility_buckets WHERE namespace = ?", ["default"])
    assert [r.bucket for r in stored] == sorted({vis.bucket_of(r.start_time_ms) for r in rows}, reverse=True)
    assert len(stored) > 30
    mid = T0 + 30 * BUCKET_MS
    for query in ["", "ORDER BY StartTime ASC", "ExecutionStatus = 'Completed'", "k = 'a' ORDER BY StartTime ASC",
                  "ExecutionStatus != 'Running' AND k = 'b'",
                  f"StartTime >= {mid} AND StartTime < {mid + 9 * BUCKET_MS}",
                  f"StartTime <= {mid} AND k = 'a' ORDER BY StartTime ASC", f"CloseTime > {mid} OR k = 'b'"]:
        want = expected(rows, query)
        assert want, query
        for size in (1, 4, 1000) if query in ("", "ORDER BY StartTime ASC") else (4, 1000):
            assert [e.workflow_id for e in await list_all(vis, query, size)] == want, (query, size)
        assert await vis.count("default", query) == len(want), query
    assert await vis.count_by_status("default", "") == by_status(rows, "")


async def test_pages_do_bounded_work_and_resume_where_they_stopped(cql: Cql) -> None:
    """With a small scan budget a selective query returns short (even empty) pages whose tokens
    resume the scan, some between buckets; together they are exactly the reference result."""
    counting = CountingCql(cql.session)
    vis = cassandra_store(counting, page_scan_rows=6, page_requests=4, min_chunk=2, window=3)
    # 8 runs a bucket; the rare ones start at a bucket's first millisecond, where a page may stop
    # (the next one must not read them again)
    rows = [info(i, sa={"rare": i % 8 == 0, "n": i}, start=T0 + i * 500) for i in range(60)]
    await asyncio.gather(*(vis.upsert(r) for r in rows))
    for query, selective in [("rare = true AND n >= 0", True), ("rare = true ORDER BY StartTime ASC", True),
                             ("ExecutionStatus = 'Running' AND n < 5", True), ("n > 3 ORDER BY StartTime ASC", False)]:
        seen: list[str] = []
        token, pages, short, between = b"", 0, 0, 0
        while True:
            counting.log.clear()
            page = await vis.list(ListWorkflowsRequest(query=query, page_size=4, next_page_token=token))
            # the budget (4 requests, 10 rows: twice the page) plus what the last chunk took past it
            assert counting.requests <= 4 - 1 + 3, (query, counting.log)
            assert counting.rows() <= 10 - 1 + 10, (query, counting.log)
            seen += [e.workflow_id for e in page.executions]
            token, pages = page.next_page_token, pages + 1
            if not token:
                break
            short += len(page.executions) < 4
            between += codec.loads(base64.urlsafe_b64decode(token))[2] is None
        assert seen == expected(rows, query), query
        assert bool(short) == selective, (query, pages, short)
        if query.startswith("rare"):
            assert between, "a page stopped between buckets"


async def test_alternatives_merge_across_chunks(cql: Cql) -> None:
    """Dense buckets, reads of two or three rows: each alternative (branch) of a query fills its
    reads at a different place, and the merge must neither skip nor repeat a run."""
    vis = cassandra_store(cql, min_chunk=2, window=3)
    statuses = [S.RUNNING, S.COMPLETED, S.FAILED, S.CANCELED]
    rows = [info(i, ["a", "b", "c"][i % 3], statuses[i % 4], start=T0 + i * 200, close=0 if i % 4 == 0 else T0 + 9000,
                 sa={"c": "abcdefghijklmnopqrstuvwxyz"[i * 7 % 26]}) for i in range(40)]
    await asyncio.gather(*(vis.upsert(r) for r in rows))
    for query in ["(WorkflowType = 'a' OR ExecutionStatus = 'Failed') AND c > 'm'",
                  "(WorkflowType = 'a' OR ExecutionStatus = 'Failed') AND c > 'm' ORDER BY StartTime ASC",
                  "WorkflowType = 'a' OR ExecutionStatus = 'Failed'", "ExecutionStatus != 'Running' AND c > 'm'",
                  "ExecutionStatus != 'Running' AND c > 'm' ORDER BY StartTime ASC"]:
        want = expected(rows, query)
        assert want, query
        for size in (1, 2, 3):
            assert [e.workflow_id for e in await list_all(vis, query, size)] == want, (query, size)
        assert await vis.count("default", query) == len(want), query
        assert await vis.count_by_status("default", query) == by_status(rows, query), query
