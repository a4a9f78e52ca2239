"""history service: shards, mutable state, history events, execution stores, queue processors.

Public surface (what the one-process assembly wires up):

* ``history.store.sqlite.SqliteStore(path)`` - the SQLite execution store (``None``: in memory);
  ``await open()`` before use, ``await close()`` after.
* ``history.store.base.ExecutionStore`` - the store protocol (SQLite now, Cassandra later).
* ``history.visibility.SqliteVisibilityStore(store)`` - ``legato.api.VisibilityStore``.
* ``history.service.HistoryServiceImpl(store, visibility, config, *, matching=None, clock=None,
  identity="")`` - ``legato.api.HistoryService``; ``set_matching(m)``, ``await start()``,
  ``await stop()``.

Inside: ``engine`` (the protocol rules), ``state`` (mutable state and mutations), ``shard``
(ownership, fencing, group commit, caches), ``queues`` (transfer and timer processors).
"""
