"""Visibility on Cassandra 5: listing and counting runs with the query language of `legato.query`,
answering every query exactly as the SQLite store does (`legato.query.matches` is the reference).

Tables (part of schema version 1; history/store/cassandra_schema.py applies `VISIBILITY_SCHEMA`):

* ``visibility_runs``: one row per run. Partition = (namespace, bucket), where bucket is the run's
  start time rounded down to `BUCKET_MS` (a day): a namespace's runs are spread over one
  partition per day, so no partition grows with the namespace's age (a day of a busy namespace,
  100 000 runs of about 1 KB, is a partition of about 100 MB, Cassandra's comfortable limit).
  Clustering (start_time_ms DESC, run_id DESC) is the listing order itself, so a page of the
  newest runs is a slice of the newest buckets, and a page token is a clustering key.
* ``visibility_buckets``: per namespace, the buckets that have runs, newest first. A listing
  walks them backwards (or forwards for ORDER BY StartTime ASC) without probing empty days.

Storage-attached indexes (SAI) on status, workflow_type, workflow_id, task_queue, run_id,
close_time_ms (null while the run is open, so no open run is ever found by a CloseTime
comparison, as the reference says) and on the elements of ``sa_values``: one text per indexed
search attribute value, `kind + name + value` with numbers in a canonical form (so 100 and 100.0
are the same text, as they are equal numbers) and every element of a list value (a list matches
when an element does). Every query carries the partition key, so the indexes are only used
within one partition: they answer a predicate without reading the partition's other rows.

Querying: the WHERE expression is turned into a few *branches* (`plan`), each a conjunction of
restrictions Cassandra 5.0 can evaluate: equality on an indexed column, a close-time range (SAI),
a start-time range (clustering slice), CONTAINS on sa_values. The branches together are a
necessary condition of the expression (every matching run is found by at least one), found by
pushing NOT inward (ExecutionStatus != x becomes the six other statuses, NOT StartTime < t
becomes StartTime >= t), multiplying out AND and collecting OR alternatives, up to `MAX_BRANCHES`
(and `MAX_VALUES` search attribute equalities per branch). What Cassandra 5.0 cannot do through
SAI (OR, IN, !=, NOT, text ranges, ranges on search attributes: map entries only take equality)
is evaluated in Python: every fetched candidate is kept only if `matches(where, run)`, so
pushdown narrows what is read and never changes a result. Branches are read chunk by chunk and
merged by clustering key. Counting: when the branches are equivalent to the whole query and no
run satisfies two of them (one branch, or one per status), Cassandra counts (COUNT(*) per bucket
and branch, per status for GROUP BY); otherwise the candidates are read and checked as for a
listing.

Listing is keyset-paged like SQLite: the token is (start time, run id) of the last run of the page
and the query's fingerprint. A page stops reading once it has read `page_scan_rows` rows (at least
twice the page; a key read alone counts a quarter of a row) or made `page_requests` requests (plus
what the last read took past the limit);
a selective query over a long history may therefore return a short (even empty) page with a
token that resumes where the scan stopped (possibly between buckets: then the token has no run
id). Only an empty token means the end. ORDER BY StartTime ASC cannot be combined
with an SAI restriction in CQL, so an ascending page reads a window of clustering keys first
(ascending, keys only) and then the indexed candidates within that window.

Writing: one INSERT per upsert (the upserts of one partition that queue while a request is in
flight share the next one, an unlogged batch: history/visibility_batch.py), ``USING TIMESTAMP`` =
(history length, clock) (`WriteClock`),
so Cassandra's last-write-wins keeps the record with the longest history whatever order the
upserts arrive in: a late, stale record is written but loses at every cell, the search attribute
set included (replacing a collection writes a tombstone just below the write's timestamp). No
read before the write and no lightweight transaction (Paxos: four round trips and contention). The
bucket's row is written before the first run of the bucket (once per bucket and process).
Because of these logical timestamps the table must not use TimeWindowCompactionStrategy nor the
minimum-timestamp guardrail, and a deletion must carry a timestamp above the run's last write:
`delete` (retention) writes its tombstone at `DELETE_TIMESTAMP`, above every stamp, so that no
upsert of the run, however late, brings the record back. The bucket's row stays (a day's key).
A run's start time must never change (history sets it once, when it creates the run): it is in
the row's key.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from history.store.cql import Cql, Row
from history.visibility_batch import PartitionBatcher
from history.visibility_common import (
    check_namespace,
    decode_position,
    encode_token,
    info_from_columns,
    page_size,
    parse_list_query,
)
from legato import codec
from legato import query as lq
from legato.api import ListWorkflowsRequest, ListWorkflowsResponse, WorkflowExecutionInfo, WorkflowStatus
from legato.errors import InvalidArgument, ServiceError, Unavailable
from legato.query import And, Compare, Expr, Not, Op, Or, SystemField

__all__ = [
    "BUCKET_MS",
    "DELETE_TIMESTAMP",
    "MAX_BRANCHES",
    "MAX_VALUES",
    "VISIBILITY_SCHEMA",
    "VISIBILITY_TABLES",
    "Branch",
    "CassandraVisibilityStore",
    "WriteClock",
    "plan",
    "sa_value_texts",
]

BUCKET_MS = 86_400_000  # a day; fixed for a keyspace's life (it decides which partition a run is in)
MAX_BRANCHES = 8  # alternatives read side by side for one query; past it, OR is left to Python
MAX_VALUES = 4  # search attribute equalities pushed down per branch (each query shape is a prepared statement)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
DELETE_TIMESTAMP = INT64_MAX - 1  # a deleted run's tombstone: above every WriteClock stamp

VISIBILITY_TABLES: list[str] = ["visibility_runs", "visibility_buckets"]

# index name -> what it indexes
_INDEXES = {"status": "status", "workflow_type": "workflow_type", "workflow_id": "workflow_id",
            "task_queue": "task_queue", "run_id": "run_id", "close_time": "close_time_ms",
            "sa_values": "VALUES(sa_values)"}

# CQL statements of the visibility tables, `{keyspace}` to be formatted in; part of schema v1.
VISIBILITY_SCHEMA: list[str] = [
    """CREATE TABLE IF NOT EXISTS {keyspace}.visibility_runs (
        namespace text,
        bucket bigint,
        start_time_ms bigint,
        run_id text,
        workflow_id text,
        workflow_type text,
        task_queue text,
        status text,
        close_time_ms bigint,
        history_length bigint,
        memo text,
        search_attributes text,
        sa_values set<text>,
        PRIMARY KEY ((namespace, bucket), start_time_ms, run_id))
        WITH CLUSTERING ORDER BY (start_time_ms DESC, run_id DESC)""",
    """CREATE TABLE IF NOT EXISTS {keyspace}.visibility_buckets (
        namespace text,
        bucket bigint,
        PRIMARY KEY (namespace, bucket))
        WITH CLUSTERING ORDER BY (bucket DESC)""",
    *(f"CREATE INDEX IF NOT EXISTS visibility_runs_by_{name} ON {{keyspace}}.visibility_runs ({target}) "
      "USING 'sai'" for name, target in _INDEXES.items()),
]

_KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_COLUMNS = ("start_time_ms, run_id, workflow_id, workflow_type, task_queue, status, close_time_ms, "
            "history_length, memo, search_attributes")
_EQ_COLUMNS = {SystemField.WORKFLOW_ID: "workflow_id", SystemField.WORKFLOW_TYPE: "workflow_type",
               SystemField.RUN_ID: "run_id", SystemField.TASK_QUEUE: "task_queue",
               SystemField.EXECUTION_STATUS: "status"}
_NEGATED = {Op.EQ: Op.NE, Op.NE: Op.EQ, Op.LT: Op.GE, Op.GE: Op.LT, Op.GT: Op.LE, Op.LE: Op.GT}
MAX_KNOWN_BUCKETS = 100_000  # bucket rows remembered as written (then forgotten all at once: rewritten once more)
KIND_UPSERT = "visibility upsert"  # the upserts' label in Cql.stats
_SA_TEXT_MAX = 200  # bytes of an sa_values element; longer ones are stored as a digest (SAI term limits)


# ---------------------------------------------------------------- search attribute values

def _number_text(v: int | float) -> str:
    """One text per number value: equal numbers (100, 100.0, -0.0 and 0) get the same text."""
    if isinstance(v, float) and v.is_integer() and INT64_MIN <= v <= INT64_MAX:
        return str(int(v))
    return str(v) if isinstance(v, int) else repr(v)


def _sa_text(name: str, kind: str, value: str | int | float) -> str:
    """The sa_values element of one (kind, value) of attribute `name`; injective (the name's length
    is written before it), a digest when long."""
    text = f"{kind}{len(name)}:{name}=" + (value if isinstance(value, str) else _number_text(value))
    if len(text.encode()) > _SA_TEXT_MAX:
        return f"{kind}#" + hashlib.sha256(text.encode(errors="surrogatepass")).hexdigest()
    return text


def sa_value_texts(attrs: object) -> set[str]:
    """The sa_values of a run's search attributes: one element per value `legato.query.index_values`
    finds it by, so that `name = literal` holds exactly when the literal's element is in the set."""
    if not isinstance(attrs, dict):
        return set()
    return {_sa_text(str(name), kind, value) for name, v in attrs.items() for kind, value in lq.index_values(v)}


