"""The versioned Cassandra schema and `legato schema`, on the real node.

Most tests use the shared test keyspace; the version stories use one scratch keyspace (created
once for this module, dropped at the end) and the CLI's setup test another one, since creating a
keyspace costs about a second.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cassandra.query import SimpleStatement

from history.store import cassandra_schema as cs
from history.store.base import ShardWrite, TimerTaskRow, TransferTaskRow
from history.store.cassandra import CassandraStore
from history.store.cql import Cql
from legato.config import StoreConfig
from legato.errors import FailedPrecondition
from tests.conftest import TEST_KEYSPACE
from tests.integration.procs import legato

SCRATCH = "legato_schema_scratch"
CLI_SCRATCH = "legato_schema_cli"


async def _drop(cql: Cql, keyspace: str) -> None:
    await cql.execute(SimpleStatement(f"DROP KEYSPACE IF EXISTS {keyspace}"), timeout=cs.DDL_TIMEOUT_S)


async def _set_version(cql: Cql, keyspace: str, version: int) -> None:
    await cql.execute(SimpleStatement(f"INSERT INTO {keyspace}.cluster_metadata (key, value) "
                                      "VALUES ('schema_version', %s)"), [str(version)])


async def _tables(cql: Cql, keyspace: str) -> set[str]:
    rows = await cql.execute("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?", [keyspace])
    return {r.table_name for r in rows}


@pytest.fixture(scope="module")
async def scratch(cassandra_admin: Cql) -> AsyncIterator[str]:
    await _drop(cassandra_admin, SCRATCH)
    assert await cs.setup_schema(cassandra_admin, SCRATCH, replication_factor=1) == cs.SCHEMA_VERSION
    try:
        yield SCRATCH
    finally:
        await _drop(cassandra_admin, SCRATCH)


@pytest.fixture
async def at_current(scratch: str, cassandra_admin: Cql) -> str:
    """The scratch keyspace, its version row set back to this build's version."""
    await _set_version(cassandra_admin, scratch, cs.SCHEMA_VERSION)
    return scratch


def _cfg(node: StoreConfig, keyspace: str) -> StoreConfig:
    return node.model_copy(update={"cassandra_keyspace": keyspace})


async def _open_error(node: StoreConfig, keyspace: str) -> str:
    store = CassandraStore(_cfg(node, keyspace))
    with pytest.raises(FailedPrecondition) as e:
        await store.open()
    return e.value.message


# ---------------------------------------------------------------------- setup

async def test_setup_creates_every_table_and_records_the_version(at_current: str, cassandra_admin: Cql) -> None:
    assert set(cs.all_tables()) <= await _tables(cassandra_admin, at_current)
    assert {"executions", "history_events", "cluster_metadata"} <= set(cs.all_tables())
    assert await cs.read_schema_version(cassandra_admin, at_current) == cs.SCHEMA_VERSION


async def test_setup_again_is_a_no_op_that_repairs_a_dropped_table(at_current: str, cassandra_admin: Cql,
                                                                   cassandra_node: StoreConfig) -> None:
    store = CassandraStore(_cfg(cassandra_node, at_current))
    await store.open()
    try:
        assert await store.init_cluster(4) == 4
        await cassandra_admin.execute(SimpleStatement(f"DROP TABLE {at_current}.history_events"),
                                      timeout=cs.DDL_TIMEOUT_S)
        assert await cs.setup_schema(cassandra_admin, at_current, replication_factor=1) == cs.SCHEMA_VERSION
        assert "history_events" in await _tables(cassandra_admin, at_current)
        assert await store.init_cluster(8) == 4  # the data is still there
    finally:
        await store.close()


async def test_truncate_all_keeps_the_schema_version(cassandra: StoreConfig, cassandra_admin: Cql) -> None:
    store = CassandraStore(cassandra)
    await store.open()
    try:
        await store.init_cluster(4)
        await store.acquire_shard(0, "n")
        await cs.truncate_all(cassandra_admin, TEST_KEYSPACE)
        assert await store.init_cluster(8) == 8
        assert (await store.acquire_shard(0, "n")).range_id == 1
        assert await cs.read_schema_version(cassandra_admin, TEST_KEYSPACE) == cs.SCHEMA_VERSION
    finally:
        await store.close()


