"""`legato schema setup|upgrade|version`: the store's schema, created and moved forward by a command.

Cassandra: the keyspace and its tables (history/store/cassandra_schema.py), versioned; the server
refuses a keyspace whose version is not its own. SQLite: the file's schema is created when it is
opened; `setup` creates the file, `version` reports what it holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from legato.cli.common import CliError, override_section, quiet_library_logs, run_async
from legato.cli.output import ExitCode
from legato.config import StoreConfig, load_config

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def store_options(fn: F) -> F:
    fn = click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
                      help="YAML config; its store section (and LEGATO_STORE__* variables) give the defaults.")(fn)
    fn = click.option("--db", "db_path", default=None, help="SQLite file (--store sqlite).")(fn)
    fn = click.option("--keyspace", default=None, help="Cassandra keyspace (default: store.cassandra_keyspace).")(fn)
    fn = click.option("--port", type=click.IntRange(1, 65535), default=None,
                      help="CQL port of hosts given without one (default: store.cassandra_port).")(fn)
    fn = click.option("--hosts", default=None, metavar="H[,H2]",
                      help="Cassandra contact points, host or host:port (default: store.cassandra_hosts).")(fn)
    fn = click.option("--store", "kind", type=click.Choice(["cassandra", "sqlite"]), default=None,
                      help="Which store (default: store.kind of the config).")(fn)
    return fn


def _store_config(kind: str | None, hosts: str | None, port: int | None, keyspace: str | None,
                  config_path: str | None) -> StoreConfig:
    """The config's store section with the flags given on top of it."""
    return override_section(load_config(config_path).store, StoreConfig,
                            (("kind", kind), ("cassandra_hosts", hosts), ("cassandra_port", port),
                             ("cassandra_keyspace", keyspace)), what="invalid store options: ")


async def _with_cassandra(cfg: StoreConfig, fn: Callable[[Any], Awaitable[T]]) -> T:
    """Run fn(cql) on a connection to the cluster (no keyspace: it may not exist yet)."""
    from history.store.cql import Cql, connect

    quiet_library_logs("cassandra")  # a traceback for each host it cannot reach
    cluster, session = await asyncio.to_thread(connect, cfg, None)
    try:
        return await fn(Cql(session))
    finally:
        await asyncio.to_thread(cluster.shutdown)


def _where(cfg: StoreConfig) -> str:
    return f"keyspace {cfg.cassandra_keyspace} at {','.join(cfg.cassandra_hosts)}"


def _require_db(db_path: str | None) -> str:
    if not db_path:
        raise CliError("--store sqlite needs --db FILE")
    return db_path


@click.group()
def schema() -> None:
    """Create, upgrade and inspect the store's schema."""