# ---------------------------------------------------------------- the plan: what Cassandra evaluates

Span = tuple[int | None, int | None]  # inclusive bounds of an integer column; None: unbounded
_ALL: Span = (None, None)


@dataclass(frozen=True, slots=True)
class Branch:
    """A conjunction of restrictions that Cassandra evaluates within one bucket."""

    eq: tuple[tuple[str, str], ...] = ()  # (column, value), sorted; at most one per column
    values: frozenset[str] = frozenset()  # sa_values CONTAINS each
    close: Span = _ALL  # close_time_ms within (SAI); a restricted span always has lo >= 1
    start: Span = _ALL  # start_time_ms within (clustering slice)

    @property
    def indexed(self) -> bool:
        """Whether it needs an index (then CQL allows no ORDER BY)."""
        return bool(self.eq or self.values or self.close != _ALL)

    @property
    def run_id(self) -> str | None:
        return next((v for c, v in self.eq if c == "run_id"), None)


Plan = tuple[list[Branch], bool]  # branches (their OR is implied by the query), exact (equivalent to it)
_EVERYTHING: Plan = ([Branch()], True)
_UNKNOWN: Plan = ([Branch()], False)


def _span(lo: int | None, hi: int | None) -> Span | None:
    """A span, None if empty (no int64 fits)."""
    if (lo is not None and lo > INT64_MAX) or (hi is not None and hi < INT64_MIN):
        return None
    if lo is not None and hi is not None and lo > hi:
        return None
    return lo, hi


