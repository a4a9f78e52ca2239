"""The visibility query language: every operator and field, precedence, parentheses, the
shorthands, canonical text, and errors that name the position and what was expected."""

from __future__ import annotations

import pytest

from legato.api import WorkflowStatus
from legato.errors import InvalidArgument
from legato.query import (
    MAX_DEPTH,
    MAX_TERMS,
    And,
    Compare,
    Field,
    Not,
    Op,
    Or,
    OrderBy,
    Query,
    QueryError,
    SystemField,
    check_search_attributes,
    index_values,
    parse,
    parse_time,
    to_text,
)

WT = Field("WorkflowType", SystemField.WORKFLOW_TYPE)
WID = Field("WorkflowId", SystemField.WORKFLOW_ID)
STATUS = Field("ExecutionStatus", SystemField.EXECUTION_STATUS)
START = Field("StartTime", SystemField.START_TIME)
CLOSE = Field("CloseTime", SystemField.CLOSE_TIME)
T0 = 1_795_255_200_000  # 2026-11-21T10:00:00Z


def c(f: Field | str, op: str, value: object) -> Compare:
    return Compare(Field(f) if isinstance(f, str) else f, Op(op), value)  # type: ignore[arg-type]


def where(text: str) -> object:
    return parse(text).where


# ------------------------------------------------------------------ what parses

def test_empty_and_blank_queries_are_everything_newest_first() -> None:
    assert parse("") == parse("   \n\t") == Query(None, OrderBy(SystemField.START_TIME, True), None)


@pytest.mark.parametrize("op", ["=", "!=", "<", ">", "<=", ">="])
def test_every_operator_on_text_fields(op: str) -> None:
    for name, f in [("WorkflowId", WID), ("WorkflowType", WT), ("RunId", Field("RunId", SystemField.RUN_ID)),
                    ("TaskQueue", Field("TaskQueue", SystemField.TASK_QUEUE))]:
        assert where(f"{name} {op} 'x'") == c(f, op, "x")
        assert where(f"{name}{op}'x'") == c(f, op, "x")  # no spaces needed


def test_not_equal_has_two_spellings() -> None:
    assert where("WorkflowId <> 'a'") == where("WorkflowId != 'a'") == c(WID, "!=", "a")


@pytest.mark.parametrize(("text", "status"), [
    ("Running", WorkflowStatus.RUNNING), ("running", WorkflowStatus.RUNNING), ("RUNNING", WorkflowStatus.RUNNING),
    ("Completed", WorkflowStatus.COMPLETED), ("Failed", WorkflowStatus.FAILED), ("canceled", WorkflowStatus.CANCELED),
    ("Terminated", WorkflowStatus.TERMINATED), ("ContinuedAsNew", WorkflowStatus.CONTINUED_AS_NEW),
    ("CONTINUED_AS_NEW", WorkflowStatus.CONTINUED_AS_NEW), ("TimedOut", WorkflowStatus.TIMED_OUT),
    ("TIMED_OUT", WorkflowStatus.TIMED_OUT), ("timedout", WorkflowStatus.TIMED_OUT),
])
def test_execution_status_values(text: str, status: WorkflowStatus) -> None:
    assert where(f"ExecutionStatus = '{text}'") == c(STATUS, "=", status.value)
    assert where(f'ExecutionStatus != "{text}"') == c(STATUS, "!=", status.value)


@pytest.mark.parametrize(("literal", "ms"), [
    ("'2026-11-21T10:00:00Z'", T0),
    ("'2026-11-21T10:00:00.250Z'", T0 + 250),
    ("'2026-11-21T12:00:00+02:00'", T0),
    ("'2026-11-21T10:00:00'", T0),  # no offset: UTC
    ("'2026-11-21 10:00'", T0),
    ("'2026-11-21'", T0 - 10 * 3600 * 1000),
    (str(T0), T0),
    (f"'{T0}'", T0),
    ("0", 0),
])
@pytest.mark.parametrize("op", ["=", "!=", "<", ">", "<=", ">="])
def test_time_fields_take_iso_timestamps_or_milliseconds(literal: str, ms: int, op: str) -> None:
    assert where(f"StartTime {op} {literal}") == c(START, op, ms)
    assert where(f"CloseTime {op} {literal}") == c(CLOSE, op, ms)


def test_parse_time_refuses_what_is_not_a_time() -> None:
    assert parse_time("yesterday") is None
    assert parse_time(1.5) is None
    assert parse_time(True) is None
    assert parse_time(str(2**63)) is None