@schema.command()
@store_options
@click.option("--replication-factor", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Replicas of each row in every data centre (Cassandra; 3 for production).")
@run_async
async def setup(kind: str | None, hosts: str | None, port: int | None, keyspace: str | None, db_path: str | None,
                config_path: str | None, replication_factor: int) -> int:
    """Create the schema (idempotent: a schema at the current version is left as it is)."""
    cfg = _store_config(kind, hosts, port, keyspace, config_path)
    if cfg.kind == "sqlite":
        return await _sqlite_setup(_require_db(db_path))
    from history.store import cassandra_schema as cs

    async def go(cql: Any) -> tuple[int | None, int]:
        before = await cs.read_schema_version(cql, cfg.cassandra_keyspace)
        if not await cs.keyspace_exists(cql, cfg.cassandra_keyspace):
            _check_replication(cql, replication_factor)
        return before, await cs.setup_schema(cql, cfg.cassandra_keyspace, replication_factor)

    before, version = await _with_cassandra(cfg, go)
    if before == version:
        click.echo(f"schema of {_where(cfg)} is at version {version} (current); nothing to do")
    else:
        click.echo(f"created schema version {version} in {_where(cfg)} (replication factor {replication_factor})")
    return ExitCode.OK


@schema.command()
@store_options
@run_async
async def upgrade(kind: str | None, hosts: str | None, port: int | None, keyspace: str | None, db_path: str | None,
                  config_path: str | None) -> int:
    """Move the schema forward to this build's version."""
    cfg = _store_config(kind, hosts, port, keyspace, config_path)
    if cfg.kind == "sqlite":
        return await _sqlite_setup(_require_db(db_path), must_exist=True)
    from history.store import cassandra_schema as cs

    old, new = await _with_cassandra(cfg, lambda cql: cs.upgrade_schema(cql, cfg.cassandra_keyspace))
    if old == new:
        click.echo(f"schema of {_where(cfg)} is at version {new} (current); nothing to do")
    else:
        click.echo(f"upgraded the schema of {_where(cfg)} from version {old} to {new}")
    return ExitCode.OK


@schema.command()
@store_options
@run_async
async def version(kind: str | None, hosts: str | None, port: int | None, keyspace: str | None, db_path: str | None,
                  config_path: str | None) -> int:
    """Print the schema version the store is at."""
    cfg = _store_config(kind, hosts, port, keyspace, config_path)
    if cfg.kind == "sqlite":
        path = _require_db(db_path)
        found = _sqlite_version(path)
        from history.store.sqlite import SCHEMA_VERSION as current

        click.echo(f"schema of SQLite database {path} is at version {found} {_compare(found, current)}")
        return ExitCode.OK
    from history.store import cassandra_schema as cs

    found_cs = await _with_cassandra(cfg, lambda cql: cs.read_schema_version(cql, cfg.cassandra_keyspace))
    if found_cs is None:
        raise CliError(f"{_where(cfg)} has no Legato schema; "
                       f"{cs.setup_hint(cfg.cassandra_keyspace, ','.join(cfg.cassandra_hosts))}")
    click.echo(f"schema of {_where(cfg)} is at version {found_cs} {_compare(found_cs, cs.SCHEMA_VERSION)}")
    return ExitCode.OK


def _check_replication(cql: Any, replication_factor: int) -> None:
    """A new keyspace gets replication_factor replicas in every data centre: refuse a factor no
    data centre of the cluster can hold (every write at a QUORUM level would fail)."""
    per_dc = Counter(h.datacenter for h in cql.session.cluster.metadata.all_hosts())
    if per_dc and min(per_dc.values()) < replication_factor:
        dc, nodes = min(per_dc.items(), key=lambda kv: kv[1])
        raise CliError(f"replication factor {replication_factor} needs {replication_factor} nodes in every data "
                       f"centre, but {dc} has {nodes}; choose --replication-factor {nodes} or fewer")


def _compare(found: int, current: int) -> str:
    if found == current:
        return "(current)"
    if found < current:
        return f"(this build uses version {current}: run legato schema upgrade)"
    return f"(newer than version {current} of this build)"


async def _sqlite_setup(path: str, must_exist: bool = False) -> int:
    """SQLite makes (or checks) its schema when the file is opened."""
    from history.store.sqlite import SCHEMA_VERSION, SqliteStore

    existed = _exists(path)
    if must_exist and not existed:
        raise CliError(f"SQLite database {path} does not exist (create it with legato schema setup --store sqlite "
                       f"--db {path})")
    store = SqliteStore(path)
    await store.open()  # refuses another schema version (FailedPrecondition: exit 3)
    await store.close()
    what = "is at" if existed else "created with"
    click.echo(f"SQLite database {path} {what} schema version {SCHEMA_VERSION} (current)")
    return ExitCode.OK


def _exists(path: str) -> bool:
    return Path(path).exists()


def _sqlite_version(path: str) -> int:
    if not Path(path).is_file():
        raise CliError(f"SQLite database {path} does not exist")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            row = conn.execute("SELECT value FROM cluster_metadata WHERE key = 'schema_version'").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as e:
        raise CliError(f"{path} is not a Legato SQLite database: {e}") from e
    if row is None:
        raise CliError(f"{path} has no Legato schema version")
    return int(row[0])
