"""The Cassandra driver, seen from asyncio: connecting, and awaiting requests.

The DataStax driver does its I/O on its own reactor thread (libev) and reports results through
callbacks; `Cql` turns each request into an asyncio future resolved on the caller's loop, so the
event loop never blocks on Cassandra. Statements are prepared once and cached by their text.

Every request is counted by *kind* (`StatementStats`): a label its caller gives (a batch's, or one
registered with `Cql.label` for a statement text), else the statement's verb and table. The
counts cost a dict increment per request; `legato bench cassandra-cost` reads them, and may ask
for samples of each kind's requests to replay them.
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import (
    BatchStatement,
    BoundStatement,
    PreparedStatement,
    SimpleStatement,
    Statement,
    named_tuple_factory,
)

from legato import metrics
from legato.config import StoreConfig
from legato.errors import Unavailable

Row = Any  # the driver's named tuple rows


def contact_points(cfg: StoreConfig) -> list[tuple[str, int]]:
    """`host` or `host:port` entries, the port defaulting to cfg.cassandra_port."""
    points = []
    for h in cfg.cassandra_hosts:
        host, sep, port = h.rpartition(":")
        if sep and port.isdigit() and host and not host.endswith(":"):
            points.append((host.strip("[]"), int(port)))
        else:
            points.append((h, cfg.cassandra_port))
    return points


MAX_ROW_CLASSES = 1024  # row classes kept by `cached_named_tuple_factory` (then forgotten all at once)
_row_classes: dict[tuple[str, ...], type] = {}


def cached_named_tuple_factory(colnames: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The driver's default rows (named tuples: `row.column` and `row[i]`), with the class made
    once per column list: the driver's own factory builds a new namedtuple class for every
    result, about 100 us each (every conditional batch's result, on the driver's I/O thread)."""
    key = tuple(colnames)
    row = _row_classes.get(key)
    if row is None:
        if len(_row_classes) >= MAX_ROW_CLASSES:
            _row_classes.clear()
        probe: list[Any] = named_tuple_factory(list(colnames), [tuple(colnames)])  # the driver's names and rules
        row = _row_classes[key] = type(probe[0])
    return [row(*r) for r in rows]


def connect(cfg: StoreConfig, keyspace: str | None = None) -> tuple[Cluster, Session]:
    """A blocking connect (call it in a thread). Raises Unavailable naming the hosts."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=cfg.cassandra_local_dc or None)),
        consistency_level=ConsistencyLevel.name_to_value[cfg.cassandra_consistency],
        serial_consistency_level=ConsistencyLevel.name_to_value[cfg.cassandra_serial_consistency],
        request_timeout=cfg.cassandra_request_timeout_ms / 1000.0,
        row_factory=cached_named_tuple_factory,
    )
    cluster = Cluster(
        contact_points=contact_points(cfg),
        execution_profiles={EXEC_PROFILE_DEFAULT: profile},
        connect_timeout=cfg.cassandra_connect_timeout_ms / 1000.0,
        protocol_version=5,
        # Without TCP_NODELAY a request of more than a few KiB (a group commit's batch) waits for
        # the delayed ACK of its first segment: measured 54 ms instead of 10 ms for 40 KiB.
        sockopts=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        # A restarted node is back in seconds: look for it often (the driver's default waits up
        # to ten minutes between attempts).
        reconnection_policy=ExponentialReconnectionPolicy(0.2, 5.0),
    )
    try:
        session = cluster.connect(keyspace)
    except Exception as e:
        cluster.shutdown()
        where = ", ".join(cfg.cassandra_hosts)
        raise Unavailable(f"cannot connect to Cassandra at {where}"
                          + (f" (keyspace {keyspace})" if keyspace else "") + f": {e}",
                          reason="StoreUnavailable") from e
    return cluster, session


_VERB_TABLE = re.compile(r"^\s*(?:(SELECT|DELETE)\b.*?\bFROM|(INSERT)\s+INTO|(UPDATE)|(TRUNCATE)(?:\s+TABLE)?)"
                         r"\s+(?:\w+\.)?(\w+)", re.IGNORECASE | re.DOTALL)
_CONDITIONAL = re.compile(r"\bIF\s+(?:NOT\s+EXISTS|EXISTS|\w+\s*(?:=|!=|<|>|IN\b))", re.IGNORECASE)


def statement_text(stmt: Any) -> str:
    """The CQL text of a statement ('' for a batch)."""
    if isinstance(stmt, str):
        return stmt
    if isinstance(stmt, BoundStatement):
        return str(stmt.prepared_statement.query_string)
    if isinstance(stmt, PreparedStatement | SimpleStatement):
        return str(stmt.query_string)
    return ""


def default_kind(text: str) -> str:
    """`verb table` (e.g. "select visibility_runs"), with " IF" for a conditional write; "batch"
    for a batch, the first word for anything else (DDL)."""
    if not text:
        return "batch"
    m = _VERB_TABLE.match(text)
    if not m:
        return text.split(None, 1)[0].lower() if text.strip() else "empty"
    verb = next(g for g in m.groups()[:4] if g).lower()
    conditional = verb != "select" and _CONDITIONAL.search(text) is not None
    return f"{verb} {m.group(5)}" + (" IF" if conditional else "")


@dataclass
class KindCount:
    kind: str
    requests: int = 0
    statements: int = 0  # statements the requests carried (a batch carries several)
    samples: list[Any] = field(default_factory=list)  # some of the requests, when sampling

    def __post_init__(self) -> None:
        # The same counts for Prometheus, so a cluster's Cassandra requests per workflow can be
        # read off its history nodes (the label's child is looked up once, not per request).
        self.requests_metric = metrics.cassandra_requests.labels(self.kind)
        self.statements_metric = metrics.cassandra_statements.labels(self.kind)


class StatementStats:
    """Requests sent, by kind. `sample` > 0 keeps up to that many requests of each kind (a uniform
    random sample, reservoir-style) for a benchmark to replay."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindCount] = {}
        self.sample = 0
        self._rng = random.Random(0)

    def record(self, kind: str, stmt: Any) -> None:
        k = self.kinds.get(kind)
        if k is None:
            k = self.kinds[kind] = KindCount(kind)
        n = len(stmt._statements_and_parameters) if isinstance(stmt, BatchStatement) else 1
        k.requests += 1
        k.statements += n
        k.requests_metric.inc()
        k.statements_metric.inc(n)
        if self.sample > 0 and not isinstance(stmt, str):
            if len(k.samples) < self.sample:
                k.samples.append(stmt)
            else:
                i = self._rng.randrange(k.requests)
                if i < self.sample:
                    k.samples[i] = stmt

    def counts(self) -> dict[str, tuple[int, int]]:
        """kind -> (requests, statements) so far."""
        return {name: (k.requests, k.statements) for name, k in self.kinds.items()}