def test_keyspace_names_are_checked_before_they_reach_cql() -> None:
    for bad in ("1abc", "a-b", "a;DROP", "x" * 49):
        with pytest.raises(Exception, match="invalid Cassandra keyspace name"):
            cs.check_keyspace_name(bad)


# ---------------------------------------------------------------------- versions

async def test_the_store_refuses_a_missing_schema_and_says_what_to_run(cassandra_node: StoreConfig) -> None:
    message = await _open_error(cassandra_node, "legato_absent")
    assert "run: legato schema setup --store cassandra --hosts 127.0.0.1 --keyspace legato_absent" in message


async def test_the_store_refuses_a_newer_schema_naming_both_versions(at_current: str, cassandra_admin: Cql,
                                                                     cassandra_node: StoreConfig) -> None:
    newer = cs.SCHEMA_VERSION + 1
    await _set_version(cassandra_admin, at_current, newer)
    message = await _open_error(cassandra_node, at_current)
    assert f"version {newer}" in message and f"version {cs.SCHEMA_VERSION}" in message and "newer" in message
    with pytest.raises(FailedPrecondition, match="newer"):
        await cs.setup_schema(cassandra_admin, at_current, replication_factor=1)
    with pytest.raises(FailedPrecondition, match="newer"):
        await cs.upgrade_schema(cassandra_admin, at_current)


async def test_upgrade_applies_the_new_migrations_in_order_and_records_each(
        at_current: str, cassandra_admin: Cql, cassandra_node: StoreConfig, monkeypatch: pytest.MonkeyPatch) -> None:
    old = cs.SCHEMA_VERSION
    monkeypatch.setitem(cs.MIGRATIONS, old + 1, ["CREATE TABLE IF NOT EXISTS {keyspace}.extra_one (k int PRIMARY KEY)"])
    monkeypatch.setitem(cs.MIGRATIONS, old + 2, ["ALTER TABLE {keyspace}.extra_one ADD IF NOT EXISTS v text"])
    monkeypatch.setattr(cs, "SCHEMA_VERSION", old + 2)

    message = await _open_error(cassandra_node, at_current)
    assert f"at version {old}" in message and f"needs version {old + 2}" in message
    assert "run: legato schema upgrade --store cassandra" in message
    with pytest.raises(FailedPrecondition, match="legato schema upgrade"):
        await cs.setup_schema(cassandra_admin, at_current, replication_factor=1)

    assert await cs.upgrade_schema(cassandra_admin, at_current) == (old, old + 2)
    assert await cs.read_schema_version(cassandra_admin, at_current) == old + 2
    await cassandra_admin.execute(SimpleStatement(f"INSERT INTO {at_current}.extra_one (k, v) VALUES (1, 'x')"))
    store = CassandraStore(_cfg(cassandra_node, at_current))
    await store.open()  # this (patched) build accepts it now
    await store.close()
    assert await cs.upgrade_schema(cassandra_admin, at_current) == (old + 2, old + 2)


async def test_an_upgrade_cut_short_resumes_after_the_last_recorded_version(
        at_current: str, cassandra_admin: Cql, monkeypatch: pytest.MonkeyPatch) -> None:
    old = cs.SCHEMA_VERSION
    monkeypatch.setitem(cs.MIGRATIONS, old + 1, ["CREATE TABLE IF NOT EXISTS {keyspace}.extra_two (k int PRIMARY KEY)"])
    monkeypatch.setitem(cs.MIGRATIONS, old + 2, ["THIS IS NOT CQL"])
    monkeypatch.setattr(cs, "SCHEMA_VERSION", old + 2)
    with pytest.raises(Exception, match="Cassandra refused a schema statement"):
        await cs.upgrade_schema(cassandra_admin, at_current)
    assert await cs.read_schema_version(cassandra_admin, at_current) == old + 1
    monkeypatch.setitem(cs.MIGRATIONS, old + 2, ["ALTER TABLE {keyspace}.extra_two ADD IF NOT EXISTS v text"])
    assert await cs.upgrade_schema(cassandra_admin, at_current) == (old + 1, old + 2)


