"""The Cassandra driver, seen from asyncio: connecting, and awaiting requests.

The DataStax driver does its I/O on its own reactor thread (libev) and reports results through
callbacks; `Cql` turns each request into an asyncio future resolved on the caller's loop, so the
event loop never blocks on Cassandra. Statements are prepared once and cached by their text.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, ResponseFuture, Session
from cassandra.policies import DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy, TokenAwarePolicy
from cassandra.query import PreparedStatement, Statement

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


def connect(cfg: StoreConfig, keyspace: str | None = None) -> tuple[Cluster, Session]:
    """A blocking connect (call it in a thread). Raises Unavailable naming the hosts."""
    profile = ExecutionProfile(
        load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=cfg.cassandra_local_dc or None)),
        consistency_level=ConsistencyLevel.name_to_value[cfg.cassandra_consistency],
        serial_consistency_level=ConsistencyLevel.name_to_value[cfg.cassandra_serial_consistency],
        request_timeout=cfg.cassandra_request_timeout_ms / 1000.0,
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


class Cql:
    """Awaitable requests on one driver session."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self._prepared: dict[str, PreparedStatement] = {}

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
                      params: Sequence[Any] | None = None, timeout: float | None = None) -> list[Row]:
        """All rows of the result (every page). `timeout` (seconds) replaces the configured
        request timeout for this request (schema changes take longer than data requests)."""
        if isinstance(stmt, str):
            stmt = await self.prepare_async(stmt)
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
