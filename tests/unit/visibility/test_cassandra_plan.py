"""The parts of the Cassandra visibility store that need no server: the pushdown plan of a query,
the search attribute value texts the SAI index finds runs by, the write timestamps that keep an
upsert from going backwards, and the page token both stores share. (Agreement of the plan with
`legato.query.matches` on generated queries is in tests/integration/test_visibility_store.py.)"""

from __future__ import annotations

import pytest

from history.visibility_cassandra import (
    INT64_MAX,
    MAX_BRANCHES,
    MAX_VALUES,
    VISIBILITY_SCHEMA,
    VISIBILITY_TABLES,
    Branch,
    WriteClock,
    plan,
    sa_value_texts,
)
from history.visibility_common import decode_position, decode_token, encode_token
from legato.errors import InvalidArgument
from legato.query import parse

STATUSES = ["CANCELED", "COMPLETED", "CONTINUED_AS_NEW", "FAILED", "RUNNING", "TERMINATED", "TIMED_OUT"]


def plan_of(query: str) -> tuple[list[Branch], bool]:
    return plan(parse(query).where)


def statuses(branches: list[Branch]) -> list[str]:
    return sorted(v for b in branches for c, v in b.eq if c == "status")


def test_equalities_on_indexed_fields_are_pushed_down_exactly() -> None:
    branches, exact = plan_of("WorkflowType = 'a' AND TaskQueue = 'q' AND WorkflowId = 'w' AND RunId = 'r'")
    assert exact and branches == [Branch(eq=(("run_id", "r"), ("task_queue", "q"), ("workflow_id", "w"),
                                               ("workflow_type", "a")))]
    assert plan_of("") == ([Branch()], True)


def test_negations_of_status_and_start_time_are_pushed_down() -> None:
    branches, exact = plan_of("ExecutionStatus != 'Running'")
    assert exact and statuses(branches) == [s for s in STATUSES if s != "RUNNING"]
    branches, exact = plan_of("NOT ExecutionStatus IN ('Running', 'Failed', 'Canceled')")
    assert exact and statuses(branches) == ["COMPLETED", "CONTINUED_AS_NEW", "TERMINATED", "TIMED_OUT"]
    assert plan_of("NOT StartTime < 5") == ([Branch(start=(5, None))], True)
    assert plan_of("StartTime != 5") == ([Branch(start=(None, 4)), Branch(start=(6, None))], True)


def test_close_time_is_pushed_down_only_where_open_runs_cannot_match() -> None:
    """An open run has no close time: CloseTime comparisons only find closed runs (lo >= 1), and
    NOT CloseTime ... (which open runs satisfy) is left to Python."""
    assert plan_of("CloseTime < 10") == ([Branch(close=(1, 9))], True)
    assert plan_of("CloseTime != 5") == ([Branch(close=(1, 4)), Branch(close=(6, None))], True)
    assert plan_of("CloseTime > -3") == ([Branch(close=(1, None))], True)
    assert plan_of("NOT CloseTime = 5") == ([Branch()], False)
    assert plan_of("CloseTime < 0") == ([], True)


def test_search_attribute_equalities_use_the_value_set_and_ranges_are_left_to_python() -> None:
    (b,), exact = plan_of("customer = 'ann'")
    assert exact and b.values == frozenset(sa_value_texts({"customer": "ann"}))
    assert plan_of("total = 100") == plan_of("total = 100.0")
    assert plan_of("total = 100") != plan_of("total = '100'")
    for query in ("customer > 'b'", "customer != 'x'", "NOT customer = 'x'", "WorkflowId < 'x'"):
        assert plan_of(query) == ([Branch()], False), query


def test_or_becomes_branches_and_and_multiplies_them_out() -> None:
    branches, exact = plan_of("WorkflowType = 'a' AND (customer = 'x' OR vip = true)")
    assert exact and len(branches) == 2 and all(b.eq == (("workflow_type", "a"),) for b in branches)
    # an alternative that Cassandra cannot narrow makes the OR unrestricted
    assert plan_of("WorkflowType = 'a' OR customer > 'x'") == ([Branch()], False)
    # AND keeps what it can: the pushed part is still necessary
    assert plan_of("WorkflowType = 'a' AND customer > 'x'") == ([Branch(eq=(("workflow_type", "a"),))], False)