async def _keyspace_at(admin: Cql, ks: str, version: int) -> None:
    """A fresh keyspace `ks` as a build of schema `version` sets it up."""
    await _drop(admin, ks)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(cs, "SCHEMA_VERSION", version)
        assert await cs.setup_schema(admin, ks, replication_factor=1) == version


async def _upgrade(admin: Cql, node: StoreConfig, ks: str, found: int) -> None:
    """The store refuses the older keyspace, naming the version it needs; the upgrade moves it on."""
    assert f"needs version {cs.SCHEMA_VERSION}" in await _open_error(node, ks)
    assert await cs.upgrade_schema(admin, ks) == (found, cs.SCHEMA_VERSION)


async def test_upgrade_to_version_2_keeps_the_timers_of_a_version_1_keyspace(
        cassandra_admin: Cql, cassandra_node: StoreConfig) -> None:
    """Version 2 adds the timer ack level; the timer rows of version 1 are already clustered by
    (fire_time_ms, task_id), so the upgrade keeps them where they are and the store reads them,
    from level 0, then range-deletes what fired."""
    ks = "legato_schema_v1"
    await _keyspace_at(cassandra_admin, ks, 1)
    try:
        # A shard of version 1 with three timers, written as a version-1 build writes them.
        await cassandra_admin.execute(SimpleStatement(
            f"INSERT INTO {ks}.executions (shard_id, range_id, owner, transfer_ack_level, updated_ms) "
            "VALUES (0, 7, 'old', 0, 0)"))
        for fire, task in ((300, 11), (100, 12), (200, 10)):
            await cassandra_admin.execute(SimpleStatement(
                f"INSERT INTO {ks}.executions (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, "
                "task_id, data) VALUES (0, 4, '', '', '', %s, %s, 'x')"), [fire, task])
        await _upgrade(cassandra_admin, cassandra_node, ks, 1)
        store = CassandraStore(_cfg(cassandra_node, ks))
        await store.open()
        try:
            info = await store.acquire_shard(0, "new")
            assert (info.range_id, info.timer_ack_level) == (8, 0)
            rows = await store.read_timer_tasks(0, (-1, 0), 1000, 100)
            assert [(t.fire_time_ms, t.task_id) for t in rows] == [(100, 12), (200, 10), (300, 11)]
            await store.update_shard(0, info.range_id, 0, [], timer_ack_level=201)
            assert [t.task_id for t in await store.read_timer_tasks(0, (-1, 0), 1000, 100)] == [11]
            assert (await store.acquire_shard(0, "newer")).timer_ack_level == 201
        finally:
            await store.close()
    finally:
        await _drop(cassandra_admin, ks)


async def test_upgrade_to_version_3_adds_the_timer_outbox_and_keeps_the_timer_rows(
        cassandra_admin: Cql, cassandra_node: StoreConfig) -> None:
    """Version 3 adds the Kafka mode's timer outbox (kind 5, its level, the shard's timer queue);
    the timer rows a version-2 build wrote in Kafka mode stay where they are, for the next owner
    to publish, and the statements run again change nothing."""
    ks = "legato_schema_v2"
    await _keyspace_at(cassandra_admin, ks, 2)
    try:
        await cassandra_admin.execute(SimpleStatement(
            f"INSERT INTO {ks}.executions (shard_id, range_id, owner, transfer_ack_level, timer_ack_level, "
            "level_range, updated_ms) VALUES (0, 7, 'old', 0, 0, 7, 0)"))
        await cassandra_admin.execute(SimpleStatement(
            f"INSERT INTO {ks}.executions (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id, "
            "data) VALUES (0, 4, '', '', '', 300, 11, 'x')"))
        await _upgrade(cassandra_admin, cassandra_node, ks, 2)
        for text in cs.MIGRATIONS[3]:  # idempotent: an upgrade cut short runs them again
            await cassandra_admin.execute(SimpleStatement(text.format(keyspace=ks)))
        store = CassandraStore(_cfg(cassandra_node, ks))
        await store.open()
        try:
            info = await store.acquire_shard(0, "new", "kafka")
            assert (info.range_id, info.timer_outbox_ack_level, info.timer_queue) == (8, 0, "")
            assert [t.task_id for t in await store.read_timer_tasks(0, (-1, 0), 1 << 62, 100)] == [11]
            assert await store.read_timer_outbox(0, 0, 100) == []
            assert (await store.acquire_shard(0, "newer", "kafka")).timer_queue == "kafka"
        finally:
            await store.close()
    finally:
        await _drop(cassandra_admin, ks)


