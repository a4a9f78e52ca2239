"""The Cassandra schema of Legato: versioned, created and moved forward by `legato schema`.

`MIGRATIONS[v]` is the list of CQL statements that take a keyspace from version v - 1 to v
(`{keyspace}` is formatted in). Every statement must be idempotent (`IF NOT EXISTS`,
`ADD IF NOT EXISTS`, ...): a setup or upgrade cut short is simply run again. The version a
keyspace is at lives in its `cluster_metadata` table (key `schema_version`) and is written after
each version's statements have all been applied and the cluster agrees on the schema.

Layout (see history/store/cassandra.py for why):

* ``executions``: partition = shard. The shard row (range_id, owner, transfer_ack_level,
  timer_ack_level) is static; clustering rows are current-run pointers (kind 1), runs' mutable
  state (kind 2), transfer tasks (kind 3, keyed by task_id), timer tasks (kind 4, keyed by
  (fire_time_ms, task_id)) and the Kafka mode's timer outbox (kind 5, keyed by task_id, the due
  time in due_ms); since version 4 the transfer tasks (and the outbox rows) of one write are one
  row keyed by their greatest task_id, the tasks in `tasks`. Unused key columns hold '' / 0, so
  each queue is one clustering slice in the order it is read.
* ``history_events``: partition = run; one row per (event_id, txn_id), greatest txn_id first.
* ``cluster_metadata``: num_shards, schema_version.
* the visibility tables of history/visibility_cassandra.py (part of version 1).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from cassandra.query import SimpleStatement

from history.store.cql import Cql
from legato.errors import FailedPrecondition, InvalidArgument, Unavailable

SCHEMA_VERSION = 4
DDL_TIMEOUT_S = 60.0  # creating a table waits for the whole cluster to agree on the schema
KEYSPACE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")

# The kinds of clustering rows of `executions`.
KIND_CURRENT = 1
KIND_RUN = 2
KIND_TRANSFER = 3
KIND_TIMER = 4
KIND_TIMER_OUTBOX = 5

_V1 = [
    """CREATE TABLE IF NOT EXISTS {keyspace}.cluster_metadata (
        key text PRIMARY KEY,
        value text)""",
    """CREATE TABLE IF NOT EXISTS {keyspace}.executions (
        shard_id int,
        kind tinyint,
        namespace text,
        workflow_id text,
        run_id text,
        fire_time_ms bigint,
        task_id bigint,
        range_id bigint STATIC,
        owner text STATIC,
        transfer_ack_level bigint STATIC,
        updated_ms bigint STATIC,
        next_event_id bigint,
        state text,
        current_run_id text,
        status text,
        start_request_id text,
        start_time_ms bigint,
        data text,
        PRIMARY KEY (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id))""",
    """CREATE TABLE IF NOT EXISTS {keyspace}.history_events (
        namespace text,
        workflow_id text,
        run_id text,
        event_id bigint,
        txn_id bigint,
        data text,
        PRIMARY KEY ((namespace, workflow_id, run_id), event_id, txn_id))
        WITH CLUSTERING ORDER BY (event_id ASC, txn_id DESC)""",
]

# Version 2: the timer ack level in the shard's static row. Timer rows keep the layout of version
# 1, which already clusters them by (fire_time_ms, task_id) under kind 4 (the run's identity is in
# their data, the key's namespace/workflow_id/run_id are ''), so no row moves: a version-1 shard
# has no level yet (null: 0), its first owner under version 2 reads its timers from the start once
# and the first ack flush range-deletes everything that fired below the level.
# level_range: the range_id with which a build that keeps the level last took the shard; while it
# equals range_id, no older build (during a rolling upgrade) has owned the shard since, so no timer
# was written below the level (see cassandra.py, _shard_info).
_V2 = [
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS timer_ack_level bigint STATIC",
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS level_range bigint STATIC",
]

# Version 3: the Kafka mode's timer outbox. Its rows are kind 5, keyed by task_id alone (the due
# time in the new regular column due_ms), read above the new static timer_outbox_ack_level and
# range-deleted at or below it, as the transfer outbox is; timer_queue records whether the shard's
# owner keeps its timers in the store or on Kafka (history/store/base.py, check_timer_queue). No
# row moves: the kind-4 rows an older build wrote in Kafka mode are published by the next owner
# (history/kafka_timer_publisher.py) and then range-deleted; timer_rows_dropped_before records
# that, so later scans of kind 4 start past those rows' tombstones. It counts only while
# outbox_range equals range_id (the range with which a build of version 3 last took the shard; an
# older build in between may have written kind-4 rows anywhere: cassandra.py, _shard_info).
_V3 = [
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS timer_rows_dropped_before bigint STATIC",
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS outbox_range bigint STATIC",
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS timer_outbox_ack_level bigint STATIC",
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS timer_queue text STATIC",
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS due_ms bigint",
]

# Version 4: packed task rows. A shard write's transfer tasks (and its timer-outbox rows) go into
# ONE row of their kind, keyed by the greatest task id among them, the tasks in the new column
# `tasks` ("TASK_ID DATA", outbox "TASK_ID DUE_MS DATA"); a write with one task still writes the
# row of versions 1-3 (data, due_ms), so both forms are read. Why: every row of the conditional
# batch goes through Paxos (proposed, committed, applied) and is range-deleted later; a write
# carried about two task rows per transition (measured: `bench hello` with Kafka queues, 53 to 35
# statements per shard write, the node's CPU per workflow -11%; on the cluster's children
# scenario no change beyond the spread between runs). Keyed by its greatest id, a packed row is
# deleted by the ack flush only when every task in it is at or below the level. No row moves; an
# older build reading a packed row would find no data, so this version makes older builds refuse
# the keyspace (check_schema) instead.
_V4 = [
    "ALTER TABLE {keyspace}.executions ADD IF NOT EXISTS tasks frozen<list<text>>",
]

# version -> the statements that move a keyspace from version - 1 to it (version 1 also applies
# the visibility store's VISIBILITY_SCHEMA, read when it runs). Tests add versions.
MIGRATIONS: dict[int, list[str]] = {1: _V1, 2: _V2, 3: _V3, 4: _V4}

TABLES = ["cluster_metadata", "executions", "history_events"]

_CREATE_TABLE = re.compile(r"CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:\{keyspace\}\.)?\"?(\w+)", re.IGNORECASE)


def check_keyspace_name(keyspace: str) -> str:
    """Keyspace names are formatted into CQL: only Cassandra's own name characters pass."""
    if not KEYSPACE_RE.match(keyspace):
        raise InvalidArgument(f"invalid Cassandra keyspace name {keyspace!r}: letters, digits and _ "
                              "(48 at most, starting with a letter)")
    return keyspace


