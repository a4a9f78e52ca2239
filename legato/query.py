"""The visibility query language: what `legato workflow list --query` and `count --query` take.

A query is parsed into a small AST (`Query`) that no store's syntax leaks into: the SQLite
visibility store compiles it to parameterised SQL, a Cassandra store can compile the same tree
to its own statements, and `matches` evaluates it in memory (the reference semantics, and a
fallback filter for a store that can push only part of a query down).

Grammar (keywords and the values true/false are case-insensitive; field names are not)::

    query      := [ expr ] [ ORDER BY StartTime [ ASC | DESC ] | GROUP BY ExecutionStatus ]
    expr       := term { OR term }
    term       := factor { AND factor }
    factor     := NOT factor | "(" expr ")" | comparison
    comparison := field op value
                | field [ NOT ] IN "(" value { "," value } ")"
                | field [ NOT ] BETWEEN value AND value
    op         := "=" | "!=" | "<>" | "<" | ">" | "<=" | ">="
    field      := name | SearchAttributes.name | `any name`
    value      := 'text' | "text" | number | true | false

`NOT` binds tighter than `AND`, which binds tighter than `OR`. Quotes inside a string are
doubled (`'it''s'`); a backquoted name doubles its backquotes. `IN` and `BETWEEN` are shorthands
the parser expands (`x IN (a, b)` is `x = a OR x = b`; `x BETWEEN a AND b` is `x >= a AND x <= b`),
so a store never sees them.

Fields:

========================= ============================================== ===========================
field                     values                                         operators
========================= ============================================== ===========================
WorkflowId, WorkflowType, 'text'                                         all (text order)
RunId, TaskQueue
ExecutionStatus           Running, Completed, Failed, Canceled,          = !=
                          Terminated, ContinuedAsNew, TimedOut (any
                          case; also RUNNING, CONTINUED_AS_NEW, ...)
StartTime, CloseTime      '2026-11-21T10:00:00Z' (ISO-8601; no offset    all
                          means UTC; a date alone is its midnight UTC)
                          or Unix milliseconds (a number)
any other name            a search attribute: 'text', number, true/false all (true/false: = !=)
========================= ============================================== ===========================

Semantics (what every store must implement; `matches` is the reference):

* A comparison on a search attribute is true when the run has that attribute with a value of
  the literal's type (text, number or boolean; integers and decimals are both numbers) that
  satisfies it. A run without the attribute, or with a value of another type, does not satisfy
  it, whatever the operator: `flag != true` does not match a run that has no `flag`. A list
  value satisfies a comparison when one of its elements does (as Temporal's KeywordList).
  Values of other types (objects, nested lists, null) are kept and shown but never match.
* `CloseTime` of an open run is absent: every comparison on it is false for a running workflow.
* `NOT` is plain negation: `NOT flag = true` matches runs without `flag` as well.
* Text compares by Unicode code point (byte order of UTF-8).

What a store must support: every comparison above, `AND`, `OR` and `NOT` nested in any way, and
`ORDER BY StartTime DESC`, which is also the order without ORDER BY (newest first, ties broken by
run id descending; as in SQL, `ORDER BY StartTime` alone is ascending). `ORDER BY StartTime ASC`
is optional (SQLite supports it; a store without it refuses with
InvalidArgument). `GROUP BY ExecutionStatus` is only for counting (`count_by_status`).
A store that can evaluate only part of a filter natively may fetch candidates with that part and
keep those for which `matches(query.where, info)` is true.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from enum import StrEnum
from typing import Any

from legato.api import WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument

__all__ = [
    "MAX_DEPTH",
    "MAX_TERMS",
    "And",
    "Compare",
    "Expr",
    "Field",
    "Not",
    "Op",
    "Or",
    "OrderBy",
    "Query",
    "QueryError",
    "SystemField",
    "check_search_attributes",
    "fingerprint",
    "index_values",
    "literal_index_value",
    "matches",
    "parse",
    "parse_time",
    "to_text",
]

MAX_DEPTH = 32  # nesting of parentheses and NOTs
MAX_TERMS = 500  # comparisons in one query (after IN and BETWEEN are expanded)
MAX_SEARCH_ATTRIBUTE_NAME = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class Op(StrEnum):
    EQ = "="
    NE = "!="
    LT = "<"
    GT = ">"
    LE = "<="
    GE = ">="


class SystemField(StrEnum):
    WORKFLOW_ID = "WorkflowId"
    WORKFLOW_TYPE = "WorkflowType"
    RUN_ID = "RunId"
    EXECUTION_STATUS = "ExecutionStatus"
    TASK_QUEUE = "TaskQueue"
    START_TIME = "StartTime"
    CLOSE_TIME = "CloseTime"


TEXT_FIELDS = frozenset({SystemField.WORKFLOW_ID, SystemField.WORKFLOW_TYPE, SystemField.RUN_ID,
                         SystemField.TASK_QUEUE})
TIME_FIELDS = frozenset({SystemField.START_TIME, SystemField.CLOSE_TIME})
STATUS_NAMES = {
    WorkflowStatus.RUNNING: "Running", WorkflowStatus.COMPLETED: "Completed", WorkflowStatus.FAILED: "Failed",
    WorkflowStatus.CANCELED: "Canceled", WorkflowStatus.TERMINATED: "Terminated",
    WorkflowStatus.CONTINUED_AS_NEW: "ContinuedAsNew", WorkflowStatus.TIMED_OUT: "TimedOut",
}
_STATUS_BY_KEY = {s.value.replace("_", ""): s for s in WorkflowStatus}

Value = str | int | float | bool


@dataclass(frozen=True, slots=True)
class Field:
    """A system field (`system` set, `name` its query name) or a search attribute (`system` None)."""

    name: str
    system: SystemField | None = None

    @property
    def is_search_attribute(self) -> bool:
        return self.system is None


@dataclass(frozen=True, slots=True)
class Compare:
    """`field op value`. Values are normalised: ExecutionStatus holds the `WorkflowStatus` value
    ("RUNNING"), StartTime/CloseTime hold Unix milliseconds (int)."""

    field: Field
    op: Op
    value: Value
    pos: int = dc_field(default=0, compare=False)  # 1-based position in the query text


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Expr, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Expr


Expr = Compare | And | Or | Not


@dataclass(frozen=True, slots=True)
class OrderBy:
    field: SystemField = SystemField.START_TIME
    descending: bool = True


@dataclass(frozen=True, slots=True)
class Query:
    where: Expr | None = None  # None: every run of the namespace
    order_by: OrderBy = OrderBy()
    group_by: SystemField | None = None  # only ExecutionStatus, only for counting

    def __str__(self) -> str:
        return to_text(self)


class QueryError(InvalidArgument):
    """A query that does not parse, with the 1-based position of the problem and what was expected."""

    def __init__(self, query: str, position: int, problem: str) -> None:
        shown = query if len(query) <= 200 else query[:200] + "..."
        super().__init__(f"invalid query {shown!r}: at position {position}: {problem}", reason="InvalidQuery")
        self.query = query
        self.position = position
        self.problem = problem


# ---------------------------------------------------------------- tokens

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "BETWEEN", "ORDER", "GROUP", "BY", "ASC", "DESC", "TRUE", "FALSE"})
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<bq>`(?:[^`]|``)*`)
  | (?P<sq>'(?:[^']|'')*')
  | (?P<dq>"(?:[^"]|"")*")
  | (?P<num>-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),])
""", re.VERBOSE)