def _intersect(a: Span, b: Span) -> Span | None:
    lo = a[0] if b[0] is None else b[0] if a[0] is None else max(a[0], b[0])
    hi = a[1] if b[1] is None else b[1] if a[1] is None else min(a[1], b[1])
    return _span(lo, hi)


def _spans(op: Op, v: int) -> list[Span]:
    """The integers satisfying `x op v`, as spans."""
    found: dict[Op, list[Span]] = {
        Op.EQ: [(v, v)], Op.NE: [(None, v - 1), (v + 1, None)], Op.LT: [(None, v - 1)], Op.LE: [(None, v)],
        Op.GT: [(v + 1, None)], Op.GE: [(v, None)]}
    return [s for lo, hi in found[op] if (s := _span(lo, hi)) is not None]


def _merge(a: Branch, b: Branch) -> Branch | None:
    """Both conjunctions at once; None if they contradict each other."""
    eq = dict(a.eq)
    for col, v in b.eq:
        if eq.setdefault(col, v) != v:
            return None
    close = _intersect(a.close, b.close)
    start = _intersect(a.start, b.start)
    if close is None or start is None:
        return None
    return Branch(tuple(sorted(eq.items())), a.values | b.values, close, start)


def _and(plans: Iterable[Plan]) -> Plan:
    branches, exact = [Branch()], True
    for bs, ex in plans:
        product = list(dict.fromkeys(m for a in branches for b in bs if (m := _merge(a, b)) is not None))
        if len(product) > MAX_BRANCHES:
            exact = False  # keep the branches so far: still a necessary condition
            continue
        if any(len(b.values) > MAX_VALUES for b in product):
            product = [replace(b, values=frozenset(sorted(b.values)[:MAX_VALUES])) for b in product]
            ex = False  # a subset of a conjunction's restrictions is still necessary
        branches, exact = product, exact and ex
    return branches, exact


def _or(plans: Iterable[Plan]) -> Plan:
    out: list[Branch] = []
    exact = True
    for bs, ex in plans:
        out.extend(bs)
        exact = exact and ex
    out = list(dict.fromkeys(out))
    if Branch() in out:
        return [Branch()], exact
    if len(out) > MAX_BRANCHES:
        return _UNKNOWN
    return out, exact


def _compare(c: Compare, negated: bool) -> Plan:
    s, op = c.field.system, c.op
    if negated:
        if s not in (SystemField.EXECUTION_STATUS, SystemField.START_TIME):
            return _UNKNOWN  # NOT of the others also holds for runs without the value (open, no attribute)
        op = _NEGATED[op]
    if s is SystemField.START_TIME or s is SystemField.CLOSE_TIME:
        assert isinstance(c.value, int)
        if s is SystemField.START_TIME:
            return [Branch(start=sp) for sp in _spans(op, c.value)], True
        closed = [sp for lo, hi in _spans(op, c.value) if (sp := _span(max(lo or 1, 1), hi)) is not None]
        return [Branch(close=sp) for sp in closed], True
    if s is SystemField.EXECUTION_STATUS:
        statuses = [w.value for w in WorkflowStatus if (w.value == c.value) == (op is Op.EQ)]
        return [Branch(eq=(("status", v),)) for v in statuses], True
    if op is not Op.EQ:
        return _UNKNOWN
    if s is None:
        kind, value = lq.literal_index_value(c.value)
        return [Branch(values=frozenset({_sa_text(c.field.name, kind, value)}))], True
    return [Branch(eq=((_EQ_COLUMNS[s], str(c.value)),))], True


def _plan(e: Expr, negated: bool) -> Plan:
    if isinstance(e, Compare):
        return _compare(e, negated)
    if isinstance(e, Not):
        return _plan(e.item, not negated)
    parts = (_plan(i, negated) for i in e.items)
    conjunction = isinstance(e, And) != negated  # De Morgan: NOT (a OR b) = NOT a AND NOT b
    assert isinstance(e, And | Or)
    return _and(parts) if conjunction else _or(parts)