def visibility_tables() -> list[str]:
    """The visibility store's tables: its own list if it exports one, else those its schema creates."""
    from history import visibility_cassandra

    named = getattr(visibility_cassandra, "VISIBILITY_TABLES", None)
    if named:
        return list(named)
    return [m.group(1) for s in visibility_cassandra.VISIBILITY_SCHEMA if (m := _CREATE_TABLE.search(s))]


def all_tables() -> list[str]:
    return TABLES + [t for t in visibility_tables() if t not in TABLES]


def setup_hint(keyspace: str, hosts: str = "127.0.0.1") -> str:
    return f"run: legato schema setup --store cassandra --hosts {hosts} --keyspace {keyspace}"


def upgrade_hint(keyspace: str, hosts: str = "127.0.0.1") -> str:
    return f"run: legato schema upgrade --store cassandra --hosts {hosts} --keyspace {keyspace}"


# ---------------------------------------------------------------------- reading the version

async def keyspace_exists(cql: Cql, keyspace: str) -> bool:
    rows = await cql.execute("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                             [keyspace])
    return bool(rows)


async def read_schema_version(cql: Cql, keyspace: str) -> int | None:
    """The recorded version, or None when the keyspace, its metadata table or the row is missing."""
    check_keyspace_name(keyspace)
    tables = await cql.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? "
                               "AND table_name = 'cluster_metadata'", [keyspace])
    if not tables:
        return None
    rows = await cql.execute(SimpleStatement(
        f"SELECT value FROM {keyspace}.cluster_metadata WHERE key = 'schema_version'"))
    return int(rows[0].value) if rows else None


async def check_schema(cql: Cql, keyspace: str, hosts: str = "127.0.0.1") -> int:
    """The keyspace's version if it is the one this build uses; else FailedPrecondition saying
    what to run."""
    found = await read_schema_version(cql, keyspace)
    if found is None:
        raise FailedPrecondition(f"Cassandra keyspace {keyspace} has no Legato schema; {setup_hint(keyspace, hosts)}",
                                 reason="SchemaMissing")
    if found < SCHEMA_VERSION:
        raise FailedPrecondition(
            f"the schema of Cassandra keyspace {keyspace} is at version {found}, this build of Legato needs "
            f"version {SCHEMA_VERSION}; {upgrade_hint(keyspace, hosts)}", reason="SchemaVersionMismatch")
    if found > SCHEMA_VERSION:
        raise FailedPrecondition(
            f"the schema of Cassandra keyspace {keyspace} is at version {found}, newer than version "
            f"{SCHEMA_VERSION} of this build of Legato; run a newer Legato", reason="SchemaVersionMismatch")
    return found