@pytest.mark.parametrize(("literal", "value"), [
    ("'gold'", "gold"), ('"gold"', "gold"), ("'it''s'", "it's"), ('"say ""hi"""', 'say "hi"'), ("''", ""),
    ("42", 42), ("-7", -7), ("2.5", 2.5), ("-0.5", -0.5), (".5", 0.5), ("1e3", 1000.0), ("1.5E-2", 0.015),
    ("true", True), ("TRUE", True), ("False", False),
    ("'ünïcödé ✓'", "ünïcödé ✓"),
])
def test_search_attribute_values(literal: str, value: object) -> None:
    assert where(f"customer = {literal}") == c("customer", "=", value)


@pytest.mark.parametrize("op", ["=", "!=", "<", ">", "<=", ">="])
def test_every_operator_on_search_attributes(op: str) -> None:
    assert where(f"total {op} 100") == c("total", op, 100)
    assert where(f"name {op} 'x'") == c("name", op, "x")


def test_search_attribute_name_forms() -> None:
    assert where("SearchAttributes.customer = 'a'") == where("customer = 'a'") == c("customer", "=", "a")
    assert where("searchattributes.WorkflowId = 'a'") == c("WorkflowId", "=", "a")  # not the system field
    assert where("`my attr-1` = 'a'") == c("my attr-1", "=", "a")
    assert where("`back``tick` = 1") == c("back`tick", "=", 1)
    assert where("`order` = 1") == where("SearchAttributes.order = 1") == c("order", "=", 1)
    assert where("_x9 = 1") == c("_x9", "=", 1)


def test_keywords_are_case_insensitive() -> None:
    assert parse("a = 1 and not b = 2 or c = 3 order by StartTime desc") == parse(
        "a = 1 AND NOT b = 2 OR c = 3 ORDER BY StartTime DESC")


def test_precedence_not_then_and_then_or() -> None:
    a, b, cc, d = (c(n, "=", 1) for n in "abcd")
    assert where("a = 1 OR b = 1 AND c = 1") == Or((a, And((b, cc))))
    assert where("a = 1 AND b = 1 OR c = 1") == Or((And((a, b)), cc))
    assert where("NOT a = 1 AND b = 1") == And((Not(a), b))
    assert where("NOT a = 1 OR b = 1") == Or((Not(a), b))
    assert where("a = 1 OR b = 1 OR c = 1 AND d = 1") == Or((a, b, And((cc, d))))


def test_parentheses_override_precedence() -> None:
    a, b, cc = (c(n, "=", 1) for n in "abc")
    assert where("(a = 1 OR b = 1) AND c = 1") == And((Or((a, b)), cc))
    assert where("a = 1 AND (b = 1 OR c = 1)") == And((a, Or((b, cc))))
    assert where("NOT (a = 1 AND b = 1)") == Not(And((a, b)))
    assert where("((((a = 1))))") == a
    assert where("(a = 1 AND b = 1) AND c = 1") == And((a, b, cc))  # same operator: flattened
    assert where("NOT NOT a = 1") == a


def test_in_and_between_are_expanded() -> None:
    assert where("ExecutionStatus IN ('Running', 'Failed')") == Or((c(STATUS, "=", "RUNNING"),
                                                                    c(STATUS, "=", "FAILED")))
    assert where("customer IN ('a')") == c("customer", "=", "a")
    assert where("WorkflowType NOT IN ('a', 'b')") == Not(Or((c(WT, "=", "a"), c(WT, "=", "b"))))
    assert where("StartTime BETWEEN '2026-11-21T10:00:00Z' AND 1795255300000") == And((
        c(START, ">=", T0), c(START, "<=", 1_795_255_300_000)))
    assert where("total NOT BETWEEN 1 AND 5 AND a = 1") == And((Not(And((c("total", ">=", 1), c("total", "<=", 5)))),
                                                                 c("a", "=", 1)))


def test_order_by_and_group_by() -> None:
    assert parse("ORDER BY StartTime DESC").order_by == OrderBy(SystemField.START_TIME, True)
    assert parse("ORDER BY StartTime ASC").order_by == OrderBy(SystemField.START_TIME, False)
    assert parse("ORDER BY StartTime").order_by == OrderBy(SystemField.START_TIME, False)  # SQL: ascending
    q = parse("WorkflowType = 'a' ORDER BY StartTime DESC")
    assert (q.where, q.order_by.descending) == (c(WT, "=", "a"), True)
    q = parse("ExecutionStatus != 'Running' GROUP BY ExecutionStatus")
    assert (q.where, q.group_by) == (c(STATUS, "!=", "RUNNING"), SystemField.EXECUTION_STATUS)
    assert parse("GROUP BY ExecutionStatus").where is None