def plan(where: Expr | None) -> Plan:
    """Branches whose OR every run matching `where` satisfies, and whether that OR is equivalent
    to `where` (then Cassandra alone can count). No branches: nothing can match."""
    return _EVERYTHING if where is None else _plan(where, False)


# ---------------------------------------------------------------- positions and bounds

Key = tuple[int, str]  # (start_time_ms, run_id): the listing order
Bound = tuple[Key, bool]  # a key and whether it is inclusive


@dataclass(frozen=True, slots=True)
class _Pos:
    """Where a listing stands: the runs up to here (in its order) are behind it. run_id None: every
    run that started at `start` is behind it (a stop between buckets)."""

    start: int
    run_id: str | None


def _pos_bound(p: _Pos, desc: bool) -> Bound | None:
    """The bound (upper when descending, lower when ascending) of what is left after `p`; None
    when nothing is."""
    if p.run_id is not None:
        return (p.start, p.run_id), False
    if desc:
        return (p.start, ""), False  # key < (s, '') <=> start < s
    return ((p.start + 1, ""), True) if p.start < INT64_MAX else None  # key >= (s+1, '') <=> start > s


def _lower_of(span: Span) -> Bound | None:
    return None if span[0] is None else ((span[0], ""), True)


def _upper_of(span: Span) -> Bound | None:
    if span[1] is None or span[1] >= INT64_MAX:
        return None
    return (span[1] + 1, ""), False  # key < (hi+1, '') <=> start <= hi


def _tighter(a: Bound | None, b: Bound | None, upper: bool) -> Bound | None:
    if a is None or b is None:
        return a or b
    if a[0] != b[0]:
        return (a if a[0] < b[0] else b) if upper else (a if a[0] > b[0] else b)
    return a if not a[1] else b  # the exclusive one


def _within(key: Key, lower: Bound | None, upper: Bound | None) -> bool:
    if lower is not None and (key < lower[0] or (key == lower[0] and not lower[1])):
        return False
    return not (upper is not None and (key > upper[0] or (key == upper[0] and not upper[1])))


def _hull(branches: Sequence[Branch]) -> Span:
    los, his = [b.start[0] for b in branches], [b.start[1] for b in branches]
    return (None if None in los else min(x for x in los if x is not None),
            None if None in his else max(x for x in his if x is not None))


# ---------------------------------------------------------------- write timestamps

_LENGTH_BITS, _CLOCK_BITS = 20, 43