# ---------------------------------------------------------------------- changing the schema

async def setup_schema(cql: Cql, keyspace: str, replication_factor: int = 3) -> int:
    """Create the keyspace (if absent) and every table; return the version it is at.

    On a keyspace already at this build's version the statements run again, which changes nothing
    (they are idempotent) but repairs a table someone dropped. A keyspace at an older version is
    refused: its data must be moved forward by `upgrade_schema`, not set up anew."""
    check_keyspace_name(keyspace)
    if replication_factor < 1:
        raise InvalidArgument(f"replication factor must be at least 1, not {replication_factor}")
    found = await read_schema_version(cql, keyspace)
    if found is not None and found != SCHEMA_VERSION:
        await check_schema(cql, keyspace)  # raises, naming both versions and what to run
    # NetworkTopologyStrategy with a bare replication_factor puts that many replicas in every
    # data centre (Cassandra 4+), so one statement suits one node and many data centres alike.
    await _ddl(cql, f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = "
                    f"{{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}")
    for version in range(1, SCHEMA_VERSION + 1):
        await _apply(cql, keyspace, version)
    return SCHEMA_VERSION


async def upgrade_schema(cql: Cql, keyspace: str) -> tuple[int, int]:
    """Apply the migrations after the keyspace's version, in order; return (from, to)."""
    found = await read_schema_version(cql, keyspace)
    if found is None:
        raise FailedPrecondition(f"Cassandra keyspace {keyspace} has no Legato schema to upgrade; "
                                 f"{setup_hint(keyspace)}", reason="SchemaMissing")
    if found > SCHEMA_VERSION:
        await check_schema(cql, keyspace)  # raises: newer than this build
    for version in range(found + 1, SCHEMA_VERSION + 1):
        await _apply(cql, keyspace, version)
    return found, SCHEMA_VERSION


async def _apply(cql: Cql, keyspace: str, version: int) -> None:
    statements = MIGRATIONS.get(version)
    if statements is None:
        raise FailedPrecondition(f"this build of Legato has no migration to schema version {version}")
    if version == 1:
        from history import visibility_cassandra  # imported here: the execution store does not need it

        statements = statements + list(visibility_cassandra.VISIBILITY_SCHEMA)
    for text in statements:
        await _ddl(cql, text.format(keyspace=keyspace))
    await _agree(cql)
    await cql.execute(SimpleStatement(f"INSERT INTO {keyspace}.cluster_metadata (key, value) "
                                      "VALUES ('schema_version', %s)"), [str(version)])


async def _ddl(cql: Cql, text: str) -> None:
    """A schema statement, unprepared (it runs once) and with a longer timeout than data requests;
    the driver waits for schema agreement after each change it reports."""
    try:
        await cql.execute(SimpleStatement(text), timeout=DDL_TIMEOUT_S)
    except Exception as e:
        if isinstance(e, Unavailable | FailedPrecondition):
            raise
        raise Unavailable(f"Cassandra refused a schema statement: {e}\n  statement: {' '.join(text.split())}",
                          reason="SchemaError") from e


async def _agree(cql: Cql) -> None:
    cluster: Any = cql.session.cluster
    agreed = await asyncio.to_thread(cluster.control_connection.wait_for_schema_agreement)
    if not agreed:
        raise Unavailable("the Cassandra nodes did not agree on the schema in time; run the command again",
                          reason="SchemaDisagreement")


async def truncate_all(cql: Cql, keyspace: str) -> None:
    """Empty every table of the keyspace (tests). Tables that are already empty are skipped: a
    TRUNCATE costs a flush on every node, a one-row read does not."""
    check_keyspace_name(keyspace)
    tables = [t for t in all_tables() if t != "cluster_metadata"]
    probes = await asyncio.gather(*(cql.execute(SimpleStatement(f"SELECT * FROM {keyspace}.{t} LIMIT 1"))
                                    for t in tables))
    await asyncio.gather(*(cql.execute(SimpleStatement(f"TRUNCATE {keyspace}.{t}"), timeout=DDL_TIMEOUT_S)
                           for t, rows in zip(tables, probes, strict=True) if rows))
    # cluster_metadata keeps the schema version: only the other keys go.
    keys = await cql.execute(SimpleStatement(f"SELECT key FROM {keyspace}.cluster_metadata"))
    for row in keys:
        if row.key != "schema_version":
            await cql.execute(SimpleStatement(f"DELETE FROM {keyspace}.cluster_metadata WHERE key = %s"), [row.key])