@pytest.mark.parametrize("text", [
    "",
    "WorkflowType = 'a'",
    "a = 1 OR b = 'x''y' AND NOT c = true",
    "NOT (a = 1 OR b = 2) AND (c < 1.5 OR d >= -3)",
    "(a = 1 OR b = 2) AND NOT (c = 1 AND d = 2) ORDER BY StartTime ASC",
    "ExecutionStatus IN ('Running', 'TimedOut') GROUP BY ExecutionStatus",
    "StartTime > '2026-11-21T10:00:00Z' AND CloseTime <= 1800000000000 ORDER BY StartTime DESC",
    "`odd name` != 'v' AND SearchAttributes.order = 1 AND SearchAttributes.StartTime = 2 AND t = 1e300",
])
def test_canonical_text_parses_back_to_the_same_query(text: str) -> None:
    q = parse(text)
    assert parse(to_text(q)) == q
    assert str(q) == to_text(q)


def test_canonical_text_examples() -> None:
    assert to_text(parse("a=1 or (b=2 and c=3)")) == "a = 1 OR b = 2 AND c = 3"
    assert to_text(parse("(a=1 or b=2) and c=3")) == "(a = 1 OR b = 2) AND c = 3"
    assert to_text(parse("executionstatus = 'x'".replace("executionstatus", "ExecutionStatus").replace(
        "'x'", "'running'"))) == "ExecutionStatus = 'RUNNING'"
    assert to_text(parse("order by StartTime desc")) == ""  # the default order


def test_positions_are_kept_on_comparisons() -> None:
    q = parse("a = 1 AND  bb >= 2")
    assert isinstance(q.where, And)
    assert [x.pos for x in q.where.items if isinstance(x, Compare)] == [3, 15]


# ------------------------------------------------------------------ errors

ERRORS: list[tuple[str, int, str]] = [
    ("a", 2, "expected a comparison operator (=, !=, <, >, <=, >=, IN, BETWEEN) after a, found the end"),
    ("a =", 4, "expected a value ('text', a number, true or false) for a, found the end of the query"),
    ("a = b", 5, "expected a value ('text', a number, true or false) for a, found 'b'"),
    ("= 1", 1, "expected a field"),
    ("a = 1 b = 2", 7, "expected AND, OR, ORDER BY, GROUP BY or the end of the query, found 'b'"),
    ("a = 1 AND", 10, "expected a field"),
    ("a = 1 OR OR b = 2", 10, "expected a field"),
    ("(a = 1", 7, "expected ')' (to close the '(' at position 1), AND or OR, found the end of the query"),
    ("((a = 1) OR (b = 2)", 20, "expected ')' (to close the '(' at position 1)"),
    ("a = 1)", 6, "unbalanced ')'"),
    ("()", 2, "expected a field"),
    ("NOT", 4, "expected a field"),
    ("a = 'open", 5, "this string is not closed: expected a closing '"),
    ('a = "open', 5, "this string is not closed"),
    ("`open = 1", 1, "this name is not closed"),
    ("a ! 1", 3, "unexpected character '!'"),
    ("a = 1; DROP TABLE visibility", 6, "unexpected character ';'"),
    ("a = 12abc", 5, "malformed number"),
    ("a = -x", 5, "unexpected character '-'"),
    ("x LIKE 'a%'", 3, "expected a comparison operator (=, !=, <, >, <=, >=, IN, BETWEEN) after x, found 'LIKE'"),
    ("a NOT = 1", 7, "expected IN or BETWEEN after a NOT"),
    ("a IN 1", 6, "expected '(' and a list of values after a IN"),
    ("a IN ()", 7, "expected a value"),
    ("a IN (1 2)", 9, "expected ',' or ')' in the IN list"),
    ("a BETWEEN 1 5", 13, "expected AND between the two values of a BETWEEN"),
    ("ExecutionStatus > 'Running'", 17, "ExecutionStatus compares only with = and != (or IN), not >"),
    ("ExecutionStatus = 'Sleeping'", 19, "'Sleeping' is not an ExecutionStatus; use one of Running, Completed"),
    ("ExecutionStatus = 1", 19, "1 is not an ExecutionStatus"),
    ("WorkflowType = 5", 16, "WorkflowType takes a 'quoted text' value, found 5"),
    ("RunId = true", 9, "RunId takes a 'quoted text' value"),
    ("StartTime > 'yesterday'", 13, "StartTime takes a timestamp such as '2026-11-21T10:00:00Z' or Unix milliseconds"),
    ("CloseTime < 1.5", 13, "CloseTime takes a timestamp"),
    ("StartTime < '99999-01-01'", 13, "StartTime takes a timestamp"),
    ("flag > true", 6, "true and false compare only with = and != (search attribute flag)"),
    ("workflowtype = 'x'", 1, "unknown field 'workflowtype'; did you mean WorkflowType? (a search attribute with this "
                              "name is written SearchAttributes.workflowtype)"),
    ("a.b = 1", 1, "unknown field 'a.b': only SearchAttributes.<name> has a dot"),
    ("SearchAttributes.a.b = 1", 1, "unknown field"),
    ("a = 1 AND desc = 2", 11, "'desc' is a keyword; write a search attribute with that name as "
                               "SearchAttributes.desc or `desc`"),
    ("`` = 1", 1, "a search attribute name cannot be empty"),
    ("ORDER StartTime", 7, "expected BY after ORDER"),
    ("ORDER BY CloseTime DESC", 10, "cannot order by CloseTime: only ORDER BY StartTime [ASC|DESC] is supported"),
    ("ORDER BY StartTime DOWN", 20, "expected ASC, DESC or the end of the query, found 'DOWN'"),
    ("a = 1 ORDER BY StartTime DESC AND b = 2", 31, "expected the end of the query, found 'AND'"),
    ("GROUP BY WorkflowType", 10, "cannot group by WorkflowType: only GROUP BY ExecutionStatus is supported"),
    ("GROUP BY ExecutionStatus ORDER BY StartTime", 26, "expected the end of the query, found 'ORDER'"),
    ("ORDER BY StartTime x = 1", 20, "expected ASC, DESC or the end of the query, found 'x'"),
]


