"""A fuzz test of the visibility query language (Hypothesis, seeded, bounded): whatever text a
client sends as a query, parsing either succeeds or raises InvalidArgument (never another
exception); a query that parses prints back to text that parses to the same query, is evaluated
by `matches`, compiles to SQL that SQLite runs, and plans for Cassandra, all without an error.

(The same queries travel over the gRPC API in tests/integration/test_fuzz_api.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from history.store.sqlite import _SCHEMA
from history.visibility import compile_where
from history.visibility_cassandra import plan
from legato.api import WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument
from legato.query import Query, matches, parse, to_text

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

FIELDS = ["WorkflowId", "WorkflowType", "RunId", "TaskQueue", "ExecutionStatus", "StartTime", "CloseTime",
          "CustomKeyword", "CustomInt", "flag", "SearchAttributes.x", "`odd name`", "`a``b`", "Unknown.x",
          "workflowid", "``", "SearchAttributes."]
VALUES = ["'x'", "'Running'", "'completed'", "'CONTINUED_AS_NEW'", "'bogus'", "'2026-11-21T10:00:00Z'",
          "'2026-11-21'", "'9999-12-31T23:59:59Z'", "'0001-01-01'", "'not a time'", "0", "-1", "1.5", "-0.0",
          str(2**63), str(-(2**63) - 1), str(2**64), "1e308", "1e400", "-1e-400", "true", "FALSE", "'it''s'",
          '"dq"', "''", "'" + "v" * 300 + "'", "9" * 400, "9" * 5000, ".5", "5.", "0x10", "NaN", "'\u0000'",
          "'é漢字🙂'", "1_000"]
OPS = ["=", "!=", "<>", "<", ">", "<=", ">=", "==", "LIKE", "IS", "=<"]
TAILS = ["", " ORDER BY StartTime", " ORDER BY StartTime DESC", " order by StartTime asc", " GROUP BY ExecutionStatus",
         " ORDER BY RunId", " GROUP BY WorkflowId", " ORDER BY", " GROUP", " ORDER BY StartTime DESC DESC"]


@st.composite
def comparison(draw: st.DrawFn) -> str:
    f = draw(st.sampled_from(FIELDS))
    kind = draw(st.sampled_from(["op", "op", "op", "in", "not in", "between", "not between"]))
    if kind in ("in", "not in"):
        values = draw(st.lists(st.sampled_from(VALUES), max_size=4))
        return f"{f} {kind.upper()} ({', '.join(values)})"
    if kind.endswith("between"):
        return f"{f} {kind.upper()} {draw(st.sampled_from(VALUES))} AND {draw(st.sampled_from(VALUES))}"
    return f"{f} {draw(st.sampled_from(OPS))} {draw(st.sampled_from(VALUES))}"


def combine(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(inner, st.sampled_from([" AND ", " OR ", " and ", " Or ", " ", " AND NOT ", ""]), inner)
        .map("".join),
        inner.map(lambda q: f"({q})"), inner.map(lambda q: f"NOT {q}"), inner.map(lambda q: f"({q}"),
    )


grammatical = st.tuples(st.recursive(comparison(), combine, max_leaves=12), st.sampled_from(TAILS)).map("".join)
# a grammatical query with damage: a character dropped, added or changed
damaged = st.tuples(grammatical, st.integers(0, 10_000), st.sampled_from(list("()'\"`=<>!,. \\x0-"))).map(
    lambda t: t[0][:t[1] % (len(t[0]) + 1)] + t[2] + t[0][t[1] % (len(t[0]) + 1) + 1:])
anything = st.text(alphabet=st.characters(codec="utf-8"), max_size=200)

INFOS = [
    WorkflowExecutionInfo("default", "wf-1", "run-1", "app:order", "q", WorkflowStatus.RUNNING, 1_795_255_200_000,
                          search_attributes={"CustomKeyword": "x", "CustomInt": 3, "flag": True, "x": [1, "a"]}),
    WorkflowExecutionInfo("default", "wf-2", "run-2", "app:x", "q", WorkflowStatus.COMPLETED, 0, 5,
                          search_attributes={"CustomInt": 2**64, "odd name": -1.5, "a`b": None}),
]


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(":memory:")
    c.executescript(_SCHEMA)
    try:
        yield c
    finally:
        c.close()


def check(text: str, db: sqlite3.Connection) -> None:
    """Everything a query goes through, for any text."""
    try:
        q = parse(text)
    except InvalidArgument as e:
        assert e.message  # refused with a message: fine (any other exception fails the test)
        return
    assert isinstance(q, Query)
    assert parse(to_text(q)) == q
    for info in INFOS:
        matches(q.where, info)
    where, args = compile_where(q.where, "default")
    db.execute(f"SELECT COUNT(*) FROM visibility WHERE {where}", args).fetchone()
    plan(q.where)


@FUZZ
@given(grammatical)
def test_grammatical_queries(db: sqlite3.Connection, text: str) -> None:
    check(text, db)


@FUZZ
@given(damaged)
def test_damaged_queries(db: sqlite3.Connection, text: str) -> None:
    check(text, db)


@FUZZ
@given(anything)
def test_any_text(db: sqlite3.Connection, text: str) -> None:
    check(text, db)


def test_extremes(db: sqlite3.Connection) -> None:
    for text in ["(" * 200 + "WorkflowId='x'" + ")" * 200, "NOT " * 300 + "WorkflowId='x'",
                 " OR ".join(["CustomInt = 1"] * 600), "WorkflowId IN (" + ",".join(["'x'"] * 2000) + ")",
                 "'" * 9999, "`" + "a" * 10_000, "CustomInt = " + "9" * 9000, "x = '" + "\u0000" * 100 + "'"]:
        check(text, db)