@dataclass(slots=True)
class _Tok:
    kind: str  # kw | name | qname | str | num | op | ( | ) | , | end
    text: str  # as written
    pos: int  # 1-based
    value: Any = None  # kw: upper-case keyword; name/qname: the name; str: the text; num: int/float; op: Op


def _tokens(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    i = 0
    n = len(text)
    while i < n:
        m = _TOKEN.match(text, i)
        if m is None:
            ch = text[i]
            if ch in "'\"`":
                what = {"'": "string", '"': "string", "`": "name"}[ch]
                raise QueryError(text, i + 1, f"this {what} is not closed: expected a closing {ch}")
            raise QueryError(text, i + 1, f"unexpected character {ch!r}; expected a field, an operator "
                                          "(=, !=, <, >, <=, >=), a value, AND, OR, NOT or parentheses")
        kind = m.lastgroup or ""
        raw = m.group()
        pos = i + 1
        i = m.end()
        if kind == "ws":
            continue
        if kind == "name":
            up = raw.upper()
            if up in _KEYWORDS:
                out.append(_Tok("kw", raw, pos, up))
            else:
                out.append(_Tok("name", raw, pos, raw))
        elif kind == "bq":
            out.append(_Tok("qname", raw, pos, raw[1:-1].replace("``", "`")))
        elif kind == "sq":
            out.append(_Tok("str", raw, pos, raw[1:-1].replace("''", "'")))
        elif kind == "dq":
            out.append(_Tok("str", raw, pos, raw[1:-1].replace('""', '"')))
        elif kind == "num":
            if i < n and (text[i].isalnum() or text[i] == "_"):  # 12abc
                raise QueryError(text, pos, f"malformed number starting {raw!r}")
            num: int | float
            if re.fullmatch(r"-?\d+", raw):
                # an integer a float cannot hold (a search attribute number is one) is out of range;
                # so is one too long for int() (4,300 digits)
                num = int(raw) if len(raw) <= _MAX_INT_DIGITS else 2**1024
                if not _fits_float(num):
                    raise QueryError(text, pos, f"the number {_cut(raw)} is out of range")
            else:
                num = float(raw)
                if not math.isfinite(num):
                    raise QueryError(text, pos, f"the number {_cut(raw)} is out of range")
            out.append(_Tok("num", raw, pos, num))
        elif kind == "op":
            out.append(_Tok("op", raw, pos, Op.NE if raw == "<>" else Op(raw)))
        else:
            out.append(_Tok(raw, raw, pos))
    out.append(_Tok("end", "", n + 1))
    return out


def _show(t: _Tok) -> str:
    if t.kind == "end":
        return "the end of the query"
    text = t.text if len(t.text) <= 40 else t.text[:40] + "..."
    return text if t.kind in ("str", "num") else repr(text)  # a string shows its own quotes


# ---------------------------------------------------------------- parser

_VALUE = "a value ('text', a number, true or false)"
_OPERATORS = "a comparison operator (=, !=, <, >, <=, >=, IN, BETWEEN)"
_SYSTEM_BY_LOWER = {f.value.lower(): f for f in SystemField}
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokens(text)
        self.i = 0
        self.terms = 0

    # -------------------------------------------------------- helpers

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        t = self.toks[self.i]
        if t.kind != "end":
            self.i += 1
        return t

    def is_kw(self, *words: str) -> bool:
        return self.tok.kind == "kw" and self.tok.value in words

    def fail(self, expected: str, t: _Tok | None = None) -> QueryError:
        t = t or self.tok
        return QueryError(self.text, t.pos, f"expected {expected}, found {_show(t)}")

    def error(self, pos: int, problem: str) -> QueryError:
        return QueryError(self.text, pos, problem)

    def expect_kw(self, word: str, expected: str) -> _Tok:
        if not self.is_kw(word):
            raise self.fail(expected)
        return self.next()

    # -------------------------------------------------------- grammar

    def query(self) -> Query:
        where: Expr | None = None
        if not self.is_kw("ORDER", "GROUP") and self.tok.kind != "end":
            where = self.expr(0)
        order = OrderBy()
        group: SystemField | None = None
        clause = self.is_kw("ORDER", "GROUP")
        if self.is_kw("ORDER"):
            self.next()
            self.expect_kw("BY", "BY after ORDER")
            f = self.field_name(what="a field to order by (StartTime)")
            if f.system is not SystemField.START_TIME:
                raise self.error(self.toks[self.i - 1].pos, f"cannot order by {f.name}: only ORDER BY StartTime "
                                                            "[ASC|DESC] is supported")
            desc = False  # SQL's default
            if self.is_kw("ASC", "DESC"):
                desc = self.next().value == "DESC"
            order = OrderBy(SystemField.START_TIME, desc)
        elif self.is_kw("GROUP"):
            self.next()
            self.expect_kw("BY", "BY after GROUP")
            f = self.field_name(what="a field to group by (ExecutionStatus)")
            if f.system is not SystemField.EXECUTION_STATUS:
                raise self.error(self.toks[self.i - 1].pos, f"cannot group by {f.name}: only GROUP BY "
                                                            "ExecutionStatus is supported")
            group = SystemField.EXECUTION_STATUS
        if self.tok.kind != "end":
            if self.tok.kind == ")":
                raise self.error(self.tok.pos, "unbalanced ')': there is no '(' to close")
            if clause:
                after_field = self.toks[self.i - 1].kind == "name" and group is None  # ORDER BY StartTime ...
                raise self.fail("ASC, DESC or the end of the query" if after_field else "the end of the query")
            if where is None:
                raise self.fail("a comparison, NOT, '(', ORDER BY or GROUP BY")
            raise self.fail("AND, OR, ORDER BY, GROUP BY or the end of the query")
        return Query(where, order, group)

    def expr(self, depth: int) -> Expr:
        items = [self.term(depth)]
        while self.is_kw("OR"):
            self.next()
            items.append(self.term(depth))
        return _join(Or, items)

    def term(self, depth: int) -> Expr:
        items = [self.factor(depth)]
        while self.is_kw("AND"):
            self.next()
            items.append(self.factor(depth))
        return _join(And, items)

    def factor(self, depth: int) -> Expr:
        t = self.tok
        if self.is_kw("NOT") or t.kind == "(":
            if depth >= MAX_DEPTH:
                raise self.error(t.pos, f"the query nests parentheses and NOTs more than {MAX_DEPTH} deep")
        if self.is_kw("NOT"):
            self.next()
            inner = self.factor(depth + 1)
            return inner.item if isinstance(inner, Not) else Not(inner)
        if t.kind == "(":
            self.next()
            inner = self.expr(depth + 1)
            if self.tok.kind != ")":
                raise self.fail(f"')' (to close the '(' at position {t.pos}), AND or OR")
            self.next()
            return inner
        return self.comparison()

    def field_name(self, what: str = "a field (WorkflowId, WorkflowType, RunId, ExecutionStatus, TaskQueue, "
                                      "StartTime, CloseTime or a search attribute), NOT or '('") -> Field:
        t = self.tok
        if t.kind == "qname":
            self.next()
            if not t.value:
                raise self.error(t.pos, "a search attribute name cannot be empty")
            return Field(t.value)
        if t.kind != "name":
            if t.kind == "kw" and t.value not in ("AND", "OR", "NOT", "ORDER", "GROUP", "BY"):
                raise self.error(t.pos, f"{t.text!r} is a keyword; write a search attribute with that name as "
                                        f"SearchAttributes.{t.text} or `{t.text}`")
            raise self.fail(what)
        self.next()
        name: str = t.value
        if "." in name:
            prefix, _, rest = name.partition(".")
            if prefix.lower() != "searchattributes" or "." in rest:
                raise self.error(t.pos, f"unknown field {name!r}: only SearchAttributes.<name> has a dot")
            return Field(rest)
        system = _SYSTEM_BY_LOWER.get(name.lower())
        if system is not None:
            if system.value != name:
                raise self.error(t.pos, f"unknown field {name!r}; did you mean {system.value}? (a search attribute "
                                        f"with this name is written SearchAttributes.{name})")
            return Field(system.value, system)
        return Field(name)

    def comparison(self) -> Expr:
        f = self.field_name()
        negate = False
        if self.is_kw("NOT"):
            self.next()
            negate = True
            if not self.is_kw("IN", "BETWEEN"):
                raise self.fail(f"IN or BETWEEN after {f.name} NOT")
        t = self.tok
        expr: Expr
        if self.is_kw("IN"):
            self.next()
            if self.tok.kind != "(":
                raise self.fail(f"'(' and a list of values after {f.name} IN")
            self.next()
            items: list[Expr] = []
            while True:
                items.append(self.compare(f, Op.EQ, t.pos))
                if self.tok.kind == ",":
                    self.next()
                    continue
                if self.tok.kind == ")":
                    self.next()
                    break
                raise self.fail("',' or ')' in the IN list")
            expr = _join(Or, items)
        elif self.is_kw("BETWEEN"):
            self.next()
            low = self.compare(f, Op.GE, t.pos)
            self.expect_kw("AND", f"AND between the two values of {f.name} BETWEEN")
            high = self.compare(f, Op.LE, t.pos)
            expr = And((low, high))
        elif t.kind == "op":
            self.next()
            expr = self.compare(f, t.value, t.pos)
        else:
            raise self.fail(f"{_OPERATORS} after {f.name}")
        return Not(expr) if negate else expr

    def compare(self, f: Field, op: Op, op_pos: int) -> Compare:
        t = self.tok
        if t.kind not in ("str", "num") and not self.is_kw("TRUE", "FALSE"):
            raise self.fail(f"{_VALUE} for {f.name}")
        self.next()
        raw: Value = (t.value == "TRUE") if t.kind == "kw" else t.value
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise self.error(t.pos, f"the query has more than {MAX_TERMS} comparisons")
        return Compare(f, op, self.value_for(f, op, op_pos, raw, t), op_pos)

    def value_for(self, f: Field, op: Op, op_pos: int, raw: Value, t: _Tok) -> Value:
        s = f.system
        if s is None:
            if isinstance(raw, bool) and op not in (Op.EQ, Op.NE):
                raise self.error(op_pos, f"true and false compare only with = and != (search attribute {f.name})")
            return raw
        if s in TEXT_FIELDS:
            if not isinstance(raw, str):
                raise self.error(t.pos, f"{s.value} takes a 'quoted text' value, found {_show(t)}")
            return raw
        if s is SystemField.EXECUTION_STATUS:
            if op not in (Op.EQ, Op.NE):
                raise self.error(op_pos, f"ExecutionStatus compares only with = and != (or IN), not {op.value}")
            status = _STATUS_BY_KEY.get(raw.replace("_", "").upper()) if isinstance(raw, str) else None
            if status is None:
                raise self.error(t.pos, f"{_show(t)} is not an ExecutionStatus; use one of "
                                        + ", ".join(STATUS_NAMES.values()))
            return status.value
        # StartTime / CloseTime
        ms = parse_time(raw)
        if ms is None:
            raise self.error(t.pos, f"{s.value} takes a timestamp such as '2026-11-21T10:00:00Z' or Unix "
                                    f"milliseconds, found {_show(t)}")
        return ms


def _join(cls: type[And] | type[Or], items: list[Expr]) -> Expr:
    if len(items) == 1:
        return items[0]
    flat: list[Expr] = []
    for it in items:
        if isinstance(it, cls):
            flat.extend(it.items)
        else:
            flat.append(it)
    return cls(tuple(flat))


def parse_time(value: Value) -> int | None:
    """Unix milliseconds from a timestamp value: an integer (milliseconds), a text of digits, or
    ISO-8601 text ('2026-11-21T10:00:00Z', '2026-11-21T10:00:00.250+02:00', '2026-11-21'; no
    offset means UTC). None if it is none of those or out of range."""
    ms: int
    if isinstance(value, bool) or isinstance(value, float):
        return None
    if isinstance(value, int):
        ms = value
    else:
        text = value.strip()
        if re.fullmatch(r"-?\d+", text):
            ms = int(text)
        else:
            try:
                when = dt.datetime.fromisoformat(text)
            except ValueError:
                return None
            if when.tzinfo is None:
                when = when.replace(tzinfo=dt.UTC)
            ms = (when - _EPOCH) // dt.timedelta(milliseconds=1)
    return ms if INT64_MIN <= ms <= INT64_MAX else None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse(text: str) -> Query:
    """Parse a visibility query; an empty or blank text is every run, newest first.
    Raises `QueryError` (an `InvalidArgument`) naming the position and what was expected."""
    if not isinstance(text, str):
        raise InvalidArgument(f"query must be a string, got {type(text).__name__}")
    return _Parser(text).query()


# ---------------------------------------------------------------- back to text

def _literal(v: Value) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    return "'" + v.replace("'", "''") + "'"


def _field_text(f: Field) -> str:
    if f.system is not None:
        return f.system.value
    if _NAME_RE.match(f.name) and f.name.upper() not in _KEYWORDS and f.name.lower() not in _SYSTEM_BY_LOWER:
        return f.name
    return "`" + f.name.replace("`", "``") + "`"


def _expr_text(e: Expr, parent: type | None = None) -> str:
    if isinstance(e, Compare):
        return f"{_field_text(e.field)} {e.op.value} {_literal(e.value)}"
    if isinstance(e, Not):
        inner = _expr_text(e.item, Not)
        return f"NOT {inner}"
    sep = " AND " if isinstance(e, And) else " OR "
    body = sep.join(_expr_text(i, type(e)) for i in e.items)
    # AND inside OR needs no parentheses (precedence), everything else nested does.
    return body if parent is None or (parent is Or and isinstance(e, And)) else f"({body})"


def to_text(q: Query | Expr) -> str:
    """The canonical text of a query: `parse(to_text(q)) == q`."""
    if not isinstance(q, Query):
        return _expr_text(q)
    parts = [] if q.where is None else [_expr_text(q.where)]
    if q.group_by is not None:
        parts.append(f"GROUP BY {q.group_by.value}")
    elif q.order_by != OrderBy():
        parts.append(f"ORDER BY {q.order_by.field.value} {'DESC' if q.order_by.descending else 'ASC'}")
    return " ".join(parts)


def fingerprint(namespace: str, q: Query) -> str:
    """A short digest of a namespace and a query's meaning, e.g. to bind page tokens to it."""
    return hashlib.sha256(f"{namespace}\n{to_text(q)}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------- search attribute values

_MAX_INT_DIGITS = 400  # more is beyond any float (1.8e308 has 309 digits)


def _fits_float(v: int) -> bool:
    """Whether a number can be compared as a float (every search attribute number can)."""
    try:
        float(v)
    except OverflowError:
        return False
    return True


def _cut(raw: str) -> str:
    return raw if len(raw) <= 40 else f"{raw[:20]}... ({len(raw)} digits)"


def _kind(v: object) -> str | None:
    """'b' boolean, 'n' number, 's' text; None: not indexable."""
    if isinstance(v, bool):
        return "b"
    if isinstance(v, int):
        return "n" if _fits_float(v) else None
    if isinstance(v, float):
        return "n" if math.isfinite(v) else None
    if isinstance(v, str):
        return "s"
    return None


def index_values(value: object) -> list[tuple[str, str | int | float]]:
    """The (kind, value) pairs a search attribute value is found by: one for a text, number or
    boolean (stored as 0/1), one per such element of a list; none for anything else. Integers
    outside 64 bits become decimals."""
    out: list[tuple[str, str | int | float]] = []
    for v in (value if isinstance(value, list) else [value]):
        k = _kind(v)
        if k is None:
            continue
        item: str | int | float
        if isinstance(v, bool):
            item = int(v)
        elif isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:
            item = float(v)
        elif isinstance(v, str | int | float):
            item = v
        else:  # pragma: no cover - _kind returned None for it
            continue
        if (k, item) not in out:
            out.append((k, item))
    return out


def literal_index_value(v: Value) -> tuple[str, str | int | float]:
    """A comparison literal as the (kind, value) pair it is compared with."""
    pairs = index_values(v)
    assert pairs, v
    return pairs[0]


def check_search_attributes(attrs: object, where: str = "search_attributes") -> str | None:
    """What is wrong with a search attributes mapping (None: nothing). Names are non-empty text
    of at most 256 characters; values are text, numbers, booleans, lists of those, or null."""
    if not isinstance(attrs, dict):
        return f"{where} must be a mapping, got {type(attrs).__name__}"
    for name, v in attrs.items():
        if not isinstance(name, str) or not name:
            return f"{where} has a name that is not a non-empty string: {name!r}"
        if len(name) > MAX_SEARCH_ATTRIBUTE_NAME:
            return f"{where}: the name {name[:40]!r}... is longer than {MAX_SEARCH_ATTRIBUTE_NAME} characters"
        if any(ord(ch) < 32 for ch in name):
            return f"{where}: the name {name!r} has a control character"
        ok = v is None or _kind(v) is not None or (isinstance(v, list) and all(_kind(x) is not None for x in v))
        if any(isinstance(x, int) and not isinstance(x, bool) and not _fits_float(x)
               for x in (v if isinstance(v, list) else [v])):
            return f"{where}.{name}: a number is out of range (search attribute numbers are at most ±1.8e308)"
        if not ok:
            return (f"{where}.{name}: a search attribute value must be text, a number, true/false or a list "
                    f"of those, got {type(v).__name__}")
    return None


# ---------------------------------------------------------------- reference evaluation

def _cmp(op: Op, a: Any, b: Any) -> bool:
    if op is Op.EQ:
        return bool(a == b)
    if op is Op.NE:
        return bool(a != b)
    if op is Op.LT:
        return bool(a < b)
    if op is Op.GT:
        return bool(a > b)
    if op is Op.LE:
        return bool(a <= b)
    return bool(a >= b)


_INFO_ATTR = {SystemField.WORKFLOW_ID: "workflow_id", SystemField.WORKFLOW_TYPE: "workflow_type",
              SystemField.RUN_ID: "run_id", SystemField.TASK_QUEUE: "task_queue",
              SystemField.START_TIME: "start_time_ms"}


def matches(e: Expr | None, info: WorkflowExecutionInfo) -> bool:
    """Whether a run satisfies an expression (None: every run). The reference semantics."""
    if e is None:
        return True
    if isinstance(e, And):
        return all(matches(i, info) for i in e.items)
    if isinstance(e, Or):
        return any(matches(i, info) for i in e.items)
    if isinstance(e, Not):
        return not matches(e.item, info)
    s = e.field.system
    if s is None:
        kind, want = literal_index_value(e.value)
        return any(k == kind and _cmp(e.op, v, want)
                   for k, v in index_values(info.search_attributes.get(e.field.name)))
    if s is SystemField.EXECUTION_STATUS:
        return _cmp(e.op, WorkflowStatus(info.status).value, e.value)
    if s is SystemField.CLOSE_TIME:
        return info.close_time_ms > 0 and _cmp(e.op, info.close_time_ms, e.value)
    return _cmp(e.op, getattr(info, _INFO_ATTR[s]), e.value)
