"""Opening the stores a history node writes to, by `config.store.kind`.

SQLite: one file holds executions and visibility. Cassandra: one driver session shared by the
execution store and the visibility store, in the keyspace `legato schema setup` made.
"""

from __future__ import annotations

from dataclasses import dataclass

from history.store.base import ExecutionStore
from legato.api import VisibilityStore
from legato.config import Config


@dataclass
class Stores:
    execution: ExecutionStore
    visibility: VisibilityStore
    description: str  # where the data lives, for the server's startup line

    async def close(self) -> None:
        await self.execution.close()


async def open_stores(config: Config, db_path: str | None) -> Stores:
    if config.store.kind == "cassandra":
        return await _open_cassandra(config)
    return await _open_sqlite(config, db_path)


async def _open_sqlite(config: Config, db_path: str | None) -> Stores:
    from history.store.sqlite import SqliteStore
    from history.visibility import SqliteVisibilityStore

    store = SqliteStore(db_path, commit_window_ms=config.history.store_commit_window_ms)
    await store.open()
    return Stores(store, SqliteVisibilityStore(store), f"SQLite {db_path or 'in memory'}")


async def _open_cassandra(config: Config) -> Stores:
    from history.store.cassandra import CassandraStore
    from history.visibility_cassandra import CassandraVisibilityStore

    cfg = config.store
    store = CassandraStore(cfg)
    await store.open()
    where = f"Cassandra {','.join(cfg.cassandra_hosts)} keyspace {cfg.cassandra_keyspace}"
    return Stores(store, CassandraVisibilityStore(store.cql, store.keyspace), where)