async def test_upgrade_to_version_4_reads_the_single_task_rows_beside_the_packed_ones(
        cassandra_admin: Cql, cassandra_node: StoreConfig) -> None:
    """Version 4 packs a write's transfer tasks (outbox rows) into one row; the one-task rows a
    version-3 build wrote stay, and are read in task-id order with the packed rows of the new
    build, the ack levels deleting both."""
    ks = "legato_schema_v3"
    await _keyspace_at(cassandra_admin, ks, 3)
    try:
        await cassandra_admin.execute(SimpleStatement(
            f"INSERT INTO {ks}.executions (shard_id, range_id, owner, transfer_ack_level, timer_ack_level, "
            "level_range, updated_ms, timer_outbox_ack_level, outbox_range) VALUES (0, 7, 'old', 0, 0, 7, 0, 0, 7)"))
        for kind, tid in ((3, 3), (3, 4), (5, 3), (5, 4)):  # a version-3 build's rows: one task each
            await cassandra_admin.execute(SimpleStatement(
                f"INSERT INTO {ks}.executions (shard_id, kind, namespace, workflow_id, run_id, fire_time_ms, task_id, "
                f"due_ms, data) VALUES (0, {kind}, '', '', '', 0, {tid}, 50, 'old{tid}')"))
        await _upgrade(cassandra_admin, cassandra_node, ks, 3)
        for text in cs.MIGRATIONS[4]:  # idempotent
            await cassandra_admin.execute(SimpleStatement(text.format(keyspace=ks)))
        store = CassandraStore(_cfg(cassandra_node, ks))
        await store.open()
        try:
            info = await store.acquire_shard(0, "new", "kafka")
            base = info.range_id << 20
            await store.write(ShardWrite(0, info.range_id,
                                         transfer_tasks=[TransferTaskRow(base + i, f"new{i}") for i in (1, 2, 3)],
                                         timer_outbox=[TimerTaskRow(60 + i, base + i, f"new{i}") for i in (4, 5)]))
            got = await store.read_transfer_tasks(0, 0, 100)
            assert [(t.task_id, t.data) for t in got] == [(3, "old3"), (4, "old4"), (base + 1, "new1"),
                                                         (base + 2, "new2"), (base + 3, "new3")]
            outbox = await store.read_timer_outbox(0, 3, 100)
            assert [(t.task_id, t.fire_time_ms, t.data) for t in outbox] == [(4, 50, "old4"), (base + 4, 64, "new4"),
                                                                             (base + 5, 65, "new5")]
            # a level inside the packed row: the row stays, the tasks at or below the level do not show
            await store.update_shard(0, info.range_id, base + 1, [], outbox_ack_level=base + 4)
            assert [t.task_id for t in await store.read_transfer_tasks(0, 0, 100)] == [base + 2, base + 3]
            assert [t.task_id for t in await store.read_timer_outbox(0, 0, 100)] == [base + 5]
            await store.update_shard(0, info.range_id, base + 3, [], outbox_ack_level=base + 5)
            assert await store.read_transfer_tasks(0, 0, 100) == []
            assert await store.read_timer_outbox(0, 0, 100) == []
            rows = await cassandra_admin.execute(SimpleStatement(
                f"SELECT task_id FROM {ks}.executions WHERE shard_id = 0 AND kind IN (3, 5)"))
            assert list(rows) == []  # the packed rows went with the levels
        finally:
            await store.close()
    finally:
        await _drop(cassandra_admin, ks)


async def test_upgrade_of_a_keyspace_without_schema_says_to_set_it_up(cassandra_admin: Cql) -> None:
    with pytest.raises(FailedPrecondition, match="legato schema setup"):
        await cs.upgrade_schema(cassandra_admin, "legato_absent")


# ---------------------------------------------------------------------- the command

def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    if env is None:
        r = legato("schema", *args, timeout=120)
    else:
        import subprocess

        from tests.integration.procs import LEGATO
        r = subprocess.run([LEGATO, "schema", *args], capture_output=True, text=True, timeout=120,
                           env={**os.environ, **env})
    return r.returncode, r.stdout.strip(), r.stderr.strip()