@pytest.mark.parametrize(("text", "position", "problem"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_the_position_and_what_was_expected(text: str, position: int, problem: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    e = info.value
    assert isinstance(e, InvalidArgument) and e.code == "INVALID_ARGUMENT" and e.reason == "InvalidQuery"
    assert problem in e.problem, e.problem
    assert e.position == position, e.message
    assert e.message.startswith(f"invalid query {text!r}: at position {position}: "), e.message


def test_nesting_and_size_are_bounded() -> None:
    ok = "(" * MAX_DEPTH + "a = 1" + ")" * MAX_DEPTH
    assert parse(ok).where == c("a", "=", 1)
    with pytest.raises(QueryError, match=f"more than {MAX_DEPTH} deep") as info:
        parse("(" * (MAX_DEPTH + 1) + "a = 1" + ")" * (MAX_DEPTH + 1))
    assert info.value.position == MAX_DEPTH + 1
    with pytest.raises(QueryError, match="more than 32 deep"):
        parse("NOT " * 40 + "a = 1")
    parse(" OR ".join(f"a = {i}" for i in range(MAX_TERMS)))
    with pytest.raises(QueryError, match=f"more than {MAX_TERMS} comparisons"):
        parse("a IN (" + ", ".join(str(i) for i in range(MAX_TERMS + 1)) + ")")


def test_a_query_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="query must be a string"):
        parse(5)  # type: ignore[arg-type]


def test_long_queries_are_shortened_in_messages() -> None:
    with pytest.raises(QueryError) as info:
        parse("a = 1 AND " * 50 + "b")
    assert len(info.value.message) < 400 and "..." in info.value.message


# ------------------------------------------------------------------ search attribute values

def test_index_values() -> None:
    assert index_values("x") == [("s", "x")]
    assert index_values(3) == [("n", 3)]
    assert index_values(2.5) == [("n", 2.5)]
    assert index_values(True) == [("b", 1)] and index_values(False) == [("b", 0)]
    assert index_values(["a", "b", "a", 1, True, None, {"x": 1}]) == [("s", "a"), ("s", "b"), ("n", 1), ("b", 1)]
    assert index_values(None) == index_values({"a": 1}) == index_values([[1]]) == []
    assert index_values(float("nan")) == index_values(float("inf")) == []
    assert index_values(2**70) == [("n", float(2**70))]


@pytest.mark.parametrize(("attrs", "problem"), [
    ({"a": "x", "b": 1, "c": 2.5, "d": True, "e": ["x", 1], "f": None, "g": []}, None),
    ([1], "must be a mapping"),
    ({"": 1}, "a name that is not a non-empty string"),
    ({"a" * 257: 1}, "longer than 256 characters"),
    ({"a\nb": 1}, "control character"),
    ({"a": {"nested": 1}}, "search_attributes.a: a search attribute value must be text, a number, true/false or "
                           "a list of those, got dict"),
    ({"a": [[1]]}, "got list"),
    ({"a": float("nan")}, "got float"),
])
def test_check_search_attributes(attrs: object, problem: str | None) -> None:
    got = check_search_attributes(attrs)
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem in got