def test_contradictions_leave_nothing_to_read() -> None:
    assert plan_of("StartTime > 5 AND StartTime < 3") == ([], True)
    assert plan_of("ExecutionStatus = 'Running' AND ExecutionStatus = 'Failed'") == ([], True)
    assert plan_of(f"StartTime > {INT64_MAX}") == ([], True)
    branches, exact = plan_of("ExecutionStatus != 'Running' AND ExecutionStatus != 'Failed'")
    assert exact and len(branches) == 5


def test_too_many_branches_fall_back_to_python() -> None:
    many = " OR ".join(f"WorkflowId = 'w{i}'" for i in range(MAX_BRANCHES + 1))
    assert plan_of(many) == ([Branch()], False)
    # a conjunct that would multiply past the limit is dropped; the rest still narrows
    branches, exact = plan_of("ExecutionStatus != 'Running' AND WorkflowType IN ('a', 'b')")
    assert not exact and len(branches) == 6


def test_search_attribute_equalities_pushed_per_branch_are_bounded() -> None:
    """Each query shape is a prepared statement: a query cannot make arbitrarily many."""
    query = " AND ".join(f"a{i} = {i}" for i in range(MAX_VALUES + 3))
    (b,), exact = plan_of(query)
    assert len(b.values) == MAX_VALUES and not exact
    (b,), exact = plan_of(" AND ".join(f"a{i} = {i}" for i in range(MAX_VALUES)))
    assert len(b.values) == MAX_VALUES and exact


def test_value_texts_are_equal_for_equal_values_and_distinct_otherwise() -> None:
    same = [{"n": 100}, {"n": 100.0}, {"n": [100, "x"]}]
    assert all(sa_value_texts({"n": 100}) <= sa_value_texts(a) for a in same)
    assert sa_value_texts({"n": 0}) == sa_value_texts({"n": -0.0})
    assert sa_value_texts({"n": 2**53 + 1}) != sa_value_texts({"n": float(2**53)})
    assert sa_value_texts({"n": True}) != sa_value_texts({"n": 1})  # kinds differ
    assert sa_value_texts({"n": "1"}) != sa_value_texts({"n": 1})
    # the name's length is written: no name/value split is ambiguous
    assert sa_value_texts({"a=b": "c"}) != sa_value_texts({"a": "b=c"})
    assert sa_value_texts({"x": None, "y": {"k": 1}, "z": []}) == set()
    (long,) = sa_value_texts({"t": "x" * 5000})
    assert len(long.encode()) < 100 and long != next(iter(sa_value_texts({"t": "x" * 4999})))


def test_write_stamps_order_by_history_length_then_time() -> None:
    clock = WriteClock()
    first = clock.stamp(10)
    later_shorter = clock.stamp(9)
    later_same = clock.stamp(10)
    assert later_shorter < first < later_same
    assert clock.stamp(11) > later_same
    assert clock.stamp(10**9) > clock.stamp(2**20 - 2)  # past the bits: clamped, still the longest
    assert 0 < clock.stamp(10**9) <= INT64_MAX


def test_schema_is_formatted_per_keyspace() -> None:
    text = [s.format(keyspace="ks") for s in VISIBILITY_SCHEMA]
    assert all("ks." in t for t in text)
    assert sum("USING 'sai'" in t for t in text) == 7
    assert all(any(f"ks.{table} (" in t for t in text) for table in VISIBILITY_TABLES)


def test_page_tokens_round_trip_and_sqlite_tokens_must_name_a_run() -> None:
    fp = "abc"
    assert decode_position(encode_token(5, "r", fp), fp) == (5, "r")
    assert decode_position(encode_token(5, None, fp), fp) == (5, None)
    assert decode_token(encode_token(5, "r", fp), fp) == (5, "r")
    with pytest.raises(InvalidArgument, match="malformed next_page_token"):
        decode_token(encode_token(5, None, fp), fp)
    with pytest.raises(InvalidArgument, match="belongs to another query"):
        decode_position(encode_token(5, "r", fp), "other")