class Cql:
    """Awaitable requests on one driver session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._prepared: dict[str, PreparedStatement] = {}
        self.stats = StatementStats()
        self._kinds: dict[str, str] = {}  # statement text -> kind

    def label(self, cql: str, kind: str) -> None:
        """Count the requests of statement text `cql` as `kind`."""
        self._kinds[cql] = kind

    def kind_of(self, stmt: Any) -> str:
        text = statement_text(stmt)
        kind = self._kinds.get(text)
        if kind is None:
            kind = self._kinds[text] = default_kind(text)
        return kind

    def prepare(self, cql: str) -> PreparedStatement:
        """Prepared once per text (the first call blocks for one round trip)."""
        ps = self._prepared.get(cql)
        if ps is None:
            ps = self._prepared[cql] = self.session.prepare(cql)
        return ps

    async def prepare_async(self, cql: str) -> PreparedStatement:
        ps = self._prepared.get(cql)
        if ps is None:
            ps = await asyncio.to_thread(self.session.prepare, cql)
            self._prepared[cql] = ps
        return ps

    async def execute(self, stmt: str | Statement | PreparedStatement,
                      params: Sequence[Any] | None = None, timeout: float | None = None,
                      kind: str = "") -> list[Row]:
        """All rows of the result (every page). `timeout` (seconds) replaces the configured
        request timeout for this request (schema changes take longer than data requests).
        `kind` labels the request in `stats` (default: `kind_of`)."""
        if isinstance(stmt, str):
            stmt = await self.prepare_async(stmt)
        if params is not None and self.stats.sample and isinstance(stmt, PreparedStatement):
            stmt = stmt.bind(params)  # a sample must carry its values
            params = None
        self.stats.record(kind or self.kind_of(stmt), stmt)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[Row]] = loop.create_future()
        rows: list[Row] = []
        rf: ResponseFuture = (self.session.execute_async(stmt, params) if timeout is None
                              else self.session.execute_async(stmt, params, timeout=timeout))

        def on_page(page: list[Row] | None) -> None:
            try:
                if page:  # None for statements without rows (DDL, plain writes)
                    rows.extend(page)
                if rf.has_more_pages:
                    rf.start_fetching_next_page()
                    return
            except BaseException as e:  # never leave the awaiting caller hanging
                loop.call_soon_threadsafe(_resolve, fut, None, e)
                return
            loop.call_soon_threadsafe(_resolve, fut, rows, None)

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(_resolve, fut, None, exc)

        rf.add_callbacks(on_page, on_error)
        return await fut


def _resolve(fut: asyncio.Future[list[Row]], rows: list[Row] | None, exc: BaseException | None) -> None:
    if fut.done():
        return
    if exc is not None:
        fut.set_exception(exc)
    else:
        assert rows is not None
        fut.set_result(rows)