@pytest.fixture
async def cli_scratch(cassandra_admin: Cql) -> AsyncIterator[str]:
    await _drop(cassandra_admin, CLI_SCRATCH)
    try:
        yield CLI_SCRATCH
    finally:
        await _drop(cassandra_admin, CLI_SCRATCH)


def test_cli_setup_creates_then_reports_the_current_version(cli_scratch: str) -> None:
    flags = ["--store", "cassandra", "--hosts", "127.0.0.1", "--port", "9042", "--keyspace", cli_scratch]
    code, out, err = _run("setup", *flags, "--replication-factor", "1")
    assert code == 0, err
    assert out == f"created schema version {cs.SCHEMA_VERSION} in keyspace {cli_scratch} at 127.0.0.1 " \
                  "(replication factor 1)"
    code, out, _ = _run("setup", *flags, "--replication-factor", "1")
    assert code == 0 and out.endswith(f"is at version {cs.SCHEMA_VERSION} (current); nothing to do")
    code, out, _ = _run("version", *flags)
    assert (code, out) == (0, f"schema of keyspace {cli_scratch} at 127.0.0.1 is at version {cs.SCHEMA_VERSION} "
                              "(current)")
    code, out, _ = _run("upgrade", *flags)
    assert code == 0 and "nothing to do" in out


async def test_cli_version_reports_an_older_schema(at_current: str, cassandra_admin: Cql) -> None:
    await _set_version(cassandra_admin, at_current, 0)
    code, out, _ = _run("version", "--store", "cassandra", "--keyspace", at_current)
    assert code == 0
    assert out.endswith(f"is at version 0 (this build uses version {cs.SCHEMA_VERSION}: run legato schema upgrade)")


def test_cli_reads_the_store_from_the_environment(cassandra: StoreConfig) -> None:
    code, out, err = _run("version", env={"LEGATO_STORE__KIND": "cassandra",
                                          "LEGATO_STORE__CASSANDRA_KEYSPACE": TEST_KEYSPACE})
    assert code == 0, err
    assert f"keyspace {TEST_KEYSPACE}" in out and "(current)" in out


def test_cli_errors_are_one_line_with_exit_code_3(cassandra_node: StoreConfig) -> None:
    code, _, err = _run("version", "--store", "cassandra", "--keyspace", "legato_absent")
    assert code == 3 and "run: legato schema setup --store cassandra --hosts 127.0.0.1 --keyspace legato_absent" in err
    code, _, err = _run("version", "--store", "cassandra", "--hosts", "127.0.0.1:1", "--keyspace", "x")
    assert code == 3 and err.startswith("error: cannot connect to Cassandra at 127.0.0.1:1")
    assert "Traceback" not in err and len(err.splitlines()) == 1
    code, _, err = _run("setup", "--store", "cassandra", "--keyspace", "no-dashes")
    assert code == 3 and "cassandra_keyspace" in err


async def test_cli_refuses_a_replication_factor_the_cluster_cannot_hold(cassandra_admin: Cql) -> None:
    code, _, err = _run("setup", "--store", "cassandra", "--keyspace", "legato_rf3", "--replication-factor", "3")
    assert code == 3 and "replication factor 3 needs 3 nodes in every data centre" in err
    assert "choose --replication-factor 1 or fewer" in err
    assert not await cs.keyspace_exists(cassandra_admin, "legato_rf3")


def test_cli_on_sqlite(tmp_path: Path) -> None:
    db = str(tmp_path / "legato.db")
    code, out, err = _run("version", "--store", "sqlite", "--db", db)
    assert code == 3 and "does not exist" in err
    code, out, _ = _run("setup", "--store", "sqlite", "--db", db)
    assert (code, out) == (0, f"SQLite database {db} created with schema version 1 (current)")
    code, out, _ = _run("version", "--store", "sqlite", "--db", db)
    assert (code, out) == (0, f"schema of SQLite database {db} is at version 1 (current)")
    code, out, _ = _run("upgrade", "--store", "sqlite", "--db", db)
    assert (code, out) == (0, f"SQLite database {db} is at schema version 1 (current)")
    code, _, err = _run("setup", "--store", "sqlite")
    assert code == 3 and "--db" in err