class WriteClock:
    """Write timestamps that order a run's records as SQLite's upsert rule does: the history length
    in the high bits (a longer history always wins), a microsecond clock that never repeats in this
    process in the low 43 bits (at equal length the later write wins, and two writes never tie, so
    their cells never mix). Lengths past 2^20 - 1 count as that; the clock bits wrap every 101
    days (which only matters for two different records of equal length written that far apart)."""

    def __init__(self) -> None:
        self._last = 0

    def stamp(self, history_length: int) -> int:
        self._last = max(self._last + 1, time.time_ns() // 1000)
        length = min(max(int(history_length), 0), (1 << _LENGTH_BITS) - 1)
        return (length << _CLOCK_BITS) | (self._last & ((1 << _CLOCK_BITS) - 1))


# ---------------------------------------------------------------- reading buckets chunk by chunk

Fetched = tuple[list[tuple[Key, WorkflowExecutionInfo]], Key | None]  # (key, run) pairs; last key if the limit was hit


@dataclass(slots=True)
class _Chunk:
    runs: list[WorkflowExecutionInfo]  # candidates in listing order, each once
    pos: _Pos | None  # everything up to here is read (None: nothing read yet)
    examined: int  # rows read
    requests: int
    done: bool  # nothing is left after pos


@dataclass(slots=True)
class _Scan:
    """The candidates of a plan's branches in one namespace, in listing order, a bounded chunk at
    a time: walks the buckets (newest first, or oldest first ascending) and, within a bucket, reads
    each branch from the current position and merges them by key."""

    store: CassandraVisibilityStore
    namespace: str
    branches: list[Branch]
    desc: bool
    pos: _Pos | None
    exact: bool
    hull: Span = _ALL
    bucket: int | None = None
    queued: list[int] = field(default_factory=list)
    more_buckets: bool = True
    next_bucket_from: int | None = None

    def __post_init__(self) -> None:
        self.more_buckets = bool(self.branches)
        if self.branches:
            self.hull = _hull(self.branches)
        first = self._first_start()
        self.next_bucket_from = None if first is None else self.store.bucket_of(first)

    def _first_start(self) -> int | None:
        """The first start time (in listing order) that is left; None: unbounded."""
        p = self.pos
        edge = self.hull[1] if self.desc else self.hull[0]
        if p is None:
            return edge
        first = p.start if p.run_id is not None else (p.start - 1 if self.desc else p.start + 1)
        if edge is None:
            return first
        return min(first, edge) if self.desc else max(first, edge)

    async def next(self, want: int) -> _Chunk:
        """The next chunk: one read in one bucket (and the bucket list when needed). `want`: how
        many more matches the caller needs."""
        requests = 0
        if self.bucket is None:
            if not self.queued and self.more_buckets:
                requests += 1
                self.queued = await self.store.buckets(self.namespace, self.next_bucket_from, self.hull, self.desc)
                self.more_buckets = len(self.queued) == self.store.bucket_batch
                if self.queued:
                    self.next_bucket_from = self.queued[-1] + (-1 if self.desc else 1)
            if not self.queued:
                return _Chunk([], self.pos, 0, requests, True)
            self.bucket = self.queued.pop(0)
        runs, examined, n, more = await self._read(self.bucket, want)
        if more is None:  # the bucket is read to its end
            end = self.bucket if self.desc else self.bucket + self.store.bucket_ms - 1
            self.pos, self.bucket = _Pos(end, None), None
        else:
            self.pos = _Pos(*more)
        done = self.bucket is None and not self.queued and not self.more_buckets
        return _Chunk(runs, self.pos, examined, requests + n, done)

    def _bounds(self, br: Branch) -> tuple[Bound | None, Bound | None]:
        """What is left of a branch's start span after the position: (lower, upper) bounds on the key."""
        lower, upper = _lower_of(br.start), _upper_of(br.start)
        here = None if self.pos is None else _pos_bound(self.pos, self.desc)
        if self.desc:
            return lower, _tighter(upper, here, upper=True)
        return _tighter(lower, here, upper=False), upper

    async def _read(self, bucket: int, want: int) -> tuple[list[WorkflowExecutionInfo], int, int, Key | None]:
        """(candidates, rows read, requests made, the key read up to or None at the bucket's end)."""
        if self.pos is not None and _pos_bound(self.pos, self.desc) is None:
            return [], 0, 0, None
        if self.desc:
            return await self._read_desc(bucket, self.store.chunk_rows(want, self.exact))
        if len(self.branches) == 1 and not self.branches[0].indexed:
            return await self._read_plain_asc(bucket, self.store.chunk_rows(want, self.exact))
        return await self._read_window_asc(bucket, self.store.window_rows(want))

    async def _read_desc(self, bucket: int, limit: int) -> tuple[list[WorkflowExecutionInfo], int, int, Key | None]:
        """Each branch newest first from the position, `limit` rows; the merge is complete down to
        the highest last key of the branches that hit the limit (the frontier)."""
        results = await asyncio.gather(*(self.store.fetch(self.namespace, bucket, br, *self._bounds(br), limit)
                                         for br in self.branches))
        frontier = max((more for _, more in results if more is not None), default=None)
        rows = [r for found, _ in results for r in found if frontier is None or r[0] >= frontier]
        return _merged(rows, desc=True), sum(len(f) for f, _ in results), len(results), frontier

    async def _read_plain_asc(self, bucket: int, limit: int) -> tuple[list[WorkflowExecutionInfo], int, int,
                                                                      Key | None]:
        br = self.branches[0]
        found, more = await self.store.fetch(self.namespace, bucket, br, *self._bounds(br), limit, asc=True)
        return [run for _, run in found], len(found), 1, more

    async def _read_window_asc(self, bucket: int, limit: int) -> tuple[list[WorkflowExecutionInfo], int, int,
                                                                       Key | None]:
        """CQL allows no ORDER BY next to an index: take the next `limit` keys in ascending order
        (keys only), then each branch's candidates within that window (at most `limit` rows)."""
        lower, upper = self._bounds(Branch(start=self.hull))
        keys = await self.store.keys_asc(self.namespace, bucket, lower, upper, limit)
        if not keys:
            return [], 0, 1, None
        more = keys[-1] if len(keys) == limit else None
        end: Bound | None = (keys[-1], True) if more else upper

        def window(br: Branch) -> tuple[Bound | None, Bound | None]:
            low, high = self._bounds(br)
            return low, _tighter(high, end, upper=True)

        results = await asyncio.gather(*(self.store.fetch(self.namespace, bucket, br, *window(br), None)
                                         for br in self.branches))
        rows = [r for found, _ in results for r in found]
        return _merged(rows, desc=False), _key_cost(len(keys)) + len(rows), 1 + len(results), more


def _key_cost(keys: int) -> int:
    """What reading clustering keys alone costs against a page's row budget: a key (two small
    columns) counts as a quarter of a row (about 1 KB with memo and search attributes)."""
    return (keys + 3) // 4


def _disjoint(branches: Sequence[Branch]) -> bool:
    """Whether no run can satisfy two of the branches (then their counts add up)."""
    return all(_merge(a, b) is None for i, a in enumerate(branches) for b in branches[i + 1:])


def _merged(rows: list[tuple[Key, WorkflowExecutionInfo]], desc: bool) -> list[WorkflowExecutionInfo]:
    unique = dict(rows)
    return [unique[k] for k in sorted(unique, reverse=desc)]


# ---------------------------------------------------------------- the store

class CassandraVisibilityStore:
    """`legato.api.VisibilityStore` in a Legato keyspace, on the execution store's driver session.

    `bucket_ms` must stay the same for a keyspace's life (tests use small buckets to cross many).
    `page_scan_rows` and `page_requests` bound the work of one list page; `min_chunk` is the rows
    read per request when Python filters further, `window` the keys of one ascending window."""

    bucket_batch = 64  # bucket keys read at once
    count_parallelism = 8  # COUNT requests in flight

    def __init__(self, cql: Cql, keyspace: str, *, bucket_ms: int = BUCKET_MS, page_scan_rows: int = 10_000,
                 page_requests: int = 256, min_chunk: int = 100, window: int = 1000) -> None:
        if not _KEYSPACE_RE.match(keyspace):
            raise InvalidArgument(f"invalid Cassandra keyspace name {keyspace!r}")
        if min(bucket_ms, page_scan_rows, page_requests, min_chunk, window) <= 0:
            raise InvalidArgument("bucket_ms, page_scan_rows, page_requests, min_chunk and window must be positive")
        self._cql = cql
        self._ks = keyspace
        self.bucket_ms = bucket_ms
        self._scan_rows = page_scan_rows
        self._page_requests = page_requests
        self._min_chunk = min_chunk
        self._window = window
        self._clock = WriteClock()
        self._known: set[tuple[str, int]] = set()  # buckets whose row this process has written
        # ... and those being written: concurrent upserts of a new bucket wait for one write
        self._writing: dict[tuple[str, int], asyncio.Future[list[Row]]] = {}
        self._insert = (
            f"INSERT INTO {keyspace}.visibility_runs (namespace, bucket, start_time_ms, run_id, workflow_id, "
            "workflow_type, task_queue, status, close_time_ms, history_length, memo, search_attributes, "
            "sa_values) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?")
        self._delete = (f"DELETE FROM {keyspace}.visibility_runs USING TIMESTAMP ? WHERE namespace = ? "
                        "AND bucket = ? AND start_time_ms = ? AND run_id = ?")
        self._insert_bucket = f"INSERT INTO {keyspace}.visibility_buckets (namespace, bucket) VALUES (?, ?)"
        for text, kind in ((self._insert, KIND_UPSERT), (self._delete, "visibility delete"),
                           (self._insert_bucket, "visibility bucket")):
            cql.label(text, kind)  # how `Cql.stats` counts them (legato bench cassandra-cost)
        self._upserts = PartitionBatcher(cql, self._insert, KIND_UPSERT)  # upserts arriving together: one request

    def bucket_of(self, start_time_ms: int) -> int:
        return min(max(start_time_ms - start_time_ms % self.bucket_ms, INT64_MIN), INT64_MAX)

    def chunk_rows(self, want: int, exact: bool) -> int:
        """Rows to read per request: what is still wanted when Cassandra filters exactly, at least
        `min_chunk` when Python filters further."""
        return max(want, 1) if exact else max(want, self._min_chunk)

    def window_rows(self, want: int) -> int:
        return max(want, self._window)

    # ------------------------------------------------------------ writing

    async def upsert(self, info: WorkflowExecutionInfo) -> None:
        """Write the run's record; one that is older than the stored one (shorter history) loses."""
        namespace, bucket = info.namespace, self.bucket_of(info.start_time_ms)
        if (namespace, bucket) not in self._known:
            await self._write_bucket((namespace, bucket))
        attrs = info.search_attributes or {}
        close = info.close_time_ms if info.close_time_ms > 0 else None  # open: absent, never indexed
        await self._upserts.write((namespace, bucket), [
            namespace, bucket, info.start_time_ms, info.run_id, info.workflow_id, info.workflow_type,
            info.task_queue, WorkflowStatus(info.status).value, close, info.history_length,
            codec.dumps(info.memo or {}), codec.dumps(attrs), sa_value_texts(attrs),
            self._clock.stamp(info.history_length)])

    async def _write_bucket(self, key: tuple[str, int]) -> None:
        """The bucket's row, written once however many upserts of the bucket arrive together."""
        pending = self._writing.get(key)
        if pending is None:
            pending = self._writing[key] = asyncio.ensure_future(self._cql.execute(self._insert_bucket, list(key)))
            pending.add_done_callback(lambda _: self._writing.pop(key, None))
        await asyncio.shield(pending)
        if len(self._known) > MAX_KNOWN_BUCKETS:
            self._known.clear()
        self._known.add(key)

    async def delete(self, namespace: str, run_id: str, start_time_ms: int) -> None:
        """Retention: the run's row (its key is known from the start time), at a timestamp no
        upsert reaches."""
        await self._cql.execute(self._delete, [DELETE_TIMESTAMP, namespace, self.bucket_of(start_time_ms),
                                               start_time_ms, run_id])

    # ------------------------------------------------------------ reading

    async def buckets(self, namespace: str, first: int | None, hull: Span, desc: bool) -> list[int]:
        """Up to `bucket_batch` buckets of the namespace in listing order, from bucket `first` on
        (inclusive) and within the start-time span."""
        far = hull[0] if desc else hull[1]
        near_op, far_op = ("<=", ">=") if desc else (">=", "<=")
        clauses: list[str] = ["namespace = ?"]
        args: list[Any] = [namespace]
        if first is not None:
            clauses.append(f"bucket {near_op} ?")
            args.append(min(max(first, INT64_MIN), INT64_MAX))
        if far is not None:
            clauses.append(f"bucket {far_op} ?")
            args.append(self.bucket_of(far))
        order = "" if desc else " ORDER BY bucket ASC"
        rows = await self._cql.execute(f"SELECT bucket FROM {self._ks}.visibility_buckets WHERE "
                                       f"{' AND '.join(clauses)}{order} LIMIT {self.bucket_batch}", args)
        return [int(r.bucket) for r in rows]

    async def fetch(self, namespace: str, bucket: int, br: Branch, lower: Bound | None, upper: Bound | None,
                    limit: int | None, asc: bool = False) -> Fetched:
        """A branch's rows of one bucket between the bounds, newest first (oldest first if `asc`
        and the branch needs no index), and the last key read if `limit` rows came."""
        by_run = br.run_id is not None  # CQL refuses run_id = ? next to a slice on the key: bounds checked here
        clauses, args = self._where(namespace, bucket, br, None if by_run else lower, None if by_run else upper)
        text = f"SELECT {_COLUMNS} FROM {self._ks}.visibility_runs WHERE {' AND '.join(clauses)}"
        if asc and not br.indexed:
            text += " ORDER BY start_time_ms ASC, run_id ASC"
        if limit is not None and not by_run:
            text += " LIMIT ?"
            args.append(limit)
        rows = await self._cql.execute(text, args)
        found = [((int(r.start_time_ms), str(r.run_id)), _row_info(namespace, r)) for r in rows]
        more = found[-1][0] if found and limit is not None and not by_run and len(found) >= limit else None
        return [(k, run) for k, run in found if _within(k, lower, upper)], more

    async def keys_asc(self, namespace: str, bucket: int, lower: Bound | None, upper: Bound | None,
                       limit: int) -> list[Key]:
        clauses, args = self._where(namespace, bucket, Branch(), lower, upper)
        rows = await self._cql.execute(
            f"SELECT start_time_ms, run_id FROM {self._ks}.visibility_runs WHERE {' AND '.join(clauses)} "
            "ORDER BY start_time_ms ASC, run_id ASC LIMIT ?", [*args, limit])
        return [(int(r.start_time_ms), str(r.run_id)) for r in rows]

    def _where(self, namespace: str, bucket: int, br: Branch, lower: Bound | None,
               upper: Bound | None) -> tuple[list[str], list[Any]]:
        """The CQL restrictions of a branch within a bucket and between key bounds."""
        clauses: list[str] = ["namespace = ?", "bucket = ?"]
        args: list[Any] = [namespace, bucket]
        for bound, ops in ((lower, (">", ">=")), (upper, ("<", "<="))):
            if bound is not None:
                clauses.append(f"(start_time_ms, run_id) {ops[bound[1]]} (?, ?)")
                args.extend(bound[0])
        for col, v in br.eq:
            clauses.append(f"{col} = ?")
            args.append(v)
        lo, hi = br.close
        if lo is not None and lo == hi:
            clauses.append("close_time_ms = ?")
            args.append(lo)
        else:
            for t, op in ((lo, ">="), (hi, "<=")):
                if t is not None:
                    clauses.append(f"close_time_ms {op} ?")
                    args.append(t)
        for text in sorted(br.values):
            clauses.append("sa_values CONTAINS ?")
            args.append(text)
        return clauses, args

    async def count(self, namespace: str, query: str) -> int:
        """How many runs of the namespace match (ORDER BY and GROUP BY are ignored)."""
        with _read_errors("counting workflows", query):
            return sum((await self._count(namespace, query, by_status=False)).values())

    async def count_by_status(self, namespace: str, query: str) -> dict[WorkflowStatus, int]:
        """How many runs of the namespace match, per status (statuses without any are left out)."""
        with _read_errors("counting workflows", query):
            found = await self._count(namespace, query, by_status=True)
        return {s: found[s] for s in WorkflowStatus if found.get(s)}

    async def _count(self, namespace: str, query: str, by_status: bool) -> dict[WorkflowStatus | None, int]:
        """Counts by status (by_status, or when Python counts) or under None. Cassandra counts when
        the branches are the whole query and no run satisfies two of them; otherwise the
        candidates are read and checked in Python."""
        namespace = check_namespace(namespace, "count workflows")
        where = lq.parse(query).where
        branches, exact = plan(where)
        if exact and _disjoint(branches) and all(b.run_id is None for b in branches):
            return await self._count_in_cassandra(namespace, branches, by_status)
        totals: dict[WorkflowStatus | None, int] = {}
        scan = _Scan(self, namespace, branches, True, None, exact)
        while True:
            chunk = await scan.next(self._window)
            for run in chunk.runs:
                if lq.matches(where, run):
                    totals[run.status] = totals.get(run.status, 0) + 1
            if chunk.done:
                return totals

    async def _all_buckets(self, namespace: str, span: Span) -> list[int]:
        out: list[int] = []
        first = None if span[1] is None else self.bucket_of(span[1])
        while True:
            batch = await self.buckets(namespace, first, span, True)
            out += batch
            if len(batch) < self.bucket_batch:
                return out
            first = batch[-1] - 1

    async def _count_in_cassandra(self, namespace: str, branches: list[Branch],
                                  by_status: bool) -> dict[WorkflowStatus | None, int]:
        """COUNT(*) per bucket and branch (and per status when grouping and the branch fixes none),
        a few requests at a time."""
        gate = asyncio.Semaphore(self.count_parallelism)
        parts: list[tuple[Branch, WorkflowStatus | None]] = []
        for br in branches:
            fixed = next((WorkflowStatus(v) for c, v in br.eq if c == "status"), None)
            if by_status and fixed is None:
                parts += [(part, s) for s in WorkflowStatus
                          if (part := _merge(br, Branch(eq=(("status", s.value),)))) is not None]
            else:
                parts.append((br, fixed))

        async def one(bucket: int, part: Branch, status: WorkflowStatus | None) -> tuple[WorkflowStatus | None, int]:
            async with gate:
                clauses, args = self._where(namespace, bucket, part, _lower_of(part.start), _upper_of(part.start))
                rows = await self._cql.execute(
                    f"SELECT COUNT(*) FROM {self._ks}.visibility_runs WHERE {' AND '.join(clauses)}", args)
            return status, int(rows[0][0])

        buckets = await self._all_buckets(namespace, _hull(branches)) if branches else []
        totals: dict[WorkflowStatus | None, int] = {}
        for status, n in await asyncio.gather(*(one(b, p, s) for b in buckets for p, s in parts)):
            if n:
                totals[status] = totals.get(status, 0) + n
        return totals

    async def list(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse:
        with _read_errors("listing workflows", req.query):
            return await self._list(req)

    async def _list(self, req: ListWorkflowsRequest) -> ListWorkflowsResponse:
        namespace = check_namespace(req.namespace, "list workflows")
        q = parse_list_query(req.query)
        size = page_size(req.page_size)
        fingerprint = lq.fingerprint(namespace, q)
        pos = _Pos(*decode_position(req.next_page_token, fingerprint)) if req.next_page_token else None
        branches, exact = plan(q.where)
        scan = _Scan(self, namespace, branches, q.order_by.descending, pos, exact)
        out: list[WorkflowExecutionInfo] = []
        examined = requests = 0
        while True:
            chunk = await scan.next(size + 1 - len(out))
            examined, requests = examined + chunk.examined, requests + chunk.requests
            for run in chunk.runs:
                if lq.matches(q.where, run):
                    out.append(run)
                    if len(out) > size:
                        last = out[size - 1]
                        token = encode_token(last.start_time_ms, last.run_id, fingerprint)
                        return ListWorkflowsResponse(out[:size], token)
            if chunk.done:
                return ListWorkflowsResponse(out)
            if examined >= max(self._scan_rows, 2 * (size + 1)) or requests >= self._page_requests:
                assert chunk.pos is not None  # a chunk that is not the last one has read something
                return ListWorkflowsResponse(out, encode_token(chunk.pos.start, chunk.pos.run_id, fingerprint))


@contextlib.contextmanager
def _read_errors(what: str, query: str) -> Iterator[None]:
    """A failed read of Cassandra (a timeout, a node down, a missing table) as one clear
    Unavailable naming the query, not an internal error with the driver's traceback."""
    try:
        yield
    except ServiceError:
        raise
    except Exception as e:
        timed_out = "Timeout" in type(e).__name__ or "TimedOut" in type(e).__name__
        hint = (" (each Cassandra request may take store.cassandra_request_timeout_ms; a query that reads many runs "
                "is cheaper with a StartTime range, which selects the day partitions it reads)") if timed_out else ""
        raise Unavailable(f"visibility on Cassandra: {what} ({query!r}) failed: {type(e).__name__}: {e}{hint}",
                          reason="StoreUnavailable") from None


def _row_info(namespace: str, r: Row) -> WorkflowExecutionInfo:
    return info_from_columns(namespace, r.run_id, r.workflow_id, r.workflow_type, r.task_queue, r.status,
                             r.start_time_ms, r.close_time_ms, r.history_length, r.memo, r.search_attributes)
